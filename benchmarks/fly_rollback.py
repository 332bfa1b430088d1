"""Fly rollback benchmark: flyctl's rolling-deploy sequence done by hand with `curl`, against
`ansible-playbook rollback.yml` on the Fly app (inventory/sandbox host sandbox_fly,
hotelbot_platform: fly), for 3, 10 and 30 Machines, in one run on one machine.

    .venv/bin/python benchmarks/fly_rollback.py [--machines 3,10,30] [--trials N] [--keep-logs]

Starts its own sandbox (a temporary HOTELBOT_SANDBOX_DIR; `down` at the end, always), with the
Fly double's Machines taking 2 s from an update to `started` and its spec validation off (it
would add the same cost to every call of either way). Before every trial, untimed: the app is
re-seeded with N Machines on the bad release v5 (`POST /sandbox/fly/reset {"machines": N}`), all
started, the bot serving 1.3.0-bad.

1. by hand, the sequence flyctl performs for a rolling deploy (`fly deploy --image <v3's image>
   --strategy rolling`), one `curl` process per call, one Machine after another: first the
   releases (GraphQL, to find the last good release's image) and the Machines list, then per
   Machine: POST lease, GET machine (its config), POST update (the config with the new image,
   under the lease nonce), GET wait (instance_id, state=started), GET machine until every check
   passes, DELETE lease. No verification. The checks are polled as flyctl polls them
   (internal/machine/leasable_machine.go, WaitForHealthchecksToPass: a GET at once, then a backoff
   of min 1 s, max 2 s, factor 2, with jitter). flyctl's smoke check (it waits, by default, until
   each updated Machine has been up 10 s) is not in the issue's sequence and is left out: that favours
   the hand. At 3 Machines the hand sequence also runs with a GET every 0.5 s ("hand-0.5s"), faster
   than flyctl polls, as a stricter reference (its ratio is reported, informational).
2. `ansible-playbook rollback.yml -e rollback_hosts=hotelbot_fly` with
   hotelbot_fly_max_unavailable 1 and 0.33: preflight, the release lock (a Machine lease),
   the roll, HTTP verification of the bot, mark stable.

Targets (issue 14): 3 Machines, max_unavailable 1: the playbook within 1.2x of the hand
sequence; max_unavailable 0.33: 30 Machines in at most 4x the time of 3.
Results: a table on stdout and benchmarks/results/fly_rollback-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from ecs_rollback import (  # noqa: E402  (sys.path above)
    BenchError, children_cpu, finish, log, plain_sandbox_values, playbook_phases, summarize, version_of,
)
from sandbox import control, procs, stack  # noqa: E402
from sandbox import state as sandbox_state  # noqa: E402

VENV_BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = str(VENV_BIN / "ansible-playbook")
CURL = shutil.which("curl") or "/usr/bin/curl"
CALLBACK_DIR = REPO / "benchmarks" / "lib" / "callback_plugins"
APP = sandbox_state.FLY_APP
START_SECONDS = 2.0
FAST_POLL_SECONDS = 0.5    # hand-0.5s: a fixed poll, faster than flyctl's
FLYCTL_POLL = (1.0, 2.0, 2.0)   # flyctl's health-check backoff: min, max, factor (jitter on)
LEASE_TTL = 60
BAD_VERSION, GOOD_VERSION = "1.3.0-bad", "1.2.0"
TARGET_RATIO = 1.2         # playbook / hand, 3 Machines, max_unavailable 1
TARGET_SCALE = 4.0         # playbook at 30 Machines / at 3, max_unavailable 0.33
WAYS = ("hand", "hand-0.5s", "playbook-mu1", "playbook-mu0.33")
FAST_HAND_AT = 3           # the Machine count hand-0.5s runs at
MAX_UNAVAILABLE = {"playbook-mu1": "1", "playbook-mu0.33": "0.33"}
WAY_LABELS = {"hand": "by hand (curl, one Machine after another)",
              "hand-0.5s": "by hand, checks polled every 0.5 s (reference)",
              "playbook-mu1": "ansible-playbook rollback.yml, max_unavailable 1",
              "playbook-mu0.33": "ansible-playbook rollback.yml, max_unavailable 0.33"}
RELEASES = ("query($app: String!) { app(name: $app) { releasesUnprocessed(first: 25) "
            "{ nodes { version status imageRef } } } }")


# ------------------------------------------------------------------------ sandbox


class Sandbox:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "sandbox"
        self.log = workdir / "sandbox-up.log"
        self.st: dict[str, Any] = {}
        self.token = ""

    def _sandbox(self, command: str) -> int:
        # The double validates nothing here: validation costs the same per call for both ways.
        env = dict(os.environ, **{stack.ENV_FLY_VALIDATE: "0"})
        with open(self.log, "a") as out:
            return subprocess.run([sys.executable, "-m", "sandbox", command, "--dir", str(self.dir)], cwd=REPO, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, check=False, timeout=180).returncode

    def up(self) -> float:
        started = time.perf_counter()
        if self._sandbox("up") != 0:
            raise BenchError(f"sandbox up failed; see {self.log}:\n{self.log.read_text()[-3000:]}")
        self.st = sandbox_state.load(self.dir)
        self.token = sandbox_state.load_secrets(self.dir)["fly_api_token"]
        control.fly_settings(self.dir, start_seconds=START_SECONDS)
        return time.perf_counter() - started

    def down(self) -> None:
        if self._sandbox("down") != 0:
            log(f"WARNING: sandbox down reported a problem; see {self.log}")

    def machines(self) -> list[dict[str, Any]]:
        """The app's Machines in the double's own model."""
        return [dict(machine, id=machine_id) for machine_id, machine in control.fly_state(self.dir)["apps"][APP]["machines"].items()]

    def calls(self) -> dict[str, int]:
        return control.fly_calls(self.dir)

    def bot_version(self) -> str | None:
        body = procs.http_json(self.st["bot_fly"]["url"] + "/api/health", timeout=5)[1]
        return body.get("version") if isinstance(body, dict) else None

    def wait(self, check: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.05)

    def seed(self, n: int) -> None:
        """The starting state of every trial (not timed): n Machines on v5, started; the bot on 1.3.0-bad."""
        control.fly_reset(self.dir, machines=n)
        control.fly_settings(self.dir, start_seconds=START_SECONDS)
        self.wait(lambda: len(self.machines()) == n and all(m["state"] == "started" for m in self.machines()),
                  f"{n} started Machines")
        self.wait(lambda: self.bot_version() == BAD_VERSION, "the bot to serve the bad release")

    def not_rolled_back(self, image: str) -> list[str]:
        """Machines not started on `image` (empty: all rolled back)."""
        return [m["id"] for m in self.machines() if m["image"] != image or m["state"] != "started"]


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Calls made between two readings of the double's counters, per operation, and TOTAL."""
    counts = {op: after.get(op, 0) - before.get(op, 0) for op in sorted(after) if isinstance(after.get(op), int)}
    counts = {op: n for op, n in counts.items() if n and op != "TOTAL"}
    counts["TOTAL"] = sum(counts.values())
    return counts


# ------------------------------------------------------------------------ by hand (curl)


class Curl:
    """One `curl` process per call. The token goes to curl on stdin (`-H @-`), not in its argv."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.base = sandbox.st["fly"]["api_url"]
        self.token = sandbox.token
        self.steps: list[dict[str, Any]] = []

    def call(self, step: str, method: str, path: str, body: Any = None, nonce: str | None = None) -> Any:
        headers = [f"Authorization: {self.token}", "Accept: application/json"]
        cmd = [CURL, "-sS", "-X", method, "-H", "@-", "-w", "\n%{http_code}", "--max-time", "90"]
        if nonce:
            headers.append(f"fly-machine-lease-nonce: {nonce}")
        if body is not None:
            headers.append("Content-Type: application/json")
            cmd += ["--data-binary", json.dumps(body)]
        started = time.perf_counter()
        proc = subprocess.run(cmd + [self.base + path], input="\n".join(headers) + "\n", capture_output=True, text=True,
                              check=False, timeout=120)
        self.steps.append({"step": step, "s": round(time.perf_counter() - started, 3)})
        text, _sep, status = proc.stdout.rpartition("\n")
        if proc.returncode != 0 or not status.isdigit() or not 200 <= int(status) < 300:
            raise BenchError(f"curl {method} {path}: exit {proc.returncode}, HTTP {status}: {text[-300:]} {proc.stderr[-300:]}")
        return json.loads(text) if text.strip() else None


class FlyctlPause:
    """The pauses between flyctl's health-check polls: jpillora/backoff with Min 1 s, Max 2 s, Factor 2
    and Jitter (attempt k: uniform between min and min*factor^k, capped at max). Seeded: same in every run."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.attempt = 0

    def __call__(self) -> float:
        low, high, factor = FLYCTL_POLL
        span = low * factor ** self.attempt
        self.attempt += 1
        return min(high, self.random.random() * (span - low) + low)


def by_hand(sandbox: Sandbox, fast_poll: bool = False) -> dict[str, Any]:
    """flyctl's rolling deploy of the last good release's image, call by call (fast_poll: checks polled
    every 0.5 s instead of on flyctl's backoff)."""
    curl = Curl(sandbox)
    started = time.perf_counter()
    releases = curl.call("graphql releases", "POST", "/graphql", {"query": RELEASES, "variables": {"app": APP}})
    nodes = releases["data"]["app"]["releasesUnprocessed"]["nodes"]
    machines = curl.call("list machines", "GET", f"/v1/apps/{APP}/machines")
    current = {m["config"]["image"] for m in machines}
    # The newest complete release older than the one that runs, on another image: v3 (v4 failed).
    running = max(n["version"] for n in nodes if n["imageRef"] in current)
    target = next(n["imageRef"] for n in sorted(nodes, key=lambda n: -n["version"])
                  if n["version"] < running and n["status"] == "complete" and n["imageRef"] not in current)
    polls = 0
    for number, machine in enumerate(machines):
        path = f"/v1/apps/{APP}/machines/{machine['id']}"
        lease = curl.call("lease", "POST", f"{path}/lease", {"ttl": LEASE_TTL, "description": "by hand"})
        nonce = lease["data"]["nonce"]
        config = curl.call("get machine", "GET", path)["config"]
        updated = curl.call("update", "POST", path, {"config": dict(config, image=target)}, nonce=nonce)
        query = urllib.parse.urlencode({"instance_id": updated["instance_id"], "state": "started", "timeout": 60})
        curl.call("wait started", "GET", f"{path}/wait?{query}")
        pause = (lambda: FAST_POLL_SECONDS) if fast_poll else FlyctlPause(number)
        while True:
            polls += 1
            checks = curl.call("poll checks", "GET", path).get("checks") or []
            if checks and all(c.get("status") == "passing" for c in checks):
                break
            time.sleep(pause())
        curl.call("release lease", "DELETE", f"{path}/lease", nonce=nonce)
    return {"s": time.perf_counter() - started, "target": target, "check_polls": polls, "steps": curl.steps}


# ------------------------------------------------------------------------ ansible-playbook


def production_inventory(sandbox: Sandbox, workdir: Path) -> Path:
    """inventory/sandbox's Fly host in production's shape (examples/inventory/production), as the ECS
    benchmark has it: plain values, read once here from the state file instead of a file lookup and a
    from_json at every use; the API token still read from the sandbox's 0600 secrets file by a lookup,
    as a vault lookup would be."""
    text = (REPO / "inventory" / "sandbox" / "group_vars" / "hotelbot_fly.yml").read_text()
    lines = []
    for line in text.splitlines():
        if line.startswith("hotelbot_sandbox:"):
            continue
        if line.startswith("hotelbot_sandbox_dir:"):
            line = "hotelbot_sandbox_dir: " + json.dumps(str(sandbox.dir))
        lines.append(line)
    text = plain_sandbox_values("\n".join(lines) + "\n", sandbox.st)
    inventory = workdir / "inventory-fly"
    shutil.rmtree(inventory, ignore_errors=True)
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "group_vars" / "hotelbot_fly.yml").write_text(text)
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    # JSON is YAML: no PyYAML needed to write it.
    (inventory / "hosts.yml").write_text(json.dumps({"hotelbot_fly": {"hosts": {"sandbox_fly": host}}}, indent=2) + "\n")
    return inventory


class Playbook:
    def __init__(self, sandbox: Sandbox, workdir: Path, keep_logs: bool) -> None:
        self.sandbox, self.workdir, self.keep_logs = sandbox, workdir, keep_logs
        self.runs = 0
        self.inventory: Path | None = None   # written at the first run, once the sandbox is up

    def run(self, label: str, max_unavailable: str, timeout: float = 900) -> dict[str, Any]:
        self.runs += 1
        if self.inventory is None:
            self.inventory = production_inventory(self.sandbox, self.workdir)
        stem = f"playbook-{self.runs:03d}-{label}"
        log_path, timing_path = self.workdir / f"{stem}.log", self.workdir / f"{stem}.timing.json"
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), HOTELBOT_SANDBOX_DIR=str(self.sandbox.dir),
                   ANSIBLE_CALLBACK_PLUGINS=str(CALLBACK_DIR), ANSIBLE_CALLBACKS_ENABLED="bench_timing",
                   HOTELBOT_BENCH_TIMING_FILE=str(timing_path), ANSIBLE_NOCOLOR="1")
        cmd = [ANSIBLE_PLAYBOOK, "rollback.yml", "-i", str(self.inventory),
               "-e", "rollback_hosts=hotelbot_fly", "-e", f"hotelbot_fly_max_unavailable={max_unavailable}"]
        launched, started = time.time(), time.perf_counter()
        with open(log_path, "w") as out:
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=timeout)
        result: dict[str, Any] = {"s": time.perf_counter() - started, "rc": proc.returncode, "cmd": " ".join(cmd[1:])}
        try:
            result.update(playbook_phases(json.loads(timing_path.read_text()), launched, time.time()))
        except (OSError, ValueError):
            result["phases"] = {}
        if proc.returncode != 0:
            result["log"], result["output_tail"] = str(log_path), log_path.read_text()[-2500:]
        elif not self.keep_logs:
            log_path.unlink(missing_ok=True)
        timing_path.unlink(missing_ok=True)
        return result


# ------------------------------------------------------------------------ measurements


def ways_at(n: int, ways: tuple[str, ...] = WAYS) -> list[str]:
    """The ways measured at n Machines, in the order given: hand-0.5s only at FAST_HAND_AT."""
    return [w for w in ways if w != "hand-0.5s" or n == FAST_HAND_AT]


def one_trial(way: str, n: int, sandbox: Sandbox, playbook: Playbook, trial: int, target_image: str) -> dict[str, Any]:
    sandbox.seed(n)
    record: dict[str, Any] = {"way": way, "machines": n, "trial": trial, "loadavg_1m": round(os.getloadavg()[0], 2)}
    calls_before, cpu_before = sandbox.calls(), children_cpu()
    try:
        if way.startswith("hand"):
            record.update(by_hand(sandbox, fast_poll=way == "hand-0.5s"))
            record["rc"] = 0
        else:
            record.update(playbook.run(f"{way}-n{n}-t{trial}", MAX_UNAVAILABLE[way]))
    except (BenchError, subprocess.TimeoutExpired, KeyError, ValueError, StopIteration) as err:
        record.update(rc=None, error=f"{type(err).__name__}: {err}", s=None)
    record["cpu_s"] = round(children_cpu() - cpu_before, 3)
    record["calls"] = delta(calls_before, sandbox.calls())
    left = sandbox.not_rolled_back(target_image)
    record["ok"] = record.get("rc") == 0 and not left
    if left:
        record.setdefault("error", f"{len(left)} Machine(s) not started on {target_image}")
    return record


def run_all(sandbox: Sandbox, playbook: Playbook, counts: list[int], trials: int, target_image: str) -> dict[str, Any]:
    records = []
    for n in counts:
        for trial in range(1, trials + 1):
            shift = (trial - 1) % len(WAYS)  # rotate the order trial by trial
            for way in ways_at(n, WAYS[shift:] + WAYS[:shift]):
                rec = one_trial(way, n, sandbox, playbook, trial, target_image)
                records.append(rec)
                status = "ok" if rec["ok"] else f"FAILED: {rec.get('error') or 'rc ' + str(rec.get('rc'))}"
                seconds = f"{rec['s']:.2f}s" if rec.get("s") is not None else "-"
                log(f"  {n:>2} Machines  trial {trial}/{trials}  {way:<16} {seconds:>8}  calls {rec['calls']['TOTAL']:>4}  "
                    f"cpu {rec['cpu_s']:5.2f}s  {status}")
                if not rec["ok"] and rec.get("output_tail"):
                    log("\n".join("    | " + line for line in rec["output_tail"].splitlines()[-25:]))
    summary: dict[str, Any] = {}
    for n in counts:
        for way in ways_at(n):
            good = [r for r in records if r["machines"] == n and r["way"] == way and r["ok"]]
            row = summary.setdefault(str(n), {})[way] = summarize([r["s"] for r in good])
            row["failed"] = len([r for r in records if r["machines"] == n and r["way"] == way and not r["ok"]])
            if good:
                row["calls"] = good[0]["calls"]
                row["calls_total_median"] = statistics.median(r["calls"]["TOTAL"] for r in good)
                row["cpu_median_s"] = round(statistics.median(r["cpu_s"] for r in good), 3)
    return {"trials": trials, "summary": summary, "ratios": ratios_of(summary, counts), "records": records}


def ratios_of(summary: dict[str, Any], counts: list[int]) -> dict[str, Any]:
    def median(n: int, way: str) -> float | None:
        return summary.get(str(n), {}).get(way, {}).get("median_s")

    out: dict[str, Any] = {}
    for n in counts:
        for hand_way in ("hand", "hand-0.5s"):
            hand = median(n, hand_way)
            for way in ("playbook-mu1", "playbook-mu0.33"):
                if hand and median(n, way):
                    out[f"{way}/{hand_way} @{n}"] = {
                        "ratio": round(median(n, way) / hand, 2),
                        "target": TARGET_RATIO if (n, way, hand_way) == (3, "playbook-mu1", "hand") else None}
    small, big = min(counts), max(counts)
    if small != big and median(small, "playbook-mu0.33") and median(big, "playbook-mu0.33"):
        out[f"playbook-mu0.33 @{big}/@{small}"] = {
            "ratio": round(median(big, "playbook-mu0.33") / median(small, "playbook-mu0.33"), 2),
            "target": TARGET_SCALE if (small, big) == (3, 30) else None}
    return out


# ------------------------------------------------------------------------ report


def print_report(result: dict[str, Any]) -> None:
    comp = result["comparison"]
    log("")
    log("=" * 100)
    log(f"Fly rollback benchmark  {result['started_at']}  ({comp['trials']} trial(s) per way and size, "
        f"Machines start in {START_SECONDS:g} s)")
    m = result["machine"]
    log(f"machine: {m['nproc']} CPUs, Python {m['python']}, ansible-core {m['ansible_core']}, {m['curl']}; "
        f"load average at start {m['loadavg_at_start']}, at end {m.get('loadavg_at_end')}")
    log("")
    log(f"{'Machines':>8}  {'way':<52} {'median s':>9} {'min s':>7} {'API calls':>10} {'ok':>5}")
    for n, ways in comp["summary"].items():
        for way in [w for w in WAYS if w in ways]:
            row = ways[way]
            log(f"{n:>8}  {WAY_LABELS[way]:<52} {_fmt(row.get('median_s')):>9} {_fmt(row.get('min_s')):>7} "
                f"{str(row.get('calls_total_median', '-')):>10} {row.get('n', 0):>2}/{row.get('n', 0) + row['failed']:<2}")
    log("")
    for name, r in comp["ratios"].items():
        verdict = "(informational)"
        if r["target"]:
            verdict = f"target <= {r['target']}x: " + ("MET" if r["ratio"] <= r["target"] else "MISSED")
        log(f"ratio {name:<34} {r['ratio']:.2f}x  {verdict}")
    log("")
    log(f"results: {result.get('results_file')}")
    log("=" * 100)


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def machine_info() -> dict[str, Any]:
    curl = subprocess.run([CURL, "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, check=False)
    return {"nproc": len(os.sched_getaffinity(0)), "python": sys.version.split()[0],
            "ansible_core": version_of("ansible-core"), "curl": " ".join(curl.split()[:2]), "git": git.stdout.strip(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


# ------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", default="3,10,30", help="Machine counts (default 3,10,30)")
    parser.add_argument("--trials", type=int, default=1, help="trials per way and count (default 1)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the work dir (playbook and sandbox logs)")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.machines.split(",") if x.strip()]

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    started_at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    workdir = Path(tempfile.mkdtemp(prefix="hotelbot-bench-fly-"))
    os.chmod(workdir, 0o755)  # PostgreSQL runs as its own OS user when we are root: it must traverse this
    result: dict[str, Any] = {
        "benchmark": "fly_rollback", "started_at": started_at.isoformat(), "machine": machine_info(),
        "target": {"playbook_over_hand_max_at_3": TARGET_RATIO, "mu033_30_over_3_max": TARGET_SCALE},
        "method": {
            "start_seconds": START_SECONDS, "spec_validation": False,
            "hand_check_polls": {"hand": "flyctl's: at once, then backoff min %gs max %gs factor %g, jitter" % FLYCTL_POLL,
                                 "hand-0.5s": "every %g s, at %d Machines only" % (FAST_POLL_SECONDS, FAST_HAND_AT)},
            "hand_sequence": ["POST /graphql releases (find the last good release's image)", "GET /v1/apps/{app}/machines",
                              "per Machine, one after another: POST lease, GET machine, POST update (nonce), "
                              "GET wait instance_id state=started, GET machine until checks passing, "
                              "DELETE lease"],
            "playbook": "ansible-playbook rollback.yml -i <inventory/sandbox's Fly host in production's shape> -e rollback_hosts=hotelbot_fly "
                        "-e hotelbot_fly_max_unavailable=<1|0.33> (verifies and marks stable)",
            "start_state": "POST /sandbox/fly/reset {machines: N}: N Machines on v5 (1.3.0-bad), started; bot on 1.3.0-bad",
        },
    }
    sandbox = Sandbox(workdir)
    exit_code, all_ok = 0, False
    try:
        log(f"work dir {workdir}; starting the sandbox")
        result["sandbox_up_s"] = round(sandbox.up(), 2)
        target_image = _release_image(sandbox, 3)
        log(f"sandbox up in {result['sandbox_up_s']:.1f}s; rolling {counts} Machines back to {target_image}")
        started = time.perf_counter()
        result["comparison"] = run_all(sandbox, Playbook(sandbox, workdir, args.keep_logs), counts, args.trials, target_image)
        result["comparison"]["elapsed_s"] = round(time.perf_counter() - started, 1)
        all_ok = all(r["ok"] for r in result["comparison"]["records"])
    except (Exception, KeyboardInterrupt, SystemExit) as err:  # report, clean up, keep the partial results
        result["error"], result["traceback"] = f"{type(err).__name__}: {err}", traceback.format_exc()
        log(f"benchmark aborted: {result['error']}")
        exit_code = 1
    finally:
        log("stopping the sandbox")
        sandbox.down()
    return finish(result, f"fly_rollback-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json", print_report, workdir,
                  args.keep_logs, exit_code, all_ok)


def _release_image(sandbox: Sandbox, version: int) -> str:
    """A release's image in the double's model (its releases as GraphQL serves them)."""
    return next(r["imageRef"] for r in control.fly_state(sandbox.dir)["apps"][APP]["releases"] if r["version"] == version)


if __name__ == "__main__":
    sys.exit(main())
