"""Incident benchmark: from a bad release serving to the gate's decision, the rollback and healthy again.

    .venv/bin/python benchmarks/incident.py [--trials N] [--for 15s|30s] [--keep-logs]

Starts its own sandbox (a temporary HOTELBOT_SANDBOX_DIR, chmod 0755; `down` at the end,
always), waits until Prometheus has a full gate window of history, and then, N times:
`ansible-playbook hotpatch.yml -e hotpatch_image=<repo>:1.2.1-flaky` (a release that is
healthy by /api/health and by the English smoke test, but whose German FAQ answers 500:
about a third of the guests' requests fail). The playbook ships it to staging and
production, watches the error ratio with hotelbot.ops.prometheus_gate (sandbox inventory:
ratio > 5% for 15s, step 1s, rate window 5s; --for overrides the `for`), rolls back on
"unhealthy" and verifies the rolled-back production.

Per trial, all in seconds from t0 = the moment the flaky image starts serving on production
(a thread polls the ECS double's /sandbox/ecs/serving every 50 ms) and as multiples of the
rule's `for` window and `step`:
  - the error ratio first above 5% (Prometheus, same query, 0.25 s resolution): the rate window's lag;
  - rule met, three readings: the gate's own judge() (module_utils/prometheus) replayed (to 2 ms, T on
    whole milliseconds) on the grid the gate queries at T (the first moment an evaluation could say unhealthy);
    the gate's breached_since + for (its final evaluation's grid); the 0.25 s ratio's first crossing + for;
  - (a) decision = the gate's decided_at; decision lag = decision - rule met (target: <= 1 step);
  - (b) rollback started = start of the "Roll production back to ..." task and the rollback's
    UpdateService as the poller saw it (new deployment IN_PROGRESS) (target: <= 2 s after the decision);
  - (c) verified healthy = end of "Verify the rolled-back production"; and when the flaky image
    stopped serving (poller).
Once per trial, while the flaky release serves, the runbook's automated-rollback check
(`curl -s -f /api/health` -> "healthy, no rollback needed") is run for real, and the runbook's
Scenario 1 comparison (`[ "$RATIO" -gt 0.05 ]`) with the ratio Prometheus reports then.

Results: a table on stdout and benchmarks/results/incident-<timestamp>.json.
See benchmarks/README.md ("incident.py").
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox import control  # noqa: E402
from sandbox import state as sandbox_state  # noqa: E402

VENV_BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = str(VENV_BIN / "ansible-playbook")
RESULTS_DIR = REPO / "benchmarks" / "results"
CALLBACK_DIR = REPO / "benchmarks" / "lib" / "callback_plugins"
COLLECTIONS = REPO / ".collections"

POLL_INTERVAL = 0.05
REPLAY_DT = 0.05  # how finely the gate's judge() is replayed to find when the rule was first met
REPLAY_RESOLUTION = 0.002  # then narrowed down by bisection to this (on whole milliseconds)
CURVE_STEP = 0.25  # resolution of the error-ratio curve read back from Prometheus afterwards
FLAKY_TAG = "1.2.1-flaky"
RUNBOOK_CHECK_AFTER_S = 3.0  # run the runbook's health check this long after the flaky release starts serving
TARGET_DECISION_STEPS = 1.0
TARGET_ROLLBACK_S = 2.0
SANDBOX_FOR = "15s"  # inventory/sandbox: hotelbot_gate_for
SANDBOX_WATCH_FOR = "45s"  # inventory/sandbox: hotelbot_gate_watch_for


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {msg}", flush=True)


def parse_seconds(text: str) -> float:
    text = text.strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def iso_ts(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------------ sandbox


class Sandbox:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "sandbox"
        self.log = workdir / "sandbox-up.log"
        self.st: dict[str, Any] = {}

    def _sandbox(self, command: str) -> subprocess.CompletedProcess:
        with open(self.log, "a") as out:
            return subprocess.run([sys.executable, "-m", "sandbox", command, "--dir", str(self.dir)],
                                  cwd=REPO, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=180)

    def up(self) -> float:
        started = time.perf_counter()
        if self._sandbox("up").returncode != 0:
            raise BenchError(f"sandbox up failed; see {self.log}:\n{self.log.read_text()[-3000:]}")
        self.st = sandbox_state.load(self.dir)
        return time.perf_counter() - started

    def down(self) -> None:
        if self._sandbox("down").returncode != 0:
            log(f"WARNING: sandbox down reported a problem; see {self.log}")

    @property
    def prometheus_url(self) -> str:
        return self.st["prometheus"]["url"]

    @property
    def stable_image(self) -> str:
        return self.st["ecs"]["images"]["3"]

    @property
    def flaky_image(self) -> str:
        return self.stable_image.rsplit(":", 1)[0] + ":" + FLAKY_TAG

    def prom(self, path: str, params: dict[str, Any]) -> Any:
        body = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(self.prometheus_url + path, data=body, timeout=10) as resp:
            answer = json.loads(resp.read())
        if answer.get("status") != "success":
            raise BenchError(f"Prometheus {path}: {answer}")
        return answer["data"]

    def ratio_now(self, query: str) -> float | None:
        result = self.prom("/api/v1/query", {"query": query})["result"]
        values = [float(r["value"][1]) for r in result]
        return max(values) if values else None

    def ratio_curve(self, query: str, start: float, end: float, step: float = CURVE_STEP) -> list[list[float]]:
        result = self.prom("/api/v1/query_range", {"query": query, "start": repr(start), "end": repr(end),
                                                   "step": repr(step)})["result"]
        if not result:
            return []
        return [[float(ts), float(v)] for ts, v in result[0]["values"]]


def error_ratio_query(job: str, rate_window: str) -> str:
    """The gate's query (module_utils/prometheus.build_queries) for the job, as a fallback before the first run."""
    return (f'(sum(rate(http_requests_total{{job="{job}",status=~"5.."}}[{rate_window}])) or vector(0)) / '
            f'sum(rate(http_requests_total{{job="{job}"}}[{rate_window}]))')


# ------------------------------------------------------------------------ the poller


RUNBOOK_HEALTH_CHECK = r'''
# The runbook's automated rollback script, its decision part: roll back only when /api/health fails.
if curl -s -f "$BOT_URL/api/health" > /dev/null; then
  echo "healthy, no rollback needed"
  exit 0
fi
echo "unhealthy, rolling back"
exit 1
'''

RUNBOOK_SCENARIO1 = r'''
# The runbook's Scenario 1 comparison, with the ratio a human would have pasted from the curl.
if [ "$RATIO" -gt 0.05 ]; then echo "error ratio above 5%: roll back"; else echo "error ratio fine"; fi
'''


def runbook_checks(sb: Sandbox, query: str) -> dict[str, Any]:
    env = dict(os.environ, BOT_URL=sb.st["bot"]["url"])
    at = time.time()
    health = subprocess.run(["bash", "-c", RUNBOOK_HEALTH_CHECK], env=env, capture_output=True, text=True,
                            timeout=30, check=False)
    out: dict[str, Any] = {"at": at, "health_check": {"script": RUNBOOK_HEALTH_CHECK.strip(), "rc": health.returncode,
                                                      "stdout": health.stdout.strip()}}
    try:
        ratio = sb.ratio_now(query)
    except Exception as err:  # noqa: BLE001 - informative only
        ratio = None
        out["ratio_error"] = str(err)
    env["RATIO"] = "%.4f" % ratio if ratio is not None else ""
    scen = subprocess.run(["bash", "-c", RUNBOOK_SCENARIO1], env=env, capture_output=True, text=True,
                          timeout=30, check=False)
    out["scenario1"] = {"script": RUNBOOK_SCENARIO1.strip(), "ratio": env["RATIO"], "rc": scen.returncode,
                        "stdout": scen.stdout.strip(), "stderr": scen.stderr.strip()}
    return out


class ServingPoller(threading.Thread):
    """control.serving() for production every 50 ms; keeps (t, image, taskDefinition, runningCount, rolloutState),
    t = wall clock at the middle of the request. Runs the runbook's checks once, RUNBOOK_CHECK_AFTER_S after the
    flaky image first serves."""

    def __init__(self, sb: Sandbox, query: str) -> None:
        super().__init__(daemon=True)
        self.sb = sb
        self.query = query
        self.samples: list[dict[str, Any]] = []
        self.errors = 0
        self.runbook: dict[str, Any] | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        flaky_since = None
        tick = time.monotonic()
        while not self._halt.is_set():
            before = time.time()
            try:
                s = control.serving(dir=self.sb.dir)
            except Exception:  # noqa: BLE001 - counted, the poll goes on
                self.errors += 1
                s = None
            after = time.time()
            if s is not None:
                self.samples.append({"t": (before + after) / 2, "rtt": after - before, "image": s.get("image"),
                                     "td": s.get("taskDefinition"), "running": s.get("runningCount"),
                                     "rollout": s.get("rolloutState")})
                if FLAKY_TAG in (s.get("image") or ""):
                    flaky_since = flaky_since or after
                    if self.runbook is None and after - flaky_since >= RUNBOOK_CHECK_AFTER_S:
                        self.runbook = runbook_checks(self.sb, self.query)
            tick += POLL_INTERVAL
            now = time.monotonic()
            if tick < now:
                tick = now
            self._halt.wait(tick - now)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


# ------------------------------------------------------------------------ the playbook


def run_hotpatch(sb: Sandbox, workdir: Path, label: str, extra_vars: list[str], keep_logs: bool) -> dict[str, Any]:
    log_path, record_path = workdir / f"{label}.log", workdir / f"{label}.tasks.json"
    env = dict(os.environ)
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), HOTELBOT_SANDBOX_DIR=str(sb.dir),
               ANSIBLE_CALLBACK_PLUGINS=str(CALLBACK_DIR), ANSIBLE_CALLBACKS_ENABLED="bench_incident",
               HOTELBOT_BENCH_INCIDENT_FILE=str(record_path), ANSIBLE_NOCOLOR="1",
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [ANSIBLE_PLAYBOOK, "hotpatch.yml"]
    for extra in extra_vars:
        cmd += ["-e", extra]
    launched = time.time()
    with open(log_path, "w") as out:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=900)
    exited = time.time()
    run: dict[str, Any] = {"cmd": "ansible-playbook " + " ".join(cmd[1:]), "rc": proc.returncode,
                           "launched": launched, "exited": exited, "log": str(log_path)}
    try:
        run["record"] = json.loads(record_path.read_text())
    except (OSError, ValueError):
        run["record"] = {"tasks": []}
    run["output_tail"] = log_path.read_text()[-3000:]
    if not keep_logs:
        log_path.unlink(missing_ok=True)
        record_path.unlink(missing_ok=True)
    return run


def find_task(tasks: list[dict[str, Any]], prefix: str) -> dict[str, Any] | None:
    return next((t for t in tasks if t["name"].startswith(prefix)), None)


def role_end(tasks: list[dict[str, Any]], include_prefix: str) -> float | None:
    """End of the last task a role include (by name) ran."""
    include = find_task(tasks, include_prefix)
    if include is None:
        return None
    inner = [t for t in tasks if t.get("included_by", "").startswith(include_prefix) and t.get("end")]
    ends = [t["end"] for t in inner] or ([include["end"]] if include.get("end") else [])
    return max(ends) if ends else None


# ------------------------------------------------------------------------ one trial


def replay_rule_met(sb: Sandbox, query: str, threshold: float, for_s: float, step_s: float, t_from: float,
                    t_to: float) -> dict[str, Any] | None:
    """The first T in [t_from, t_to] (every REPLAY_DT) at which the gate's judge() says unhealthy on the grid the
    gate queries at T (query_range start T - (ceil(for/step) + 2) * step, end T, step): when the gate, had it
    evaluated at T, would have decided. None if it never does before t_to."""
    if str(COLLECTIONS) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS))
    from ansible_collections.hotelbot.ops.plugins.module_utils.prometheus import judge  # noqa: E402
    points = math.ceil(for_s / step_s) + 2
    queries = 0

    def ms(t: float) -> float:
        # Whole milliseconds: Prometheus rounds query_range's start to the millisecond, and judge() compares
        # sample times with `now` to 1e-9 s; an unaligned `now` makes the grid miss T and T - for (see README).
        return math.floor(t * 1000) / 1000

    def at(t: float) -> dict[str, Any]:
        nonlocal queries
        queries += 1
        return judge(sb.ratio_curve(query, t - points * step_s, t, step_s), threshold, for_s, step_s, t)

    times = []
    t = t_from
    while t < t_to:
        times.append(ms(t))
        t += REPLAY_DT
    times.append(ms(t_to))  # the decision's own moment last
    before = None
    for t in times:
        verdict = at(t)
        if verdict["decision"] == "unhealthy":
            # Narrow it down between the last "not yet" and this one, to REPLAY_RESOLUTION.
            lo, hi = before, t
            while lo is not None and hi - lo > REPLAY_RESOLUTION:
                mid = ms((lo + hi) / 2)
                if mid <= lo:
                    break
                probe = at(mid)
                if probe["decision"] == "unhealthy":
                    hi, verdict = mid, probe
                else:
                    lo = mid
            return {"rule_met": hi, "breached_since": verdict["breached_since"], "queries": queries}
        before = t
    return None


def wait_ready(sb: Sandbox, query: str, threshold: float, calm_s: float, timeout: float = 180) -> dict[str, Any]:
    """Production on revision 3, rollout COMPLETED, and the error ratio at or below threshold over the last
    calm_s seconds (the gate's whole window: no trial sees the previous one's breach)."""
    started = time.time()
    while True:
        s = control.serving(dir=sb.dir)
        now = time.time()
        curve = sb.ratio_curve(query, now - calm_s, now, 1.0)
        ratio = curve[-1][1] if curve else None
        ok = (s.get("image") == sb.stable_image and s.get("rolloutState") == "COMPLETED" and curve
              and all(math.isnan(v) or v <= threshold for _ts, v in curve))
        if ok:
            return {"waited_s": round(now - started, 2), "ratio": ratio, "serving": s.get("image"), "calm_s": calm_s}
        if now - started > timeout:
            raise BenchError(f"production not back to calm after {timeout}s: serving {s}, ratio {ratio}")
        time.sleep(0.5)


def one_trial(sb: Sandbox, workdir: Path, trial: int, args: argparse.Namespace, for_s: float, step_s: float,
              query: str, threshold: float) -> dict[str, Any]:
    poller = ServingPoller(sb, query)
    poller.start()
    extra = [f"hotpatch_change_id=BENCH-{trial}-{int(time.time())}", "hotpatch_tests_passed=true",
             f"hotpatch_image={sb.flaky_image}", f"hotelbot_gate_for={args.for_}",
             f"hotpatch_watch_for={args.watch_for}"]
    try:
        run = run_hotpatch(sb, workdir, f"trial{trial}", extra, args.keep_logs)
    finally:
        poller.stop()
    tasks = run["record"].get("tasks") or []
    out: dict[str, Any] = {"trial": trial, "rc": run["rc"], "cmd": run["cmd"], "playbook_s": round(run["exited"] - run["launched"], 2),
                           "poller": {"samples": len(poller.samples), "errors": poller.errors,
                                      "max_rtt_ms": round(1000 * max((s["rtt"] for s in poller.samples), default=0), 1)}}
    samples = poller.samples
    flaky = [s for s in samples if FLAKY_TAG in (s["image"] or "")]
    if not flaky:
        out["error"] = "the flaky image never served on production"
        out["output_tail"] = run["output_tail"]
        return out
    t0 = flaky[0]["t"]
    before_t0 = [s for s in samples if s["t"] < t0]
    out["t0"] = t0
    out["t0_resolution_s"] = round(t0 - before_t0[-1]["t"], 3) if before_t0 else None
    flaky_end = next((s["t"] for s in samples if s["t"] > t0 and FLAKY_TAG not in (s["image"] or "")), None)

    deploy = find_task(tasks, "Deploy to production and wait")
    gate_task = find_task(tasks, "Watch the error ratio in Prometheus")
    rollback = find_task(tasks, "Roll production back to")
    verify_rb = find_task(tasks, "Verify the rolled-back production")
    gate = (gate_task or {}).get("result") or {}
    decided = iso_ts(gate.get("decided_at"))
    breached_since = iso_ts(gate.get("breached_since"))
    rule_met = breached_since + for_s if breached_since is not None else None
    # The rollback's UpdateService: the first poll after the decision with a new deployment in progress.
    update_rb = None
    if decided is not None:
        update_rb = next((s["t"] for s in samples if s["t"] > decided and s["rollout"] == "IN_PROGRESS"), None)
    # The production deploy's UpdateService, for reference: the last IN_PROGRESS onset before t0.
    update_deploy = None
    for prev, cur in zip(samples, samples[1:]):
        if cur["t"] <= t0 and cur["rollout"] == "IN_PROGRESS" and prev["rollout"] != "IN_PROGRESS":
            update_deploy = cur["t"]
    verified = role_end(tasks, "Verify the rolled-back production")

    # The error ratio as Prometheus has it, at 0.25 s, around the incident.
    curve_end = (verified or run["exited"]) + 2
    curve = sb.ratio_curve(query, t0 - 5, min(curve_end, time.time()))
    crossed = next((ts for ts, v in curve if ts >= t0 and not math.isnan(v) and v > threshold), None)
    # The rule met as Prometheus evaluates it at any instant (0.25 s grid): the ratio above the threshold
    # without a break from `crossed` for the whole `for`.
    rule_met_curve = None
    if crossed is not None:
        held = [v for ts, v in curve if crossed <= ts <= crossed + for_s]
        if held and all(not math.isnan(v) and v > threshold for v in held) and curve[-1][0] >= crossed + for_s:
            rule_met_curve = crossed + for_s
    # The rule met as the gate itself would judge it at any moment: replay judge() (module_utils/prometheus)
    # on the query_range grid the gate asks for at T, for T every 50 ms from t0 + for up to the decision,
    # then bisected to 2 ms; T on whole milliseconds, so the grid holds T and T - for exactly.
    replay = replay_rule_met(sb, query, threshold, for_s, step_s, t0 + for_s, decided) if decided else None
    rule_met_replay = replay["rule_met"] if replay else None
    back_under = None
    if flaky_end is not None:
        back_under = next((ts for ts, v in curve if ts >= flaky_end and not math.isnan(v) and v <= threshold), None)

    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 3)

    events = {
        "production UpdateService (deploy, poller)": rel(update_deploy),
        "flaky starts serving (t0, poller)": 0.0,
        "end of 'Deploy to production and wait'": rel((deploy or {}).get("end")),
        "gate watch started": rel((gate_task or {}).get("start")),
        "ratio first > threshold (Prometheus, 0.25 s)": rel(crossed),
        "gate first_breach_at": rel(iso_ts(gate.get("first_breach_at"))),
        "gate breached_since": rel(breached_since),
        "rule met (gate: breached_since + for)": rel(rule_met),
        "rule met (Prometheus 0.25 s: first > threshold + for)": rel(rule_met_curve),
        "rule met (gate's judge() replayed, ms-aligned)": rel(rule_met_replay),
        "(a) decision (gate decided_at)": rel(decided),
        "gate task end": rel((gate_task or {}).get("end")),
        "(b) rollback task start": rel((rollback or {}).get("start")),
        "(b) rollback UpdateService (poller)": rel(update_rb),
        "flaky stops serving (poller)": rel(flaky_end),
        "rollback task end": rel((rollback or {}).get("end")),
        "ratio back <= threshold (Prometheus, 0.25 s)": rel(back_under),
        "(c) verified healthy (end of verify)": rel(verified),
        "playbook exit": rel(run["exited"]),
    }
    out["events_s"] = events
    out["gate"] = {k: gate.get(k) for k in ("decision", "reason", "decided_at", "breached_since", "first_breach_at",
                                            "evaluations", "for_seconds", "step_seconds", "threshold", "attempts")}
    out["gate"]["samples"] = gate.get("samples")
    out["gate"]["query"] = (gate.get("query") or {}).get("error_ratio")
    out["curve"] = [[round(ts - t0, 3), None if math.isnan(v) else round(v, 4)] for ts, v in curve]

    lags: dict[str, Any] = {}
    if decided is not None and rule_met is not None:
        lags["decision_after_rule_met_s"] = round(decided - rule_met, 3)
        lags["decision_after_rule_met_steps"] = round((decided - rule_met) / step_s, 3)
    if decided is not None and rule_met_curve is not None:
        lags["decision_after_rule_met_curve_s"] = round(decided - rule_met_curve, 3)
        lags["decision_after_rule_met_curve_steps"] = round((decided - rule_met_curve) / step_s, 3)
    if decided is not None and rule_met_replay is not None:
        lags["decision_after_rule_met_replay_s"] = round(decided - rule_met_replay, 3)
        lags["decision_after_rule_met_replay_steps"] = round((decided - rule_met_replay) / step_s, 3)
    if replay:
        out["replay"] = {"rule_met_s": rel(rule_met_replay), "breached_since_s": rel(replay["breached_since"]),
                         "queries": replay["queries"], "dt_s": REPLAY_DT, "resolution_s": REPLAY_RESOLUTION}
    # The gate's own cadence: it sleeps `step` after each evaluation, so evaluations are step + query time apart.
    cadence = re.search(r"after ([0-9.]+)s \((\d+) evaluations", gate.get("reason") or "")
    if cadence and int(cadence.group(2)) > 1:
        lags["gate_evaluation_interval_s"] = round(float(cadence.group(1)) / (int(cadence.group(2)) - 1), 4)
    if crossed is not None:
        lags["rate_window_lag_s"] = round(crossed - t0, 3)
    if rollback and decided is not None:
        lags["rollback_task_after_decision_s"] = round(rollback["start"] - decided, 3)
        if gate_task and gate_task.get("end"):
            lags["rollback_task_after_gate_task_end_s"] = round(rollback["start"] - gate_task["end"], 3)
    if update_rb is not None and decided is not None:
        lags["rollback_update_after_decision_s"] = round(update_rb - decided, 3)
    for key, t in (("decision", decided), ("rollback_task_start", (rollback or {}).get("start")),
                   ("rollback_update", update_rb), ("flaky_stops", flaky_end), ("verified", verified),
                   ("rule_met", rule_met), ("rule_met_curve", rule_met_curve), ("rule_met_replay", rule_met_replay)):
        if t is not None:
            lags[f"{key}_from_t0_s"] = round(t - t0, 3)
            lags[f"{key}_from_t0_windows"] = round((t - t0) / for_s, 3)
            lags[f"{key}_from_t0_steps"] = round((t - t0) / step_s, 3)
    out["lags"] = lags
    if poller.runbook:
        rb = dict(poller.runbook)
        rb["at_s"] = rel(rb.pop("at"))
        out["runbook"] = rb
    out["tasks"] = [{"name": t["name"], "included_by": t.get("included_by"), "status": t.get("status"),
                     "start_s": rel(t.get("start")), "end_s": rel(t.get("end"))} for t in tasks]
    if run["rc"] == 0 or gate.get("decision") != "unhealthy" or not verified:
        out["output_tail"] = run["output_tail"]
    return out


# ------------------------------------------------------------------------ report


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        prom = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, timeout=10, check=False)
        info["prometheus"] = (prom.stdout or prom.stderr).splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    try:
        import importlib.metadata
        info["ansible_core"] = importlib.metadata.version("ansible-core")
    except Exception:  # noqa: BLE001
        pass
    return info


def summarize(values: list[float]) -> dict[str, Any] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"n": len(values), "min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    trials = [t for t in result.get("trials") or [] if t.get("lags")]
    step_s = result["rule"]["step_s"]
    v: dict[str, Any] = {}
    # Both readings of "the sustained rule is met": the gate's own samples, and Prometheus at 0.25 s.
    for key, label in (("decision_after_rule_met_replay_s", "decision_within_one_step_replay"),
                       ("decision_after_rule_met_s", "decision_within_one_step"),
                       ("decision_after_rule_met_curve_s", "decision_within_one_step_curve")):
        decision = [t["lags"].get(key) for t in trials]
        if trials and None not in decision:
            worst = max(decision)
            v[label] = {"worst_s": worst, "target_max_s": TARGET_DECISION_STEPS * step_s,
                        "met": worst <= TARGET_DECISION_STEPS * step_s}
    rb = [t["lags"].get("rollback_task_after_decision_s") for t in trials]
    upd = [t["lags"].get("rollback_update_after_decision_s") for t in trials]
    if trials and None not in rb:
        worst = max(rb)
        worst_upd = max(upd) if None not in upd else None
        v["rollback_within_2s"] = {"worst_task_start_s": worst, "worst_update_service_s": worst_upd,
                                   "target_max_s": TARGET_ROLLBACK_S,
                                   "met": worst <= TARGET_ROLLBACK_S and (worst_upd is None or worst_upd <= TARGET_ROLLBACK_S)}
    all_unhealthy = bool(trials) and all((t.get("gate") or {}).get("decision") == "unhealthy" for t in trials)
    v["every_trial_rolled_back_and_verified"] = all_unhealthy and all(
        t["lags"].get("verified_from_t0_s") is not None for t in trials) and len(trials) == len(result.get("trials") or [])
    rbk = [t.get("runbook") for t in result.get("trials") or [] if t.get("runbook")]
    if rbk:
        v["runbook_health_check_would_roll_back"] = any(r["health_check"]["rc"] != 0 for r in rbk)
    return v


def fmt(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def print_report(result: dict[str, Any]) -> None:
    rule = result["rule"]
    trials = [t for t in result.get("trials") or [] if t.get("events_s")]
    log("=" * 110)
    log(f"incident: gate rule ratio > {rule['threshold']:g} for {rule['for_s']:g}s, step {rule['step_s']:g}s, rate window "
        f"{rule['rate_window']}; ECS deploy_seconds {result['deploy_seconds']}; {len(trials)} trial(s); "
        f"seconds from t0 = flaky image starts serving on production")
    if trials:
        header = f"{'event':<48}" + "".join(f"{'trial ' + str(t['trial']):>10}" for t in trials) + f"{'median':>9}" \
            + f"{'x for':>8}{'x step':>8}"
        log(header)
        for name in trials[0]["events_s"]:
            vals = [t["events_s"].get(name) for t in trials]
            ok = [x for x in vals if x is not None]
            med = statistics.median(ok) if ok else None
            log(f"{name:<48}" + "".join(f"{fmt(x):>10}" for x in vals) + f"{fmt(med):>9}"
                + f"{fmt(None if med is None else med / rule['for_s']):>8}"
                + f"{fmt(None if med is None else med / rule['step_s'], '.1f'):>8}")
        log("lags:")
        for key in ("rate_window_lag_s", "decision_after_rule_met_replay_s", "decision_after_rule_met_s",
                    "decision_after_rule_met_curve_s", "gate_evaluation_interval_s",
                    "rollback_task_after_decision_s", "rollback_update_after_decision_s"):
            vals = [t["lags"].get(key) for t in trials]
            log(f"  {key:<46}" + "".join(f"{fmt(x, '.3f'):>10}" for x in vals))
    for t in result.get("trials") or []:
        rb = t.get("runbook")
        if rb:
            log(f"trial {t['trial']}: runbook health check at t0+{fmt(rb['at_s'])}s -> rc {rb['health_check']['rc']} "
                f"'{rb['health_check']['stdout']}'; Scenario 1 with RATIO={rb['scenario1']['ratio']}: "
                f"'{rb['scenario1']['stdout']}' {rb['scenario1']['stderr']!r}")
        if t.get("error"):
            log(f"trial {t['trial']}: {t['error']}")
    v = result.get("verdicts") or {}
    for label, how in (("decision_within_one_step_replay", "gate's judge() replayed at ms-aligned T"),
                       ("decision_within_one_step", "gate's samples: breached_since + for"),
                       ("decision_within_one_step_curve", "Prometheus at 0.25 s")):
        if label in v:
            d = v[label]
            log(f"target decision within one step ({d['target_max_s']:g}s) of the rule being met ({how}): worst "
                f"{d['worst_s']:.3f}s -> {'MET' if d['met'] else 'MISSED'}")
    if "rollback_within_2s" in v:
        d = v["rollback_within_2s"]
        log(f"target rollback started within {d['target_max_s']:g}s of the decision: worst task start "
            f"{d['worst_task_start_s']:.3f}s, UpdateService {fmt(d['worst_update_service_s'], '.3f')}s -> "
            f"{'MET' if d['met'] else 'MISSED'}")
    log(f"every trial rolled back and verified: {v.get('every_trial_rolled_back_and_verified')}")
    if "runbook_health_check_would_roll_back" in v:
        log(f"runbook's automated rollback (health check) would roll back: {v['runbook_health_check_would_roll_back']}")
    log(f"results: {result.get('results_file')}")
    log("=" * 110)


# ------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3, help="hot-patch runs with the flaky release (default 3)")
    parser.add_argument("--for", dest="for_", default=SANDBOX_FOR,
                        help="the gate's `for` (hotelbot_gate_for; default the sandbox inventory's 15s)")
    parser.add_argument("--watch-for", dest="watch_for",
                        help="hotpatch_watch_for (default the inventory's 45s, or 3 x --for when that is longer)")
    parser.add_argument("--deploy-seconds", type=float,
                        help="the ECS double's simulated rollout time (default: the sandbox's, 2 s)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the work dir (playbook logs, sandbox logs)")
    args = parser.parse_args(argv)
    for_s = parse_seconds(args.for_)
    if not args.watch_for:
        args.watch_for = SANDBOX_WATCH_FOR if 3 * for_s <= parse_seconds(SANDBOX_WATCH_FOR) else f"{int(3 * for_s)}s"

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    started_at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    workdir = Path(tempfile.mkdtemp(prefix="hotelbot-incident-"))
    os.chmod(workdir, 0o755)  # PostgreSQL runs as its own OS user when we are root: it must traverse this
    # The sandbox inventory's rule (inventory/sandbox/group_vars/hotelbot.yml), `for` as given.
    rule = {"threshold": 0.05, "for": args.for_, "for_s": for_s, "step_s": 1.0, "rate_window": "5s"}
    result: dict[str, Any] = {
        "benchmark": "incident", "started_at": started_at.isoformat(), "machine": machine_info(), "rule": rule,
        "watch_for": args.watch_for, "deploy_seconds": args.deploy_seconds if args.deploy_seconds is not None else 2.0,
        "targets": {"decision_after_rule_met_max_steps": TARGET_DECISION_STEPS,
                    "rollback_after_decision_max_s": TARGET_ROLLBACK_S},
        "method": {"poll_interval_s": POLL_INTERVAL, "curve_step_s": CURVE_STEP, "image_tag": FLAKY_TAG,
                   "runbook_check_after_s": RUNBOOK_CHECK_AFTER_S},
        "trials": [],
    }
    sb = Sandbox(workdir)
    exit_code = 0
    try:
        log(f"work dir {workdir}; starting the sandbox")
        result["sandbox_up_s"] = round(sb.up(), 2)
        if args.deploy_seconds is not None:
            control.set_deploy_seconds(args.deploy_seconds, dir=sb.dir)
        job = sb.st["prometheus"]["job"]
        query = error_ratio_query(job, rule["rate_window"])
        history = for_s + 5
        calm_s = for_s + 3 * rule["step_s"]  # the gate's query window: for + 2 steps, and one more
        log(f"sandbox up in {result['sandbox_up_s']:.1f}s; waiting {history:g}s so Prometheus has a gate window of history")
        time.sleep(history)
        for trial in range(1, args.trials + 1):
            calm = wait_ready(sb, query, rule["threshold"], calm_s)
            log(f"trial {trial}/{args.trials}: production on {calm['serving']}, ratio {calm['ratio']:.3f} "
                f"(waited {calm['waited_s']}s); hotpatch.yml with {FLAKY_TAG}, for={args.for_}")
            t = one_trial(sb, workdir, trial, args, for_s, rule["step_s"], query, rule["threshold"])
            result["trials"].append(t)
            if t.get("gate", {}).get("query"):
                query = t["gate"]["query"]
            e = t.get("events_s") or {}
            log(f"trial {trial}: rc {t['rc']} (non-zero expected: it rolled back), gate "
                f"{(t.get('gate') or {}).get('decision')}; decision t0+{fmt(e.get('(a) decision (gate decided_at)'))}s, "
                f"rollback task t0+{fmt(e.get('(b) rollback task start'))}s, verified t0+"
                f"{fmt(e.get('(c) verified healthy (end of verify)'))}s")
            if t.get("error") or (t.get("gate") or {}).get("decision") != "unhealthy":
                exit_code = 2
                log((t.get("output_tail") or "")[-1500:])
        # Leave production calm (not needed for `down`, but shows the last rollback held).
        result["after"] = wait_ready(sb, query, rule["threshold"], calm_s)
    except (Exception, KeyboardInterrupt, SystemExit) as err:
        result["error"] = f"{type(err).__name__}: {err}"
        result["traceback"] = traceback.format_exc()
        log(f"benchmark aborted: {result['error']}")
        if not isinstance(err, (BenchError, KeyboardInterrupt, SystemExit)):
            log(result["traceback"])
        exit_code = 1
    finally:
        log("stopping the sandbox")
        sb.down()
    result["verdicts"] = verdicts(result)
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["machine"]["bench_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["finished_at"] = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.for_ == SANDBOX_FOR else f"-for{args.for_}"
    out = RESULTS_DIR / f"incident-{started_at.strftime('%Y%m%dT%H%M%SZ')}{suffix}.json"
    result["results_file"] = str(out.relative_to(REPO))
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_report(result)
    if args.keep_logs or exit_code:
        log(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
