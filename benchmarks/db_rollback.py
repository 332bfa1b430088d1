"""Database rollback benchmark: the runbook's `pg_dump > file.sql` / `psql < file.sql` against ours.

    .venv/bin/python benchmarks/db_rollback.py [--quick] [--rows N] [--no-jobs2] [--keep-logs]

Starts its own sandbox (a temporary HOTELBOT_SANDBOX_DIR, chmod 0755; `down` at the end,
always), sets the ECS double's simulated deployment time to zero (scaling to 0 and back is
instant, so the downtime measured is the database's, not a simulated rollout), fills
public.bot_messages to N rows (default 2,000,000; --quick 200,000) server-side, and then,
on the same cluster, with a prober hitting the bot's /api/health every 50 ms throughout:

1. the runbook's way (rollback runbook, Step 3): scale the service to 0 (UpdateService
   desiredCount=0), `pg_dump ... > file.sql`, `psql ... < file.sql` (the database is dropped
   and re-created first: a plain dump of an existing database replayed over it fails on
   every existing object), `SELECT COUNT(*)`, scale back to 3;
2. ours: `ansible-playbook playbooks/backup.yml` (custom format), then
   `ansible-playbook rollback.yml -e rollback_scope=db -e rollback_db_mode=offline` and
   `... rollback_db_mode=swap` with that backup;
3. the module logic in a fresh interpreter (pg_backup.backup(), pg_restore.restore(phase=
   prepare) with jobs=1 and jobs=2), for step timings and the peak RSS of the module process.

Results: a table on stdout and benchmarks/results/db_rollback-<timestamp>.json.
See benchmarks/README.md ("db_rollback.py").
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox import control  # noqa: E402
from sandbox import state as sandbox_state  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks" / "lib"))
from proc_cpu import postgres_cpu_s, rusage_cpu_s  # noqa: E402

VENV_BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = str(VENV_BIN / "ansible-playbook")
RESULTS_DIR = REPO / "benchmarks" / "results"
LIB_DIR = REPO / "benchmarks" / "lib"
CALLBACK_DIR = LIB_DIR / "callback_plugins"
COLLECTIONS = REPO / ".collections"

CLUSTER = sandbox_state.CLUSTER
SERVICE = sandbox_state.SERVICE
PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 1.0
TARGET_RESTORE_SPEEDUP = 1.25
TARGET_SIZE_RATIO = 0.2
TARGET_SWAP_DOWNTIME_S = 1.0


class BenchError(RuntimeError):
    pass


# Our ways: offline, swap (the default: no scale to zero), swap with the app scaled to zero around it.
MODES = ("offline", "swap", "swap_stop")


def log(msg: str) -> None:
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {msg}", flush=True)


# ------------------------------------------------------------------------ prober


class Prober(threading.Thread):
    """GET /api/health every 50 ms (a new connection each time, 1 s timeout); keeps (t, ok)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.samples: list[tuple[float, bool]] = []
        self._halt = threading.Event()

    def probe(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=PROBE_TIMEOUT)
        try:
            conn.request("GET", "/api/health")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def run(self) -> None:
        tick = time.monotonic()
        while not self._halt.is_set():
            started = time.monotonic()
            ok = self.probe()
            self.samples.append((started, ok))
            tick += PROBE_INTERVAL
            now = time.monotonic()
            if tick < now:  # a slow probe: do not fire a burst to catch up
                tick = now
            self._halt.wait(tick - now)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """Downtime in [t0, t1]: each failed probe counts until the next probe; longest outage
        = from a failed probe to the next successful one."""
        samples = [s for s in list(self.samples) if t0 <= s[0] <= t1]
        down = longest = 0.0
        outage_start = None
        failed = 0
        for i, (t, ok) in enumerate(samples):
            nxt = samples[i + 1][0] if i + 1 < len(samples) else t1
            if not ok:
                failed += 1
                down += nxt - t
                if outage_start is None:
                    outage_start = t
            elif outage_start is not None:
                longest = max(longest, t - outage_start)
                outage_start = None
        if outage_start is not None:
            longest = max(longest, t1 - outage_start)
        return {"probes": len(samples), "failed_probes": failed, "downtime_s": round(down, 3),
                "longest_outage_s": round(longest, 3), "window_s": round(t1 - t0, 3)}


# ------------------------------------------------------------------------ sandbox


class Sandbox:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "sandbox"
        self.log = workdir / "sandbox-up.log"
        self.st: dict[str, Any] = {}
        self.secrets: dict[str, str] = {}
        self._ecs: Any = None

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
        return time.perf_counter() - started

    def down(self) -> None:
        if self._sandbox("down").returncode != 0:
            log(f"WARNING: sandbox down reported a problem; see {self.log}")

    @property
    def pg(self) -> dict[str, Any]:
        return self.st["postgres"]

    @property
    def database(self) -> str:
        return self.pg["database"]

    def bin(self, name: str) -> str:
        return os.path.join(self.pg["bin_dir"], name) if self.pg.get("bin_dir") else name

    def params(self, database: str | None = None) -> dict[str, Any]:
        """Module params (pg_backup / pg_restore) for the superuser over the unix socket."""
        return {"host": self.pg["socket_dir"], "port": self.pg["port"], "user": self.pg["superuser"],
                "password": None, "database": database or self.database, "sslmode": None, "sslrootcert": None,
                "passfile": None, "connect_timeout": 10, "connect_params": {}}

    def libpq_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(PGHOST=self.pg["socket_dir"], PGPORT=str(self.pg["port"]), PGUSER=self.pg["superuser"],
                   PGDATABASE=self.database)
        return env

    def checkpoint(self) -> None:
        """Start every timed way from the same state: no dirty buffers and no WAL left over by
        the previous way (a restore writes ~1.4 GB of WAL; the checkpoint it triggers would
        otherwise land in whichever way runs next)."""
        with self.connect("postgres") as conn:
            conn.execute("CHECKPOINT")

    def connect(self, database: str | None = None) -> Any:
        import psycopg
        return psycopg.connect(host=self.pg["socket_dir"], port=self.pg["port"], user=self.pg["superuser"],
                               dbname=database or self.database, autocommit=True)

    @property
    def ecs(self) -> Any:
        if self._ecs is None:
            import boto3
            self._ecs = boto3.session.Session().client(
                "ecs", region_name=self.st["region"], endpoint_url=self.st["aws"]["endpoint_url"],
                aws_access_key_id=self.st["aws"]["access_key_id"],
                aws_secret_access_key=self.secrets["aws_secret_access_key"])
        return self._ecs

    def scale(self, count: int) -> None:
        self.ecs.update_service(cluster=CLUSTER, service=SERVICE, desiredCount=count)

    def service_counts(self) -> tuple[int, int]:
        svc = self.ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
        return svc["desiredCount"], svc["runningCount"]

    def wait_healthy(self, prober: Prober, timeout: float = 60) -> float:
        started = time.monotonic()
        while not prober.probe():
            if time.monotonic() - started > timeout:
                raise BenchError(f"the bot's /api/health is not 200 after {timeout}s")
            time.sleep(0.05)
        return time.monotonic() - started

    def drop_copies(self) -> list[str]:
        """Drop leftover <db>__restore_* / __pre_restore_* copies (between the ways, untimed)."""
        with self.connect("postgres") as conn:
            names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                                (self.database + "__",))]
            for name in names:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        return names

    def fingerprint(self) -> dict[str, Any]:
        with self.connect() as conn:
            count = conn.execute("SELECT count(*) FROM public.bot_messages").fetchone()[0]
            size = conn.execute("SELECT pg_table_size('public.bot_messages'), pg_indexes_size('public.bot_messages'), "
                                "pg_total_relation_size('public.bot_messages'), pg_database_size(current_database())"
                                ).fetchone()
            indexes = [r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public' "
                                                  "AND tablename = 'bot_messages' ORDER BY 1")]
        return {"rows": count, "table_bytes": size[0], "index_bytes": size[1], "total_bytes": size[2],
                "database_bytes": size[3], "indexes": indexes}


# ------------------------------------------------------------------------ data

BODIES = [
    "Hello, I would like to know what time breakfast is served tomorrow morning.",
    "Breakfast is served from 6:30 to 10:30 in the restaurant on the ground floor.",
    "Can I get a late checkout for room {room}? Our flight leaves in the evening.",
    "Of course! Late checkout until 14:00 is confirmed for room {room} at no extra charge.",
    "Is there parking at the hotel and how much does it cost per night?",
    "We have an underground garage; parking is 18 EUR per night, you can pay at the front desk.",
    "The air conditioning in room {room} is not working, could someone take a look please?",
    "I am sorry about that. A technician will come to room {room} within the next 30 minutes.",
    "Do you have a shuttle to the airport? We need to leave at 5 am.",
    "Yes, the airport shuttle leaves every hour from 4:00; please book it at reception the evening before.",
    "What is the wifi password?",
    "The network is HotelGuest and the password is printed on your key card holder.",
]


def fill(sb: Sandbox, rows: int, extra_indexes: bool) -> dict[str, Any]:
    """Fill public.bot_messages to `rows` rows with one server-side INSERT ... SELECT."""
    started = time.perf_counter()
    bodies = "ARRAY[" + ",".join("'" + b.replace("'", "''") + "'" for b in BODIES) + "]"
    with sb.connect() as conn:
        have = conn.execute("SELECT count(*) FROM public.bot_messages").fetchone()[0]
        if rows > have:
            conn.execute(f"""
                INSERT INTO public.bot_messages (message_id, phone_number, direction, body, payload, created_at)
                SELECT gen_random_uuid(),
                       '+49151' || lpad((g % 200000)::text, 7, '0'),
                       CASE WHEN g % 2 = 0 THEN 'inbound' ELSE 'outbound' END,
                       replace(({bodies})[1 + g % {len(BODIES)}], '{{room}}', (100 + g % 400)::text),
                       jsonb_build_object(
                           'messageId', 'wamid.' || md5(g::text),
                           'session', 'default',
                           'hotel', 'hotel-' || (g % 40),
                           'intent', (ARRAY['faq','checkout','parking','maintenance','shuttle','wifi'])[1 + g % 6],
                           'language', (ARRAY['en','de','es','fr'])[1 + g % 4],
                           'confidence', round((g % 1000) / 1000.0, 3),
                           'latency_ms', 120 + g % 900,
                           'ack', g % 3),
                       now() - make_interval(secs => g * 7)
                FROM generate_series(1, {rows - have}) AS g""")
        if extra_indexes:
            conn.execute("CREATE INDEX IF NOT EXISTS bot_messages_phone_number_idx "
                         "ON public.bot_messages (phone_number, created_at)")
        conn.execute("VACUUM (ANALYZE) public.bot_messages")
    info = sb.fingerprint()
    info["fill_s"] = round(time.perf_counter() - started, 1)
    return info


# ------------------------------------------------------------------------ the runbook's way


def runbook_way(sb: Sandbox, prober: Prober, workdir: Path) -> dict[str, Any]:
    steps: dict[str, float] = {}
    dump = workdir / "rollback-backup.sql"
    env = sb.libpq_env()

    def timed(name: str, fn: Any) -> Any:
        started = time.perf_counter()
        value = fn()
        steps[name] = round(time.perf_counter() - started, 3)
        return value

    t0 = time.monotonic()
    timed("scale_to_0", lambda: sb.scale(0))

    def pg_dump() -> None:
        with open(dump, "wb") as out:
            subprocess.run([sb.bin("pg_dump"), "-d", sb.database], env=env, stdout=out, check=True)
    timed("pg_dump_plain", pg_dump)
    size = dump.stat().st_size

    def recreate() -> None:
        with sb.connect("postgres") as conn:
            conn.execute(f'DROP DATABASE "{sb.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{sb.database}" OWNER "{sandbox_state.PG_USER}"')
    timed("drop_create_db", recreate)
    sb.checkpoint()  # not timed; every way starts from a checkpoint

    def psql() -> str:
        with open(dump, "rb") as src:
            done = subprocess.run([sb.bin("psql"), "-X", "-q", "-d", sb.database], env=env, stdin=src,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        if done.returncode != 0:
            raise BenchError(f"psql exited {done.returncode}: {done.stderr[-500:]!r}")
        return done.stderr.decode(errors="replace")
    errors = timed("psql_restore", psql)

    def select_count():
        return subprocess.run(
            [sb.bin("psql"), "-X", "-At", "-d", sb.database, "-c", "SELECT COUNT(*) FROM public.bot_messages;"],
            env=env, capture_output=True, text=True, check=True).stdout.strip()
    count = timed("select_count", select_count)
    timed("scale_to_3", lambda: sb.scale(3))
    recovered = sb.wait_healthy(prober)
    t1 = time.monotonic()
    dump.unlink()
    return {"total_s": round(t1 - t0, 3), "steps_s": steps, "plain_sql_bytes": size, "count": int(count),
            "psql_error_lines": sum(1 for line in errors.splitlines() if "ERROR" in line),
            "health_back_after_scale_s": round(recovered, 3), "prober": prober.window(t0, t1),
            "restore_s": steps["psql_restore"], "backup_s": steps["pg_dump_plain"]}


# ------------------------------------------------------------------------ ours: playbooks


def run_playbook(sb: Sandbox, workdir: Path, label: str, playbook: str, extra_vars: list[str],
                 keep_logs: bool) -> dict[str, Any]:
    log_path, results_path = workdir / f"{label}.log", workdir / f"{label}.results.json"
    env = dict(os.environ)
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), HOTELBOT_SANDBOX_DIR=str(sb.dir),
               ANSIBLE_CALLBACK_PLUGINS=str(CALLBACK_DIR), ANSIBLE_CALLBACKS_ENABLED="bench_results",
               HOTELBOT_BENCH_RESULTS_FILE=str(results_path), ANSIBLE_NOCOLOR="1",
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    sb.checkpoint()
    cmd = [ANSIBLE_PLAYBOOK, playbook]
    for extra in extra_vars:
        cmd += ["-e", extra]
    started_wall, started = time.time(), time.monotonic()
    with open(log_path, "w") as out:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=3600)
    seconds = time.monotonic() - started
    result: dict[str, Any] = {"cmd": "ansible-playbook " + " ".join(cmd[1:]), "rc": proc.returncode,
                              "total_s": round(seconds, 3), "t0": started, "t1": started + seconds}
    try:
        record = json.loads(results_path.read_text())
        # wall clock -> this process's monotonic clock
        offset = started - started_wall
        result["tasks"] = [dict(t, start_m=(t["start"] or 0) + offset, end_m=t["end"] + offset,
                                seconds=round(t["end"] - (t["start"] or t["end"]), 3)) for t in record["tasks"]]
    except (OSError, ValueError, KeyError):
        result["tasks"] = []
    if proc.returncode != 0:
        result["log"] = str(log_path)
        result["output_tail"] = log_path.read_text()[-3000:]
    elif not keep_logs:
        log_path.unlink(missing_ok=True)
    results_path.unlink(missing_ok=True)
    return result


def summarize_rollback(run: dict[str, Any], prober: Prober) -> dict[str, Any]:
    tasks = run["tasks"]
    out: dict[str, Any] = {"cmd": run["cmd"], "rc": run["rc"], "total_s": run["total_s"],
                           "prober": prober.window(run["t0"], run["t1"])}
    if run["rc"] != 0:
        out["output_tail"] = run.get("output_tail")
    restore_steps: list[dict[str, Any]] = []
    for t in tasks:
        if t["action"].endswith("pg_restore"):
            restore_steps += t["result"].get("steps") or []
        if t["action"].endswith("pg_backup"):
            out["safety_backup_s"] = t["seconds"]
            out["safety_backup_bytes"] = t["result"].get("size_bytes")
    out["pg_restore_steps_s"] = {s["step"]: s["seconds"] for s in restore_steps}
    out["restore_s"] = out["pg_restore_steps_s"].get("restore")
    out["tasks_s"] = [{"task": t["name"], "action": t["action"].rsplit(".", 1)[1], "s": t["seconds"],
                       "at_s": round(t["start_m"] - run["t0"], 3)} for t in tasks]
    # stop .. start of the app, as the playbook saw it (task start of the scale-to-0 to task end of the scale-back)
    stops = [t for t in tasks if t["action"].endswith("ecs_release") and "Stop" in t["name"]]
    starts = [t for t in tasks if t["action"].endswith("ecs_release") and "Start" in t["name"]]
    if stops and starts:
        out["app_stopped_window_s"] = round(starts[-1]["end_m"] - stops[0]["start_m"], 3)
    return out


# ------------------------------------------------------------------------ ours: module logic in a fresh interpreter

CHILD = r'''
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.hotelbot.ops.plugins.module_utils import pg_backup, pg_restore
job = json.loads(sys.argv[2])
cpu_marks = []
if job.get("postmaster"):
    # CPU used between the steps: the server's (postmaster and every backend) and ours (this
    # process and the client programs it ran), read at each step's end.
    sys.path.insert(0, sys.argv[3])
    from proc_cpu import postgres_cpu_s, rusage_cpu_s

    def cpu_now():
        return postgres_cpu_s(job["postmaster"]), rusage_cpu_s(resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    step = pg_restore.Restore.step
    def marked_step(self, name, started):
        step(self, name, started)
        cpu_marks.append((name,) + cpu_now())
    pg_restore.Restore.step = marked_step
    cpu_marks.append(("start",) + cpu_now())
started = time.perf_counter()
if job["what"] == "backup":
    result = pg_backup.backup(job["params"])
elif job["what"] == "swap":
    result = pg_restore.restore(job["params"], job["database"], job["src"], confirm=True, phase="swap",
                                scratch_database=job["scratch"])
else:
    result = pg_restore.restore(job["params"], job["database"], job["src"], confirm=True, jobs=job.get("jobs"),
                                phase="prepare", bin_dir=job.get("bin_dir"))
seconds = time.perf_counter() - started
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
step_cpu = dict((b[0], {"server_s": round(b[1] - a[1], 2), "client_s": round(b[2] - a[2], 2)})
                for a, b in zip(cpu_marks, cpu_marks[1:]))
print(json.dumps({"seconds": seconds, "maxrss_kib": me, "children_maxrss_kib": kids, "step_cpu": step_cpu,
                  "result": dict((k, result.get(k)) for k in ("steps", "size_bytes", "path", "dump_seconds",
                                                               "scratch_database", "elapsed_s", "format"))}))
'''


def child(workdir: Path, job: dict[str, Any]) -> dict[str, Any]:
    script = workdir / "child.py"
    script.write_text(CHILD)
    done = subprocess.run([sys.executable, str(script), str(COLLECTIONS), json.dumps(job), str(LIB_DIR)], cwd=REPO,
                          capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise BenchError(f"module child ({job['what']}) failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def inproc_backup(sb: Sandbox, workdir: Path, compress: str | None = None, keep: bool = False) -> dict[str, Any]:
    dest = workdir / ("inproc-backups" if compress is None else f"inproc-backups-compress-{compress}")
    params = dict(sb.params(), dest=str(dest), path=None, format="custom", compress=compress, jobs=None,
                  verify_tables=["public.bot_messages"], keep=None, pg_dump_path=sb.bin("pg_dump"), bin_dir=None,
                  extra_args=[])
    out = child(workdir, {"what": "backup", "params": params})
    if not keep:
        shutil.rmtree(dest, ignore_errors=True)
    r = out["result"]
    return {"compress": compress, "path": r.get("path") if keep else None, "s": round(out["seconds"], 3), "pg_dump_s": round(r.get("dump_seconds") or 0, 3),
            "size_bytes": r.get("size_bytes"), "module_peak_rss_mib": round(out["maxrss_kib"] / 1024, 1),
            "children_peak_rss_mib": round(out["children_maxrss_kib"] / 1024, 1)}


def inproc_restore(sb: Sandbox, workdir: Path, src: str, jobs: int | None, prober: Prober | None = None
                   ) -> dict[str, Any]:
    """restore(phase=prepare) in a fresh interpreter; with a prober, then the swap the way one process
    would do it (the floor of the swap-mode downtime without Ansible's per-task overhead): UpdateService
    desiredCount=0, restore(phase=swap) in a fresh interpreter, UpdateService desiredCount=3."""
    sb.drop_copies()
    sb.checkpoint()
    from sandbox import postgres as sandbox_pg
    out = child(workdir, {"what": "restore", "params": sb.params(), "database": sb.database, "src": src,
                          "jobs": jobs, "bin_dir": sb.pg.get("bin_dir"), "postmaster": sandbox_pg.postmaster_pid(sb.dir)})
    r = out["result"]
    swap: dict[str, Any] | None = None
    if prober is not None and r.get("scratch_database"):
        t0 = time.monotonic()
        sb.scale(0)
        done = child(workdir, {"what": "swap", "params": sb.params(), "database": sb.database, "src": src,
                               "scratch": r["scratch_database"]})
        sb.scale(3)
        sb.wait_healthy(prober)
        t1 = time.monotonic()
        swap = {"total_s": round(t1 - t0, 3), "steps_s": {s["step"]: s["seconds"] for s in done["result"].get("steps") or []},
                "prober": prober.window(t0 - 0.2, t1 + 0.2)}
    sb.drop_copies()
    steps = {s["step"]: s["seconds"] for s in r.get("steps") or []}
    return {"swap_one_process": swap, "jobs": jobs or 1, "s": round(out["seconds"], 3), "steps_s": steps, "restore_s": steps.get("restore"),
            "restore_cpu": out.get("step_cpu", {}).get("restore"),
            "module_peak_rss_mib": round(out["maxrss_kib"] / 1024, 1),
            "children_peak_rss_mib": round(out["children_maxrss_kib"] / 1024, 1)}


def server_cpu_s(sb: Sandbox) -> float:
    """CPU seconds the sandbox's PostgreSQL server has used so far."""
    from sandbox import postgres as sandbox_pg
    return postgres_cpu_s(sandbox_pg.postmaster_pid(sb.dir))


def restore_trials(sb: Sandbox, workdir: Path, backup_path: str, trials: int) -> dict[str, Any]:
    """The restore target on its own, with the noise of single runs on a shared 2-core VM averaged
    out: the runbook's `psql < file.sql` into a new database against our restore into a scratch
    database (jobs=2), interleaved, alternating which goes first, each after a CHECKPOINT."""
    plain = workdir / "trial-plain.sql"
    with open(plain, "wb") as out:
        subprocess.run([sb.bin("pg_dump"), "-d", sb.database], env=sb.libpq_env(), stdout=out, check=True)
    target = sb.database + "__psql_trial"
    psql_s: list[float] = []
    ours_s: list[float] = []
    cpu: dict[str, list[dict[str, float]]] = {"psql": [], "ours": []}

    def measured(way: str, fn: Any) -> None:
        server, client = server_cpu_s(sb), rusage_cpu_s(resource.RUSAGE_CHILDREN)
        fn()
        cpu[way].append({"server_s": round(server_cpu_s(sb) - server, 2),
                         "client_s": round(rusage_cpu_s(resource.RUSAGE_CHILDREN) - client, 2)})

    def psql_way() -> None:
        with sb.connect("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{target}" OWNER "{sandbox_state.PG_USER}"')
        sb.checkpoint()

        def psql() -> None:
            started = time.perf_counter()
            subprocess.run([sb.bin("psql"), "-X", "-q", "-d", target, "-f", str(plain)], env=sb.libpq_env(),
                           stdout=subprocess.DEVNULL, check=True)
            psql_s.append(round(time.perf_counter() - started, 3))
        measured("psql", psql)
        with sb.connect("postgres") as conn:
            conn.execute(f'DROP DATABASE "{target}" WITH (FORCE)')

    def our_way() -> None:
        run = inproc_restore(sb, workdir, backup_path, 2)
        ours_s.append(run["restore_s"])
        cpu["ours"].append(run["restore_cpu"])

    for trial in range(trials):
        for way in ((psql_way, our_way) if trial % 2 == 0 else (our_way, psql_way)):
            way()
        log(f"  trial {trial + 1}: psql {psql_s[-1]:.2f} s (CPU {cpu['psql'][-1]}), "
            f"ours {ours_s[-1]:.2f} s (CPU {cpu['ours'][-1]})")
    plain.unlink()
    median_psql, median_ours = statistics.median_high(psql_s), statistics.median_high(ours_s)
    cpus = os.cpu_count() or 1

    def cpu_summary(way: str, walls: list[float]) -> dict[str, Any]:
        totals = [c["server_s"] + c["client_s"] for c in cpu[way]]
        median_total = statistics.median_high(totals)
        return {"samples": cpu[way], "median_cpu_s": round(median_total, 2),
                "median_cores_busy": round(statistics.median_high(t / w for t, w in zip(totals, walls)), 2),
                # no way can finish faster than its CPU work spread over every core
                "floor_s": round(median_total / cpus, 2)}
    cpu_report = {"psql": cpu_summary("psql", psql_s), "ours": cpu_summary("ours", ours_s)}
    return {"psql_s": psql_s, "ours_jobs2_s": ours_s, "median_psql_s": median_psql, "median_ours_s": median_ours,
            "median_speedup": round(median_psql / median_ours, 3), "cpu": cpu_report,
            # the best ratio the hardware allows: psql's median wall time over our CPU floor
            "speedup_ceiling": round(median_psql / cpu_report["ours"]["floor_s"], 3)}


# ------------------------------------------------------------------------ report


def machine_info() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def mib(n: Any) -> str:
    return "-" if n is None else f"{n / 1048576:.1f} MiB"


def fmt(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    rb, ours = result.get("runbook") or {}, result.get("ours") or {}
    v: dict[str, Any] = {}
    plain, custom = rb.get("plain_sql_bytes"), (ours.get("backup_playbook") or {}).get("size_bytes")
    if plain and custom:
        ratio = custom / plain
        v["backup_size"] = {"ratio": round(ratio, 4), "target_max": TARGET_SIZE_RATIO, "met": ratio <= TARGET_SIZE_RATIO}
    psql_s = rb.get("restore_s")
    if psql_s:
        speed: dict[str, Any] = {}
        for label, value in (("playbook_offline", (ours.get("offline") or {}).get("restore_s")),
                             ("playbook_swap", (ours.get("swap") or {}).get("restore_s")),
                             *[(f"inproc_jobs{r['jobs']}", r.get("restore_s")) for r in ours.get("inproc_restore") or []],
                             *[(f"inproc_compress{v['compress']}_jobs1", v["restore"].get("restore_s"))
                               for v in ours.get("compress_variants") or []]):
            if value:
                speed[label] = {"restore_s": value, "speedup": round(psql_s / value, 3),
                                "met": psql_s / value >= TARGET_RESTORE_SPEEDUP}
        v["restore_speedup"] = {"psql_s": psql_s, "target_min": TARGET_RESTORE_SPEEDUP, "by_way": speed}
    trials = result.get("restore_trials")
    if trials:
        v["restore_speedup_trials"] = {"median_psql_s": trials["median_psql_s"], "median_ours_s": trials["median_ours_s"],
                                       "speedup": trials["median_speedup"], "target_min": TARGET_RESTORE_SPEEDUP,
                                       "met": trials["median_speedup"] >= TARGET_RESTORE_SPEEDUP}
    swap = (ours.get("swap") or {}).get("prober")
    if swap:
        v["swap_downtime"] = {"downtime_s": swap["downtime_s"], "longest_outage_s": swap["longest_outage_s"],
                              "target_max_s": TARGET_SWAP_DOWNTIME_S,
                              "met": swap["longest_outage_s"] < TARGET_SWAP_DOWNTIME_S
                              and swap["downtime_s"] < TARGET_SWAP_DOWNTIME_S}
    if rb.get("prober"):
        v["runbook_downtime_covers_restore"] = rb["prober"]["downtime_s"] >= rb["restore_s"]
    return v


def print_report(result: dict[str, Any]) -> None:
    data, rb, ours = result.get("data") or {}, result.get("runbook") or {}, result.get("ours") or {}
    log("=" * 112)
    log(f"db_rollback: bot_messages {data.get('rows', 0):,} rows, table {mib(data.get('table_bytes'))} + indexes "
        f"{mib(data.get('index_bytes'))} = {mib(data.get('total_bytes'))} ({len(data.get('indexes') or [])} indexes); "
        f"ECS deploy_seconds=0; prober every {PROBE_INTERVAL * 1000:.0f} ms")
    log(f"{'way':<44} {'backup s':>9} {'backup size':>13} {'restore s':>10} {'total s':>8} {'downtime s':>11} "
        f"{'longest s':>10}")
    rows = []
    if rb:
        rows.append(("runbook: pg_dump > .sql; psql < .sql", rb.get("backup_s"), rb.get("plain_sql_bytes"),
                     rb.get("restore_s"), rb.get("total_s"), rb.get("prober")))
    bp = ours.get("backup_playbook") or {}
    for mode in MODES:
        r = ours.get(mode)
        if r:
            rows.append((f"ours: rollback.yml mode={mode}", r.get("safety_backup_s"), r.get("safety_backup_bytes"),
                         r.get("restore_s"), r.get("total_s"), r.get("prober")))
    for label, b, size, rs, total, pr in rows:
        log(f"{label:<44} {fmt(b):>9} {mib(size):>13} {fmt(rs):>10} {fmt(total):>8} "
            f"{fmt((pr or {}).get('downtime_s'), '.3f'):>11} {fmt((pr or {}).get('longest_outage_s'), '.3f'):>10}")
    if bp:
        log(f"ours: playbooks/backup.yml (custom format): {fmt(bp.get('total_s'))} s whole playbook, pg_backup task "
            f"{fmt(bp.get('task_s'))} s (pg_dump {fmt(bp.get('pg_dump_s'))} s), {mib(bp.get('size_bytes'))}")
    ib = ours.get("inproc_backup")
    if ib:
        log(f"in-process pg_backup.backup(): {ib['s']:.2f} s (pg_dump {ib['pg_dump_s']:.2f} s), {mib(ib['size_bytes'])}, "
            f"module peak RSS {ib['module_peak_rss_mib']} MiB (pg_dump/pg_restore children {ib['children_peak_rss_mib']} MiB)")
    for r in ours.get("inproc_restore") or []:
        log(f"in-process pg_restore.restore(phase=prepare, jobs={r['jobs']}): {r['s']:.2f} s, steps "
            + ", ".join(f"{k} {v:.2f}" for k, v in r["steps_s"].items())
            + f"; module peak RSS {r['module_peak_rss_mib']} MiB (children {r['children_peak_rss_mib']} MiB)")
        sw = r.get("swap_one_process")
        if sw:
            log(f"  then scale 0 + restore(phase=swap) in a fresh interpreter + scale 3, no Ansible: {sw['total_s']:.2f} s, "
                f"downtime {sw['prober']['downtime_s']:.3f} s (longest {sw['prober']['longest_outage_s']:.3f} s); steps "
                + ", ".join(f"{k} {v:.2f}" for k, v in sw["steps_s"].items()))
    for v in ours.get("compress_variants") or []:
        b, r = v["backup"], v["restore"]
        log(f"in-process compress={v['compress']}: backup {b['s']:.2f} s (pg_dump {b['pg_dump_s']:.2f} s), "
            f"{mib(b['size_bytes'])} = {b['size_bytes'] / rb['plain_sql_bytes']:.3f} x plain SQL; restore jobs=1 "
            f"{fmt(r.get('restore_s'))} s" if rb.get("plain_sql_bytes") else f"in-process compress={v['compress']}: {v}")
    for mode in MODES:
        r = ours.get(mode)
        if r:
            log(f"{mode} pg_restore steps: " + ", ".join(f"{k} {v:.2f}" for k, v in r["pg_restore_steps_s"].items())
                + f"; app stopped (stop task start .. start task end) {fmt(r.get('app_stopped_window_s'))} s")
    if rb:
        log("runbook steps: " + ", ".join(f"{k} {v:.2f}" for k, v in rb["steps_s"].items())
            + f"; COUNT(*) = {rb.get('count')}; psql ERROR lines {rb.get('psql_error_lines')}")
    v = result.get("verdicts") or {}
    if "backup_size" in v:
        b = v["backup_size"]
        log(f"target backup <= {TARGET_SIZE_RATIO:g} x plain SQL: ratio {b['ratio']:.3f} -> {'MET' if b['met'] else 'MISSED'}")
    if "restore_speedup" in v:
        for label, s in v["restore_speedup"]["by_way"].items():
            log(f"target restore >= {TARGET_RESTORE_SPEEDUP}x faster than psql ({v['restore_speedup']['psql_s']:.2f} s): "
                f"{label} {s['restore_s']:.2f} s = {s['speedup']:.2f}x -> {'MET' if s['met'] else 'MISSED'}")
    if "restore_speedup_trials" in v:
        t = v["restore_speedup_trials"]
        log(f"target restore >= {TARGET_RESTORE_SPEEDUP}x faster than psql, median of the interleaved trials: psql "
            f"{t['median_psql_s']:.2f} s, ours (jobs=2) {t['median_ours_s']:.2f} s = {t['speedup']:.2f}x "
            f"-> {'MET' if t['met'] else 'MISSED'} (trials: psql {result['restore_trials']['psql_s']}, "
            f"ours {result['restore_trials']['ours_jobs2_s']})")
        cpu = result["restore_trials"].get("cpu")
        if cpu:
            log(f"CPU per restore (median, server + client): psql {cpu['psql']['median_cpu_s']:.1f} s on "
                f"{cpu['psql']['median_cores_busy']:.2f} cores, ours {cpu['ours']['median_cpu_s']:.1f} s on "
                f"{cpu['ours']['median_cores_busy']:.2f} cores of {os.cpu_count()}; our floor (CPU / cores) "
                f"{cpu['ours']['floor_s']:.2f} s: the most this machine allows is "
                f"{result['restore_trials']['speedup_ceiling']:.2f}x")
    if "swap_downtime" in v:
        s = v["swap_downtime"]
        log(f"target swap-mode downtime < {TARGET_SWAP_DOWNTIME_S:g} s: {s['downtime_s']:.3f} s (longest "
            f"{s['longest_outage_s']:.3f} s) -> {'MET' if s['met'] else 'MISSED'}")
    if "runbook_downtime_covers_restore" in v:
        log(f"runbook downtime >= its whole psql restore: {v['runbook_downtime_covers_restore']}")
    log(f"results: {result.get('results_file')}")
    log("=" * 112)


# ------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200,000 rows (unless --rows); a few minutes")
    parser.add_argument("--rows", type=int, help="rows in bot_messages (default 2,000,000; --quick 200,000)")
    parser.add_argument("--no-extra-index", action="store_true", help="no extra (phone_number, created_at) index")
    parser.add_argument("--no-inproc", action="store_true", help="skip the in-process module runs")
    parser.add_argument("--restore-trials", type=int, default=3,
                        help="interleaved psql-vs-ours restore trials for the restore target (0 skips)")
    parser.add_argument("--no-jobs2", action="store_true", help="in-process restore with jobs=1 only")
    parser.add_argument("--compress-variants", default="1,0",
                        help="extra in-process backup+restore (jobs=1) with pg_backup compress=LEVEL, comma-separated "
                             "(default 1,0; '' skips; PostgreSQL 15 here: gzip levels only)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the work dir (playbook logs, sandbox logs)")
    args = parser.parse_args(argv)
    rows = args.rows or (200_000 if args.quick else 2_000_000)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    started_at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    workdir = Path(tempfile.mkdtemp(prefix="hotelbot-dbbench-"))
    os.chmod(workdir, 0o755)  # PostgreSQL runs as its own OS user when we are root: it must traverse this
    result: dict[str, Any] = {
        "benchmark": "db_rollback", "started_at": started_at.isoformat(), "quick": args.quick, "rows_requested": rows,
        "machine": machine_info(),
        "targets": {"restore_speedup_min": TARGET_RESTORE_SPEEDUP, "backup_size_ratio_max": TARGET_SIZE_RATIO,
                    "swap_downtime_max_s": TARGET_SWAP_DOWNTIME_S},
        "method": {"deploy_seconds": 0, "probe_interval_s": PROBE_INTERVAL, "probe_timeout_s": PROBE_TIMEOUT,
                   "runbook": ["UpdateService desiredCount=0 (boto3)", "pg_dump -d DB > file.sql",
                               "DROP DATABASE .. WITH (FORCE); CREATE DATABASE .. OWNER hotelbot (emulates the intent: "
                               "a plain dump replayed over the live database fails on existing objects)",
                               "psql -d DB < file.sql", "psql -c 'SELECT COUNT(*) ...'",
                               "UpdateService desiredCount=3 (boto3)", "until /api/health is 200"],
                   "ours": ["ansible-playbook playbooks/backup.yml",
                            "ansible-playbook rollback.yml -e rollback_scope=db -e rollback_db_mode=offline -e rollback_db_backup=..",
                            "ansible-playbook rollback.yml -e rollback_scope=db -e rollback_db_mode=swap -e rollback_db_backup=..",
                            "module_utils in a fresh interpreter: pg_backup.backup(), pg_restore.restore(phase=prepare, jobs=1|2)"]},
    }
    sb = Sandbox(workdir)
    prober: Prober | None = None
    exit_code = 0
    try:
        log(f"work dir {workdir}; starting the sandbox")
        result["sandbox_up_s"] = round(sb.up(), 2)
        log(f"sandbox up in {result['sandbox_up_s']:.1f}s; ECS deploy_seconds=0 (scaling is instant)")
        log(f"filling public.bot_messages to {rows:,} rows")
        result["data"] = fill(sb, rows, not args.no_extra_index)
        d = result["data"]
        log(f"filled in {d['fill_s']}s: {d['rows']:,} rows, total {mib(d['total_bytes'])} (indexes {d['indexes']})")
        prober = Prober(sb.st["bot"]["url"])
        prober.start()
        sb.wait_healthy(prober)
        ours: dict[str, Any] = {}
        result["ours"] = ours

        log("ours: playbooks/backup.yml")
        run = run_playbook(sb, workdir, "backup", "playbooks/backup.yml", [], args.keep_logs)
        if run["rc"] != 0:
            raise BenchError(f"backup.yml failed: {run.get('output_tail')}")
        task = next(t for t in run["tasks"] if t["action"].endswith("pg_backup"))
        ours["backup_playbook"] = {"cmd": run["cmd"], "total_s": run["total_s"], "task_s": task["seconds"],
                                   "pg_dump_s": task["result"].get("dump_seconds"),
                                   "size_bytes": task["result"].get("size_bytes"), "path": task["result"].get("path"),
                                   "prober": prober.window(run["t0"], run["t1"])}
        backup_path = task["result"]["path"]
        log(f"backup.yml {run['total_s']:.1f}s, {mib(ours['backup_playbook']['size_bytes'])}")

        log("runbook's way: scale 0, pg_dump > .sql, drop/create, psql < .sql, COUNT(*), scale 3")
        result["runbook"] = runbook_way(sb, prober, workdir)
        log(f"runbook total {result['runbook']['total_s']:.1f}s, downtime {result['runbook']['prober']['downtime_s']:.1f}s")
        expected = result["runbook"]["count"]

        if not args.no_inproc:
            log("in-process: pg_backup.backup()")
            ours["inproc_backup"] = inproc_backup(sb, workdir)
            ours["inproc_restore"] = []
            for i, jobs in enumerate([None] if args.no_jobs2 else [None, 2]):
                log(f"in-process: pg_restore.restore(phase=prepare, jobs={jobs or 1})"
                    + (", then scale 0 / restore(phase=swap) / scale 3" if i == 0 else ""))
                ours["inproc_restore"].append(inproc_restore(sb, workdir, backup_path, jobs, prober if i == 0 else None))

            ours["compress_variants"] = []
            for level in [x.strip() for x in args.compress_variants.split(",") if x.strip()]:
                log(f"in-process: pg_backup.backup(compress={level}) and restore(phase=prepare, jobs=1) of it")
                b = inproc_backup(sb, workdir, compress=level, keep=True)
                r = inproc_restore(sb, workdir, b["path"], None)
                shutil.rmtree(Path(b["path"]).parent, ignore_errors=True)
                ours["compress_variants"].append({"compress": level, "backup": b, "restore": r})

        if args.restore_trials:
            log(f"restore head to head, {args.restore_trials} trials interleaved: psql < plain.sql against "
                f"pg_restore.restore(phase=prepare, jobs=2), each after a CHECKPOINT")
            result["restore_trials"] = restore_trials(sb, workdir, backup_path, args.restore_trials)

        for mode in MODES:
            log(f"ours: rollback.yml mode={mode}")
            extra = ["rollback_db_stop_app_for_swap=true"] if mode == "swap_stop" else []
            run = run_playbook(sb, workdir, f"rollback-{mode}", "rollback.yml",
                               ["rollback_scope=db", f"rollback_db_backup={backup_path}",
                                f"rollback_db_mode={mode.split('_', maxsplit=1)[0]}"] + extra,
                               args.keep_logs)
            ours[mode] = summarize_rollback(run, prober)
            fp = sb.fingerprint()
            ours[mode]["rows_after"] = fp["rows"]
            ours[mode]["service_after"] = list(sb.service_counts())
            ours[mode]["dropped_copies_after"] = sb.drop_copies()
            log(f"{mode}: rc {run['rc']}, {run['total_s']:.1f}s, downtime {ours[mode]['prober']['downtime_s']:.3f}s, "
                f"rows {fp['rows']:,} (runbook count {expected:,})")
            if run["rc"] != 0:
                exit_code = 2
    except (Exception, KeyboardInterrupt, SystemExit) as err:
        result["error"] = f"{type(err).__name__}: {err}"
        result["traceback"] = traceback.format_exc()
        log(f"benchmark aborted: {result['error']}")
        if not isinstance(err, (BenchError, KeyboardInterrupt, SystemExit)):
            log(result["traceback"])
        exit_code = 1
    finally:
        try:
            if prober is not None:
                prober.stop()
        finally:
            log("stopping the sandbox")
            sb.down()
    result["verdicts"] = verdicts(result)
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["machine"]["bench_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["finished_at"] = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"db_rollback-{started_at.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
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
