"""ECS rollback benchmark: the runbook's own awscli sequence against `ansible-playbook rollback.yml`.

    .venv/bin/python benchmarks/ecs_rollback.py [--quick] [--trials N] [--keep-logs]

Starts its own sandbox (a temporary HOTELBOT_SANDBOX_DIR; `down` at the end, always),
sets the controller's simulated deployment time to zero, and measures from the same
starting state (service on the bad revision 4, ledger tags as seeded):

1. the runbook's way (rollback runbook, Step 2, Option A), one `aws` process per command:
   describe-services, list-task-definitions, describe-task-definition, update-service,
   then `aws ecs wait services-stable` ("cli-wait15": botocore's waiter, 15 s between polls)
   or, as the fastest a CLI user can wait, `aws ecs describe-services` every 1 s until
   stable ("cli-poll1": awscli v1 has no option for the waiter's delay);
2. our way: `ansible-playbook rollback.yml` with the sandbox inventory (preflight,
   rollback, wait, HTTP verification, mark stable).

Then how the playbook scales with 1, 10 and 30 services rolled back at once (--forks N),
against the CLI sequence repeated service by service.

Results: a table on stdout and benchmarks/results/ecs_rollback-<timestamp>.json.
See benchmarks/README.md for how to read them.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
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
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox import control, procs  # noqa: E402  (the repo root is put on sys.path above)
from sandbox import state as sandbox_state  # noqa: E402

VENV_BIN = Path(sys.executable).parent
AWS = str(VENV_BIN / "aws")
ANSIBLE_PLAYBOOK = str(VENV_BIN / "ansible-playbook")
RESULTS_DIR = REPO / "benchmarks" / "results"
CALLBACK_DIR = REPO / "benchmarks" / "lib" / "callback_plugins"

FAMILY = sandbox_state.FAMILY
CLUSTER = sandbox_state.CLUSTER
SERVICE = sandbox_state.SERVICE
BAD_REVISION = 4
STABLE_REVISION = 3
TAG_LAST_STABLE = "hotelbot.ops/last-stable"
TAG_STABLE_ON_REVISION = "hotelbot.ops/stable"
LEDGER_KEYS_TO_CLEAR = ["hotelbot.ops/rollback", "hotelbot.ops/desired-count-before-scale"]
EXTRA_SERVICE = "hotel-voice-bot-service-%02d"  # 02..30
TARGET_RATIO = 1.2
# CPU seconds per service when the largest scaling run rolls back its services at once (issue 12).
TARGET_CPU_PER_SERVICE = 1.5
WAYS = ("cli-wait15", "cli-poll1", "playbook", "playbook-pipelining")
CLI_WAYS = ("cli-wait15", "cli-poll1")
REALISTIC_WAYS = ("cli-wait15", "cli-poll1", "playbook")
WAY_LABELS = {
    "cli-wait15": "CLI, aws ecs wait services-stable (15 s delay)",
    "cli-poll1": "CLI, describe-services every 1 s",
    "playbook": "ansible-playbook rollback.yml (full)",
    "playbook-pipelining": "  same, ANSIBLE_PIPELINING=1 (informational)",
}


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------ sandbox


class Sandbox:
    """One sandbox in its own state dir; AWS clients and the ledger reset."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "sandbox"
        self.log = workdir / "sandbox-up.log"
        self.st: dict[str, Any] = {}
        self.secrets: dict[str, str] = {}
        self._ecs: Any = None
        self.stable_tag_value = ""
        self.network: dict[str, Any] = {}
        self.deployment_configuration: dict[str, Any] = {}
        self.extra_services: list[str] = []

    def _sandbox(self, command: str) -> subprocess.CompletedProcess:
        with open(self.log, "a") as out:
            return subprocess.run([sys.executable, "-m", "sandbox", command, "--dir", str(self.dir)],
                                  cwd=REPO, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=180)

    def up(self) -> float:
        started = time.perf_counter()
        if self._sandbox("up").returncode != 0:
            raise BenchError(f"sandbox up failed; see {self.log}:\n{self.log.read_text()[-3000:]}")
        self.st = sandbox_state.load(self.dir)
        self.secrets = sandbox_state.load_secrets(self.dir)
        control.set_deploy_seconds(0, dir=self.dir)
        svc = self.describe([SERVICE])[0]
        self.network = svc["networkConfiguration"]
        self.deployment_configuration = svc["deploymentConfiguration"]
        tags = self.ecs.describe_task_definition(taskDefinition=f"{FAMILY}:{STABLE_REVISION}", include=["TAGS"]).get("tags") or []
        self.stable_tag_value = next((t["value"] for t in tags if t["key"] == TAG_STABLE_ON_REVISION), "")
        return time.perf_counter() - started

    def down(self) -> None:
        if self._sandbox("down").returncode != 0:
            log(f"WARNING: sandbox down reported a problem; see {self.log}")

    @property
    def endpoint(self) -> str:
        return self.st["aws"]["endpoint_url"]

    @property
    def region(self) -> str:
        return self.st["region"]

    @property
    def ecs(self) -> Any:
        if self._ecs is None:
            import boto3
            from botocore.config import Config

            self._ecs = boto3.session.Session().client(
                "ecs", region_name=self.region, endpoint_url=self.endpoint,
                aws_access_key_id=self.st["aws"]["access_key_id"],
                aws_secret_access_key=self.secrets["aws_secret_access_key"],
                config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30))
        return self._ecs

    def aws_env(self, home: Path) -> dict[str, str]:
        """Environment for the awscli: dummy credentials from the sandbox, no user config."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=self.st["aws"]["access_key_id"],
            AWS_SECRET_ACCESS_KEY=self.secrets["aws_secret_access_key"],
            AWS_DEFAULT_REGION=self.region,
            AWS_CONFIG_FILE=str(home / "aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(home / "aws-credentials"),
        )
        return env

    def calls(self) -> dict[str, int]:
        return dict(sorted(control.calls(dir=self.dir).items()))

    def reset_calls(self) -> None:
        control.reset_calls(dir=self.dir)

    def set_deploy_seconds(self, seconds: float) -> None:
        control.set_deploy_seconds(seconds, dir=self.dir)

    def describe(self, services: list[str], tags: bool = False) -> list[dict[str, Any]]:
        found = []
        for i in range(0, len(services), 10):  # DescribeServices takes at most 10
            kwargs: dict[str, Any] = dict(cluster=CLUSTER, services=services[i:i + 10])
            if tags:
                kwargs["include"] = ["TAGS"]
            answer = self.ecs.describe_services(**kwargs)
            if answer.get("failures"):
                raise BenchError(f"DescribeServices failures: {answer['failures']}")
            found.extend(answer["services"])
        return found

    @staticmethod
    def revision(svc: dict[str, Any]) -> int:
        return int(svc["taskDefinition"].rsplit(":", 1)[1])

    def wait_settled(self, services: list[str], revision: int, timeout: float = 60) -> None:
        """Every service has one COMPLETED deployment of `revision`, all tasks running."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [s["serviceName"] for s in self.describe(services)
                       if not (len(s["deployments"]) == 1 and s["deployments"][0].get("rolloutState") == "COMPLETED"
                               and s["runningCount"] == s["desiredCount"] and self.revision(s) == revision)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"services did not settle on revision {revision} within {timeout}s: {pending[:5]}")
            time.sleep(0.05)

    def create_extra_services(self, count: int) -> float:
        """hotel-voice-bot-service-02..NN on the bad revision, last-stable = revision 3."""
        started = time.perf_counter()
        existing = set(self.extra_services)
        for i in range(2, count + 1):
            name = EXTRA_SERVICE % i
            if name in existing:
                continue
            self.ecs.create_service(
                cluster=CLUSTER, serviceName=name, taskDefinition=f"{FAMILY}:{BAD_REVISION}", desiredCount=3,
                launchType="FARGATE", platformVersion="LATEST", networkConfiguration=self.network,
                deploymentConfiguration=self.deployment_configuration,
                tags=[{"key": TAG_LAST_STABLE, "value": f"{FAMILY}:{STABLE_REVISION}"}])
            self.extra_services.append(name)
        self.wait_settled(self.extra_services, BAD_REVISION)
        return time.perf_counter() - started

    def put_on_bad_revision(self, services: list[str]) -> None:
        """The starting state of every trial (not timed): each service runs revision 4,
        settled; the release ledger is as seeded; the bot serves 1.3.0-bad; call counts zero."""
        for svc in self.describe(services):
            if self.revision(svc) != BAD_REVISION:
                self.ecs.update_service(cluster=CLUSTER, service=svc["serviceName"], taskDefinition=f"{FAMILY}:{BAD_REVISION}")
        self.wait_settled(services, BAD_REVISION)
        for svc in self.describe(services):
            self.ecs.untag_resource(resourceArn=svc["serviceArn"], tagKeys=LEDGER_KEYS_TO_CLEAR)
            self.ecs.tag_resource(resourceArn=svc["serviceArn"],
                                  tags=[{"key": TAG_LAST_STABLE, "value": f"{FAMILY}:{STABLE_REVISION}"}])
        for rev in (2, 3, 4, 5):
            arn = f"arn:aws:ecs:{self.region}:{sandbox_state.ACCOUNT_ID}:task-definition/{FAMILY}:{rev}"
            if rev == STABLE_REVISION and self.stable_tag_value:
                self.ecs.tag_resource(resourceArn=arn, tags=[{"key": TAG_STABLE_ON_REVISION, "value": self.stable_tag_value}])
            else:
                self.ecs.untag_resource(resourceArn=arn, tagKeys=[TAG_STABLE_ON_REVISION])
        if SERVICE in services:
            self.wait_bot_version(self.st["ecs"]["images"][str(BAD_REVISION)].rsplit(":", 1)[1])
        self.reset_calls()

    def bot_version(self) -> str | None:
        try:
            body = procs.http_json(self.st["bot"]["url"] + "/api/health", timeout=5)[1]
        except OSError:
            return None
        return body.get("version") if isinstance(body, dict) else None

    def wait_bot_version(self, version: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.bot_version() != version:
            if time.monotonic() > deadline:
                raise BenchError(f"the bot does not serve {version} after {timeout}s (serves {self.bot_version()})")
            time.sleep(0.05)

    def rolled_back(self, services: list[str]) -> list[str]:
        """Services NOT on the stable revision now (empty list = all rolled back)."""
        return [s["serviceName"] for s in self.describe(services) if self.revision(s) != STABLE_REVISION]


# ------------------------------------------------------------------------ the runbook's way (awscli)


def waiter_stable(services: list[dict[str, Any]]) -> bool:
    """botocore's ECS services-stable acceptor: every service has exactly one
    deployment and runningCount == desiredCount."""
    return all(len(s.get("deployments") or []) == 1 and s.get("runningCount") == s.get("desiredCount") for s in services)


class Cli:
    def __init__(self, sandbox: Sandbox, home: Path) -> None:
        self.sandbox = sandbox
        self.env = sandbox.aws_env(home)

    def aws(self, steps: list[dict[str, Any]], name: str, *args: str, parse: bool = True) -> Any:
        cmd = [AWS, "--endpoint-url", self.sandbox.endpoint, "--region", self.sandbox.region, "--output", "json", "ecs", *args]
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=False, timeout=900)
        steps.append({"step": name, "s": round(time.perf_counter() - started, 3)})
        if proc.returncode != 0:
            raise BenchError(f"`aws ecs {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return json.loads(proc.stdout) if parse and proc.stdout.strip() else None

    def rollback(self, service: str, waiter: str) -> dict[str, Any]:
        """The runbook's Option A for one service. "Previous revision" is read as the
        highest ACTIVE revision below the one the service runs (describe-services first):
        the list's second newest would be revision 4 itself, since revision 5 (never
        deployed) is ACTIVE and newest."""
        steps: list[dict[str, Any]] = []
        started = time.perf_counter()
        described = self.aws(steps, "describe-services", "describe-services", "--cluster", CLUSTER, "--services", service)
        current = int(described["services"][0]["taskDefinition"].rsplit(":", 1)[1])
        listed = self.aws(steps, "list-task-definitions", "list-task-definitions", "--family-prefix", FAMILY, "--status", "ACTIVE")
        revisions = sorted(int(arn.rsplit(":", 1)[1]) for arn in listed["taskDefinitionArns"]
                           if arn.rsplit("/", 1)[1].rsplit(":", 1)[0] == FAMILY)  # --family-prefix is a prefix match
        older = [r for r in revisions if r < current]
        if not older:
            raise BenchError(f"no ACTIVE revision below {current} in {revisions}")
        previous = older[-1]
        self.aws(steps, "describe-task-definition", "describe-task-definition", "--task-definition", f"{FAMILY}:{previous}")
        self.aws(steps, "update-service", "update-service", "--cluster", CLUSTER, "--service", service,
                 "--task-definition", f"{FAMILY}:{previous}")
        polls = 0
        if waiter == "wait15":
            self.aws(steps, "wait services-stable", "wait", "services-stable", "--cluster", CLUSTER, "--services", service, parse=False)
        else:
            while True:
                polls += 1
                answer = self.aws(steps, "describe-services (poll)", "describe-services", "--cluster", CLUSTER, "--services", service)
                if waiter_stable(answer["services"]):
                    break
                time.sleep(1.0)
        return {"s": time.perf_counter() - started, "from": current, "to": previous, "listed": revisions,
                "polls": polls, "steps": steps}


# ------------------------------------------------------------------------ our way (ansible-playbook)


def phase_of(task: dict[str, Any]) -> str:
    role, where = task.get("role") or "", (task.get("path") or "") + " " + (task.get("name") or "")
    if role == "preflight":
        return "preflight"
    if role == "verify":
        return "verify"
    if role == "app_release":
        return "mark_stable" if "mark_stable" in where else "rollback+wait"
    return "playbook tasks"


def playbook_phases(timing: dict[str, Any], launched: float, exited: float) -> dict[str, Any]:
    """Seconds per phase from the bench_timing callback's task start times; a task lasts
    until the next one starts (so strategy/fork overhead is charged to the task)."""
    tasks = sorted(timing.get("tasks") or [], key=lambda t: t["start"])
    end = timing.get("stats") or exited
    phases: dict[str, float] = {"startup": (tasks[0]["start"] if tasks else end) - launched}
    per_task = []
    for i, task in enumerate(tasks):
        finish = tasks[i + 1]["start"] if i + 1 < len(tasks) else end
        phase = phase_of(task)
        phases[phase] = phases.get(phase, 0.0) + finish - task["start"]
        per_task.append({"task": task["name"], "phase": phase, "s": round(finish - task["start"], 3)})
    phases["exit"] = exited - end
    return {"phases": {k: round(v, 3) for k, v in phases.items()}, "tasks": per_task}


class Playbook:
    def __init__(self, sandbox: Sandbox, workdir: Path, keep_logs: bool) -> None:
        self.sandbox = sandbox
        self.workdir = workdir
        self.keep_logs = keep_logs
        self.runs = 0

    def run(self, label: str, inventory: Path | None = None, forks: int | None = None,
            extra_vars: list[str] | None = None, timeout: float = 1200, pipelining: bool = False) -> dict[str, Any]:
        self.runs += 1
        stem = f"playbook-{self.runs:03d}-{label}"
        log_path, timing_path = self.workdir / f"{stem}.log", self.workdir / f"{stem}.timing.json"
        # AWS credentials from the environment, as AWX's credential (and the CLI here) gets them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=self.sandbox.st["aws"]["access_key_id"],
            AWS_SECRET_ACCESS_KEY=self.sandbox.secrets["aws_secret_access_key"],
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            HOTELBOT_SANDBOX_DIR=str(self.sandbox.dir),
            ANSIBLE_CALLBACK_PLUGINS=str(CALLBACK_DIR),
            ANSIBLE_CALLBACKS_ENABLED="bench_timing",
            HOTELBOT_BENCH_TIMING_FILE=str(timing_path),
            ANSIBLE_NOCOLOR="1",
        )
        if pipelining:
            env["ANSIBLE_PIPELINING"] = "True"
        cmd = [ANSIBLE_PLAYBOOK, "rollback.yml"]
        if inventory:
            cmd += ["-i", str(inventory)]
        if forks:
            cmd += ["--forks", str(forks)]
        for extra in extra_vars or []:
            cmd += ["-e", extra]
        launched = time.time()
        started = time.perf_counter()
        with open(log_path, "w") as out:
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=timeout)
        seconds = time.perf_counter() - started
        exited = time.time()
        output = log_path.read_text()
        result: dict[str, Any] = {"s": seconds, "rc": proc.returncode, "cmd": " ".join(cmd[1:])}
        try:
            timing = json.loads(timing_path.read_text())
            result.update(playbook_phases(timing, launched, exited))
            result["failed_tasks"] = timing.get("failed") or []
        except (OSError, ValueError):
            result["phases"] = {}
        if proc.returncode != 0:
            result["log"] = str(log_path)
            result["output_tail"] = output[-2500:]
        elif not self.keep_logs:
            log_path.unlink(missing_ok=True)
        timing_path.unlink(missing_ok=True)
        return result


# A sandbox value the inventory reads from the state file: "{{ hotelbot_sandbox.a.b }}".
SANDBOX_REFERENCE = re.compile(r'"\{\{ hotelbot_sandbox\.([a-z_.]+) \}\}"')


def production_group_vars(sandbox: "Sandbox") -> str:
    """The sandbox's group_vars in production's shape (inventory/production): plain values, read
    once here from the state file instead of a lookup per use; AWS credentials left to the
    environment, as AWX's credential injects them (and as the CLI gets them); the release lock in
    DynamoDB, production's default on ECS; the bot's tokens still read from the sandbox's 0600
    secrets file by a lookup, as a vault lookup would be."""
    text = (REPO / "inventory" / "sandbox" / "group_vars" / "hotelbot.yml").read_text()
    lines = []
    for line in text.splitlines():
        if line.startswith(("hotelbot_sandbox:", "hotelbot_aws_access_key:", "hotelbot_aws_secret_key:")):
            continue
        if line.startswith("hotelbot_sandbox_dir:"):
            line = "hotelbot_sandbox_dir: " + json.dumps(str(sandbox.dir))
        if line.startswith("hotelbot_lock_backend:"):
            # Production's lock on ECS (inventory/production); the sandbox keeps PostgreSQL for its tests.
            line = "hotelbot_lock_backend: dynamodb"
        lines.append(line)
    return plain_sandbox_values("\n".join(lines) + "\n", sandbox.st)


def plain_sandbox_values(text: str, st: dict[str, Any]) -> str:
    """inventory/sandbox's group_vars text with every "{{ hotelbot_sandbox.a.b }}" replaced by the value in the
    state file st, as production's inventory holds plain values; BenchError when one is left."""
    def plain(match: re.Match[str]) -> str:
        value: Any = st
        for key in match.group(1).split("."):
            value = value[key]
        return json.dumps(value)

    text = SANDBOX_REFERENCE.sub(plain, text)
    if "hotelbot_sandbox." in text:
        raise BenchError("inventory/sandbox reads a sandbox value this benchmark cannot make plain")
    return text


def write_inventory(workdir: Path, services: list[str], sandbox: "Sandbox") -> Path:
    """A YAML inventory with one host per service and the sandbox's group_vars in production's shape."""
    inv = workdir / f"inventory-{len(services)}"
    shutil.rmtree(inv, ignore_errors=True)
    (inv / "group_vars").mkdir(parents=True)
    (inv / "group_vars" / "hotelbot.yml").write_text(production_group_vars(sandbox))
    hosts = {}
    for i, name in enumerate(services, 1):
        hosts[f"svc{i:02d}"] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "hotelbot_ecs_service": name,
        }
    # JSON is YAML: no PyYAML needed to write it.
    (inv / "hosts.yml").write_text(json.dumps({"hotelbot": {"hosts": hosts}}, indent=2) + "\n")
    return inv


# ------------------------------------------------------------------------ measurements


def children_cpu() -> float:
    """User + system CPU seconds of every finished child process (and theirs): unlike
    wall time, hardly affected by other load on the machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summarize(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"n": 0}
    return {"n": len(samples), "median_s": round(statistics.median(samples), 3), "min_s": round(min(samples), 3),
            "max_s": round(max(samples), 3), "samples_s": [round(s, 3) for s in samples]}


def merge_calls(calls: list[dict[str, int]]) -> dict[str, Any]:
    """Per operation: the count if identical in every trial, else min-max."""
    ops = sorted({op for c in calls for op in c})
    merged: dict[str, Any] = {}
    for op in ops:
        values = [c.get(op, 0) for c in calls]
        merged[op] = values[0] if len(set(values)) == 1 else f"{min(values)}-{max(values)}"
    totals = [sum(c.values()) for c in calls]
    merged["TOTAL"] = totals[0] if len(set(totals)) == 1 else f"{min(totals)}-{max(totals)}"
    return merged


def one_trial(way: str, sandbox: Sandbox, cli: Cli, playbook: Playbook, trial: int) -> dict[str, Any]:
    sandbox.put_on_bad_revision([SERVICE])
    record: dict[str, Any] = {"way": way, "trial": trial, "loadavg_1m": round(os.getloadavg()[0], 2)}
    cpu_before = children_cpu()
    try:
        if way.startswith("playbook"):
            res = playbook.run(f"main-{way}-t{trial}", inventory=write_inventory(playbook.workdir, [SERVICE], sandbox),
                               pipelining=way == "playbook-pipelining")
            record.update(res)
            record["ok"] = res["rc"] == 0
        else:
            res = cli.rollback(SERVICE, "wait15" if way == "cli-wait15" else "poll1")
            record.update(res)
            record["ok"] = True
    except (BenchError, subprocess.TimeoutExpired) as err:
        record.update(ok=False, error=str(err), s=None)
    record["cpu_s"] = round(children_cpu() - cpu_before, 3)
    record["calls"] = sandbox.calls()
    not_back = sandbox.rolled_back([SERVICE])
    if not_back:
        record["ok"] = False
        record.setdefault("error", f"service not on revision {STABLE_REVISION} afterwards")
    record["serving"] = control.serving(dir=sandbox.dir).get("image")
    return record


ROLLBACK_PART = ("startup", "preflight", "rollback+wait", "exit")


def run_comparison(sandbox: Sandbox, cli: Cli, playbook: Playbook, trials: int) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    for trial in range(1, trials + 1):
        # Rotate the order so that no way always runs first (warm caches) or last.
        shift = (trial - 1) % len(WAYS)
        order = WAYS[shift:] + WAYS[:shift]
        for way in order:
            rec = one_trial(way, sandbox, cli, playbook, trial)
            records.append(rec)
            status = "ok" if rec["ok"] else f"FAILED: {rec.get('error') or 'rc ' + str(rec.get('rc'))}"
            seconds = f"{rec['s']:.2f}s" if rec.get("s") is not None else "-"
            log(f"  trial {trial}/{trials} {way:<19} {seconds:>8}  cpu {rec['cpu_s']:5.2f}s  load {rec['loadavg_1m']:4.1f}  {status}")
            if not rec["ok"] and rec.get("output_tail"):
                log("    playbook output (tail):\n" + "\n".join("    | " + line for line in rec["output_tail"].splitlines()[-25:]))
    summary: dict[str, Any] = {}
    for way in WAYS:
        good = [r for r in records if r["way"] == way and r["ok"]]
        row = summary[way] = summarize([r["s"] for r in good])
        row["failed"] = len([r for r in records if r["way"] == way and not r["ok"]])
        row["calls"] = merge_calls([r["calls"] for r in good]) if good else {}
        if not good:
            continue
        row["cpu_median_s"] = round(statistics.median([r["cpu_s"] for r in good]), 3)
        if way.startswith("playbook"):
            names = sorted({k for r in good for k in r.get("phases", {})})
            row["phases_median_s"] = {k: round(statistics.median([r["phases"].get(k, 0.0) for r in good]), 3) for k in names}
            # What the CLI sequence also does (find the target, roll, wait), without verify and mark stable.
            row["rollback_part_median_s"] = round(statistics.median(
                [sum(r["phases"].get(k, 0.0) for k in ROLLBACK_PART) for r in good if r.get("phases")] or [0.0]), 3)
        else:
            names = []
            for r in good:
                for st in r["steps"]:
                    if st["step"] not in names:
                        names.append(st["step"])
            row["steps_median_s"] = {
                n: round(statistics.median([sum(st["s"] for st in r["steps"] if st["step"] == n) for r in good]), 3)
                for n in names}
            row["previous_revision_chosen"] = sorted({r["to"] for r in good})
            row["active_revisions_listed"] = good[0]["listed"]
    ratios = {}
    for pb_way in ("playbook", "playbook-pipelining"):
        pb = summary[pb_way]
        for way in CLI_WAYS:
            if pb.get("n") and summary[way].get("n"):
                ratios[f"{pb_way}/{way}"] = {
                    "median": round(pb["median_s"] / summary[way]["median_s"], 2),
                    "min": round(pb["min_s"] / summary[way]["min_s"], 2),
                    "cpu_median": round(pb["cpu_median_s"] / summary[way]["cpu_median_s"], 2),
                    "target": pb_way == "playbook",
                }
    return {"trials": trials, "summary": summary, "ratios": ratios, "records": records}


def run_scaling(sandbox: Sandbox, cli: Cli, playbook: Playbook, workdir: Path, counts: list[int], trials: int,
                cli_sequential: bool, cli_fast_median: float | None, extra_vars: list[str]) -> dict[str, Any]:
    biggest = max(counts)
    created_s = sandbox.create_extra_services(biggest)
    log(f"  created {biggest - 1} extra services and let them settle in {created_s:.1f}s (not timed)")
    rows = []
    for n in counts:
        services = [SERVICE] + sandbox.extra_services[:n - 1]
        inventory = write_inventory(workdir, services, sandbox)
        runs = []
        for trial in range(1, trials + 1):
            sandbox.put_on_bad_revision(services)
            load = round(os.getloadavg()[0], 2)
            cpu_before = children_cpu()
            res = playbook.run(f"scale{n}-t{trial}", inventory=inventory, forks=n, extra_vars=extra_vars)
            res["cpu_s"] = round(children_cpu() - cpu_before, 3)
            res["loadavg_1m"] = load
            res["calls"] = sandbox.calls()
            not_back = sandbox.rolled_back(services)
            res["ok"] = res["rc"] == 0 and not not_back
            if not_back:
                res["not_rolled_back"] = not_back
            runs.append(res)
            log(f"  {n:>2} service(s), --forks {n:<2} trial {trial}/{trials}: {res['s']:.2f}s  cpu {res['cpu_s']:.1f}s  load {load:.1f}  "
                f"{'ok' if res['ok'] else 'FAILED (rc %s, %d not rolled back)' % (res['rc'], len(not_back))}")
            if not res["ok"] and res.get("output_tail"):
                log("    playbook output (tail):\n" + "\n".join("    | " + line for line in res["output_tail"].splitlines()[-25:]))
        good = [r for r in runs if r["ok"]]
        stats = summarize([r["s"] for r in good])
        row: dict[str, Any] = {"services": n, "forks": n, **stats, "failed": len(runs) - len(good), "runs": runs}
        if good:
            row["s_per_service"] = round(stats["median_s"] / n, 3)
            row["calls"] = merge_calls([r["calls"] for r in good])
            row["calls_per_service"] = round(sum(good[0]["calls"].values()) / n, 1)
            row["cpu_median_s"] = round(statistics.median([r["cpu_s"] for r in good]), 3)
            row["cpu_per_service_s"] = round(row["cpu_median_s"] / n, 3)
            names = sorted({k for r in good for k in r.get("phases", {})})
            row["phases_median_s"] = {k: round(statistics.median([r["phases"].get(k, 0.0) for r in good]), 3) for k in names}
        rows.append(row)

    cli_row: dict[str, Any] = {"services": biggest, "waiter": "cli-poll1"}
    if cli_fast_median:
        # Reference for a noisy sequential run: N x the single-service median.
        cli_row["extrapolated_s"] = round(cli_fast_median * biggest, 3)
    if cli_sequential:
        services = [SERVICE] + sandbox.extra_services[:biggest - 1]
        sandbox.put_on_bad_revision(services)
        cpu_before = children_cpu()
        started = time.perf_counter()
        per_service, error = [], None
        try:
            for name in services:
                per_service.append(round(cli.rollback(name, "poll1")["s"], 3))
        except (BenchError, subprocess.TimeoutExpired) as err:
            error = str(err)
        total = time.perf_counter() - started
        cli_row["cpu_s"] = round(children_cpu() - cpu_before, 3)
        calls = sandbox.calls()
        not_back = sandbox.rolled_back(services)
        cli_row.update(measured=True, s=round(total, 3), s_per_service=round(total / biggest, 3), per_service_s=per_service,
                       calls=calls, calls_total=sum(calls.values()), ok=not error and not not_back, error=error)
        log(f"  CLI sequence x {biggest} services, one after the other: {total:.1f}s  {'ok' if cli_row['ok'] else 'FAILED'}")
    elif cli_fast_median:
        cli_row.update(measured=False, s=round(cli_fast_median * biggest, 3), s_per_service=round(cli_fast_median, 3),
                       note=f"extrapolated: {biggest} x the median of the single-service cli-poll1 trials")
        log(f"  CLI sequence x {biggest} services: extrapolated {cli_row['s']:.1f}s (--quick does not run it)")
    return {"created_extra_services_s": round(created_s, 3), "extra_vars": extra_vars, "playbook": rows, "cli_sequential": cli_row}


def run_realistic(sandbox: Sandbox, cli: Cli, playbook: Playbook, deploy_seconds: float) -> dict[str, Any]:
    """One trial of each way with a non-zero deployment time: shows what the waiters cost."""
    sandbox.set_deploy_seconds(deploy_seconds)
    out = {"deploy_seconds": deploy_seconds}
    try:
        for way in REALISTIC_WAYS:
            rec = one_trial(way, sandbox, cli, playbook, 1)
            out[way] = {"s": round(rec["s"], 3) if rec.get("s") is not None else None, "ok": rec["ok"],
                        "cpu_s": rec["cpu_s"], "calls": rec["calls"], "error": rec.get("error")}
            if way != "playbook" and rec.get("steps"):
                out[way]["steps"] = rec["steps"]
                out[way]["polls"] = rec.get("polls")
            if way == "playbook":
                out[way]["phases"] = rec.get("phases", {})
            log(f"  deploy_seconds={deploy_seconds:g}: {way:<11} "
                f"{(str(out[way]['s']) + 's') if out[way]['s'] is not None else '-':>8}  {'ok' if rec['ok'] else 'FAILED'}")
    finally:
        sandbox.set_deploy_seconds(0)
    return out


# ------------------------------------------------------------------------ report


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    aws_version = subprocess.run([AWS, "--version"], capture_output=True, text=True, check=False)
    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, check=False)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ansible_core": version_of("ansible-core"),
        "awscli": version_of("awscli"),
        "awscli_version_output": (aws_version.stdout or aws_version.stderr).strip(),  # names its bundled botocore
        "botocore": version_of("botocore"),
        "boto3": version_of("boto3"),
        "moto": version_of("moto"),
        "git": git.stdout.strip(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def fmt_s(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def print_report(result: dict[str, Any]) -> None:
    m = result["machine"]
    comp = result["comparison"]
    s = comp["summary"]
    log("")
    log("=" * 110)
    log(f"ECS rollback benchmark  {result['started_at']}  ({'quick' if result['quick'] else 'full'} run, "
        f"{comp['trials']} trials per way, deploy_seconds=0)")
    log(f"machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, ansible-core {m['ansible_core']}, "
        f"{m['awscli_version_output'].split(' Python')[0]} ({m['awscli_version_output'].rsplit(' ', 1)[-1]}), moto {m['moto']}")
    log(f"load average (1/5/15 min) at start {m['loadavg_at_start']}, at end {m.get('loadavg_at_end')}")
    log("")
    log(f"{'way':<50} {'median s':>9} {'min s':>7} {'max s':>7} {'cpu s':>7} {'ok':>5}")
    for way in WAYS:
        row = s[way]
        log(f"{WAY_LABELS[way]:<50} {fmt_s(row.get('median_s')):>9} {fmt_s(row.get('min_s')):>7} "
            f"{fmt_s(row.get('max_s')):>7} {fmt_s(row.get('cpu_median_s')):>7} {row.get('n', 0):>2}/{row.get('n', 0) + row['failed']:<2}")
    log("")
    for name, r in comp["ratios"].items():
        if r["target"]:
            verdict = "MET" if r["median"] <= TARGET_RATIO else f"MISSED by {(r['median'] / TARGET_RATIO - 1) * 100:.0f}%"
            verdict = f"target <= {TARGET_RATIO}x: {verdict}"
        else:
            verdict = "(informational)"
        log(f"ratio {name:<34} median {r['median']:.2f}x  min {r['min']:.2f}x  cpu {r['cpu_median']:.2f}x  {verdict}")
    order = ["startup", "preflight", "rollback+wait", "verify", "mark_stable", "playbook tasks", "exit"]
    for way in ("playbook", "playbook-pipelining"):
        ph = s[way].get("phases_median_s")
        if ph:
            log(f"{way} phases (median s): " + ", ".join(f"{k} {ph[k]:.2f}" for k in order if k in ph)
                + f"; rollback part only ({'+'.join(ROLLBACK_PART)}) {s[way]['rollback_part_median_s']:.2f}")
    for way in CLI_WAYS:
        if s[way].get("steps_median_s"):
            log(f"{way} steps (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in s[way]["steps_median_s"].items()))
    log("")
    ops = sorted({op for way in WAYS for op in s[way].get("calls", {}) if op != "TOTAL"}) + ["TOTAL"]
    widths = {"cli-wait15": 11, "cli-poll1": 10, "playbook": 9, "playbook-pipelining": 20}
    log(f"{'AWS API calls per rollback':<34} " + " ".join(f"{w:>{widths[w]}}" for w in WAYS))
    for op in ops:
        log(f"{op:<34} " + " ".join(f"{str(s[w].get('calls', {}).get(op, 0)):>{widths[w]}}" for w in WAYS))
    if result.get("realistic"):
        r = result["realistic"]
        log("")
        log(f"with deploy_seconds={r['deploy_seconds']:g} (the sandbox default), 1 trial each: " + ", ".join(
            f"{w} {fmt_s(r[w]['s'])}s" for w in REALISTIC_WAYS if w in r))
    if result.get("scaling"):
        sc = result["scaling"]
        log("")
        log("scaling: ansible-playbook rollback.yml --forks N, N services at once"
            + (f" (extra vars: {' '.join(sc['extra_vars'])})" if sc["extra_vars"] else ""))
        log(f"{'services':>8} {'forks':>6} {'wall s':>8} {'s/service':>10} {'cpu s':>7} {'cpu/svc':>8} {'API calls':>10} "
            f"{'calls/svc':>10} {'ok':>5}")
        for row in sc["playbook"]:
            calls = row.get("calls", {}).get("TOTAL", "-")
            log(f"{row['services']:>8} {row['forks']:>6} {fmt_s(row.get('median_s')):>8} {fmt_s(row.get('s_per_service')):>10} "
                f"{fmt_s(row.get('cpu_median_s')):>7} {fmt_s(row.get('cpu_per_service_s')):>8} {str(calls):>10} "
                f"{str(row.get('calls_per_service', '-')):>10} {row.get('n', 0):>2}/{row.get('n', 0) + row['failed']:<2}")
        big = sc["playbook"][-1]
        if big.get("cpu_per_service_s") is not None:
            met = big["cpu_per_service_s"] <= TARGET_CPU_PER_SERVICE
            log(f"CPU per service at {big['services']} services: {big['cpu_per_service_s']:.2f}s, target <= "
                f"{TARGET_CPU_PER_SERVICE}s: {'MET' if met else 'MISSED'}")
        c = sc["cli_sequential"]
        if c.get("s") is not None:
            how = "measured" if c.get("measured") else "EXTRAPOLATED from the single-service trials"
            log(f"CLI sequence (cli-poll1) x {c['services']}, one service after the other ({how}): {c['s']:.1f}s, "
                f"{c['s_per_service']:.2f}s/service, cpu {fmt_s(c.get('cpu_s'))}s, API calls {c.get('calls_total', '-')}")
            big = sc["playbook"][-1]
            if big.get("median_s"):
                line = f"playbook / CLI for {c['services']} services: {big['median_s'] / c['s']:.2f}x"
                if c.get("measured") and c.get("extrapolated_s"):
                    line += (f" (against {c['services']} x the single-service cli-poll1 median, "
                             f"{c['extrapolated_s']:.1f}s: {big['median_s'] / c['extrapolated_s']:.2f}x)")
                log(line)
    log("")
    log(f"results: {result.get('results_file')}")
    log("=" * 110)


# ------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 trials, no sequential 30-service CLI run (extrapolated), "
                        "no deploy_seconds=2 run; about 3-4 minutes")
    parser.add_argument("--trials", type=int, help="trials per way (default 5, --quick 2)")
    parser.add_argument("--scale", default="1,10,30", help="service counts for the scaling run (default 1,10,30; '' skips it)")
    parser.add_argument("--scale-trials", type=int, help="trials per scaling point (default 1)")
    parser.add_argument("--no-verify-version", action="store_true",
                        help="scaling run with -e rollback_verify_version=false")
    parser.add_argument("--keep-logs", action="store_true", help="keep the work dir (playbook logs, sandbox logs)")
    args = parser.parse_args(argv)
    trials = args.trials or (2 if args.quick else 5)
    counts = [int(x) for x in args.scale.split(",") if x.strip()]
    scale_trials = args.scale_trials or 1

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    started_at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    workdir = Path(tempfile.mkdtemp(prefix="hotelbot-bench-"))
    os.chmod(workdir, 0o755)  # PostgreSQL runs as its own OS user when we are root: it must traverse this
    result: dict[str, Any] = {
        "benchmark": "ecs_rollback", "started_at": started_at.isoformat(), "quick": args.quick,
        "machine": machine_info(), "target": {"playbook_over_cli_max": TARGET_RATIO, "cpu_per_service_max": TARGET_CPU_PER_SERVICE},
        "method": {
            "deploy_seconds": 0,
            "cli_sequence": ["aws ecs describe-services (to know the current revision)",
                             "aws ecs list-task-definitions --family-prefix hotel-voice-bot --status ACTIVE",
                             "aws ecs describe-task-definition --task-definition hotel-voice-bot:<prev>",
                             "aws ecs update-service --cluster .. --service .. --task-definition hotel-voice-bot:<prev>",
                             "cli-wait15: aws ecs wait services-stable | cli-poll1: aws ecs describe-services every 1 s"],
            "previous_revision": "highest ACTIVE revision below the current one (from describe-services)",
            "playbook": "ansible-playbook rollback.yml (inventory/sandbox), HOTELBOT_SANDBOX_DIR set",
            "start_state": "service on revision 4 settled, ledger tags as seeded, bot serving 1.3.0-bad, call counts reset",
        },
    }
    sandbox = Sandbox(workdir)
    exit_code = 0
    failed_ok = True
    try:
        log(f"work dir {workdir}; starting the sandbox")
        result["sandbox_up_s"] = round(sandbox.up(), 2)
        log(f"sandbox up in {result['sandbox_up_s']:.1f}s; deploy_seconds=0")
        cli = Cli(sandbox, workdir)
        playbook = Playbook(sandbox, workdir, args.keep_logs)

        log(f"comparison: {trials} trials of each way (single service {SERVICE})")
        bench_started = time.perf_counter()
        result["comparison"] = run_comparison(sandbox, cli, playbook, trials)
        result["comparison"]["elapsed_s"] = round(time.perf_counter() - bench_started, 1)
        failed_ok = all(r["ok"] for r in result["comparison"]["records"])

        if not args.quick:
            log("realistic deployment time: 1 trial of each way with deploy_seconds=2")
            result["realistic"] = run_realistic(sandbox, cli, playbook, 2.0)

        if counts:
            log(f"scaling: playbook with {counts} services (--forks N)")
            extra_vars = ["rollback_verify_version=false"] if args.no_verify_version else []
            cli_fast = result["comparison"]["summary"]["cli-poll1"].get("median_s")
            step_started = time.perf_counter()
            result["scaling"] = run_scaling(sandbox, cli, playbook, workdir, counts, scale_trials,
                                            cli_sequential=not args.quick, cli_fast_median=cli_fast, extra_vars=extra_vars)
            result["scaling"]["elapsed_s"] = round(time.perf_counter() - step_started, 1)
            failed_ok = failed_ok and all(r["ok"] for row in result["scaling"]["playbook"] for r in row["runs"])
    except (Exception, KeyboardInterrupt, SystemExit) as err:  # report, clean up, keep the partial results
        result["error"] = f"{type(err).__name__}: {err}"
        result["traceback"] = traceback.format_exc()
        log(f"benchmark aborted: {result['error']}")
        if not isinstance(err, (BenchError, KeyboardInterrupt, SystemExit)):
            log(result["traceback"])
        exit_code = 1
    finally:
        log("stopping the sandbox")
        sandbox.down()
    name = f"ecs_rollback-{started_at.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    return finish(result, name, print_report, workdir, args.keep_logs, exit_code, failed_ok)


def finish(result: dict[str, Any], name: str, report: Any, workdir: Path, keep_logs: bool, exit_code: int,
           all_ok: bool) -> int:
    """The end of every benchmark run: the results file (benchmarks/results/<name>), the report when
    there is something to report, the work dir kept when asked or when something failed; the exit status
    (the benchmark failed: 1, a trial failed: 2, else 0)."""
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["finished_at"] = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / name
    result["results_file"] = str(out.relative_to(REPO))
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if "comparison" in result:
        report(result)
    else:
        log(f"results: {out}")
    if keep_logs or exit_code or not all_ok:
        log(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return exit_code or (0 if all_ok else 2)


if __name__ == "__main__":
    sys.exit(main())
