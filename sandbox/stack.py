"""up / down / status of the whole stack."""
from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from sandbox import postgres, procs, prometheus, seed, state

COMPONENTS = ("aws", "postgres", "bot", "bot_staging", "fly", "bot_fly", "bot_fly_staging", "prometheus")
# Processes `down` stops by pid (PostgreSQL stops through pg_ctl first).
PROCESSES = ("aws", "bot", "bot_staging", "fly", "bot_fly", "bot_fly_staging", "prometheus")
DEFAULT_DEPLOY_SECONDS = 2.0
# Seconds a Fly Machine takes from an update to `started` (the double's default, as in the benchmark).
FLY_START_SECONDS = 2.0
# The Fly double checks every request and response against Fly's spec (openapi-core, graphql-core);
# HOTELBOT_SANDBOX_FLY_VALIDATE=0 turns that off (the benchmark, which measures call latency).
ENV_FLY_VALIDATE = "HOTELBOT_SANDBOX_FLY_VALIDATE"


def _python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _child_env() -> dict[str, str]:
    # Children import `sandbox` from the repo, whatever the caller's cwd is.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(state.REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tcp_ok(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _checks(dir: Path, st: dict[str, Any]) -> dict[str, tuple[bool, int | None, str]]:
    """component -> (alive, pid, where)."""
    marker = str(dir)
    pg_pid = postgres.postmaster_pid(dir)
    aws, bot, prom, pg = st.get("aws", {}), st.get("bot", {}), st.get("prometheus", {}), st.get("postgres", {})
    staging, fly = st.get("bot_staging", {}), st.get("fly", {})

    def bot_check(name: str) -> tuple[bool, int | None, str]:
        entry = st.get(name, {})
        return (procs.ours(entry.get("pid"), marker) and procs.http_ok(f"{entry.get('url')}/metrics"),
                entry.get("pid"), str(entry.get("url")))

    return {
        "aws": (procs.ours(aws.get("pid"), marker) and procs.http_ok(f"{aws.get('control_url')}/sandbox/health"),
                aws.get("pid"), f"{aws.get('endpoint_url')} (control {aws.get('control_url')})"),
        "postgres": (procs.ours(pg_pid, marker) and _tcp_ok(pg.get("host", "127.0.0.1"), pg.get("port", 0)),
                     pg_pid, f"{pg.get('host')}:{pg.get('port')}"),
        "bot": (procs.ours(bot.get("pid"), marker) and procs.http_ok(f"{bot.get('url')}/metrics"),
                bot.get("pid"), str(bot.get("url"))),
        "bot_staging": (procs.ours(staging.get("pid"), marker) and procs.http_ok(f"{staging.get('url')}/metrics"),
                        staging.get("pid"), str(staging.get("url"))),
        "fly": (procs.ours(fly.get("pid"), marker) and _fly_ok(fly.get("control_url")),
                fly.get("pid"), f"{fly.get('api_url')} (apps {fly.get('app')}, {fly.get('staging_app')})"),
        "bot_fly": bot_check("bot_fly"),
        "bot_fly_staging": bot_check("bot_fly_staging"),
        "prometheus": (procs.ours(prom.get("pid"), marker) and procs.http_ok(f"{prom.get('url')}/-/healthy"),
                       prom.get("pid"), str(prom.get("url"))),
    }


def _fly_ok(control_url: str | None) -> bool:
    return bool(control_url) and procs.http_ok(f"{control_url}/sandbox/fly/state")


def status(dir: Path) -> int:
    try:
        st = state.load(dir)
    except FileNotFoundError:
        print(f"sandbox in {dir} is not running (no state.json)")
        return 1
    checks = _checks(dir, st)
    all_up = all(check[0] for check in checks.values())
    print(f"sandbox in {dir}: {'up' if all_up else 'DEGRADED'}")
    for name in COMPONENTS:
        ok, pid, where = checks[name]
        print(f"  {name:<11} {'up' if ok else 'DOWN':<5} pid {pid or '-':<8} {where}")
    return 0 if all_up else 1


def _step(label: str, fn: Callable[[], Any]) -> Any:
    started = time.monotonic()
    result = fn()
    print(f"  {label:<34} {time.monotonic() - started:5.2f}s", flush=True)
    return result


def up(dir: Path) -> int:
    if state.state_path(dir).exists():
        if all(check[0] for check in _checks(dir, state.load(dir)).values()):
            print(f"sandbox in {dir} is already up")
            return 0
        print("found a stale or partial sandbox: cleaning it up first")
        down(dir, quiet=True)
    elif state.load_procs(dir):
        down(dir, quiet=True)
    try:
        prometheus.binary()
        postgres.check_binaries()
    except RuntimeError as err:
        print(f"sandbox up: {err}", file=sys.stderr)
        return 1

    started = time.monotonic()
    print(f"starting sandbox in {dir}", flush=True)
    try:
        st = _start(dir)
    except (Exception, KeyboardInterrupt) as err:
        print(f"sandbox up failed: {type(err).__name__}: {err}", file=sys.stderr)
        print(f"logs: {state.logs_dir(dir)}; stopping what was started", file=sys.stderr)
        down(dir, quiet=True)
        return 1
    print(f"sandbox up in {time.monotonic() - started:.1f}s: state {state.state_path(dir)}")
    print(f"  aws {st['aws']['endpoint_url']}  bot {st['bot']['url']}  prometheus {st['prometheus']['url']}  "
          f"postgres {st['postgres']['host']}:{st['postgres']['port']}")
    print(f"  fly {st['fly']['api_url']}  bot (fly) {st['bot_fly']['url']}")
    return 0


def _start(dir: Path) -> dict[str, Any]:
    for path in (dir, state.logs_dir(dir), state.run_dir(dir)):
        path.mkdir(parents=True, exist_ok=True)
    os.chmod(dir, 0o755)  # the postgres OS user must traverse it when we are root
    secrets = state.new_secrets()
    state.save_secrets(dir, secrets)
    ports = procs.free_ports(9)
    aws_port, control_port, bot_port, prom_port, pg_port, staging_port = ports[:6]
    fly_port, fly_bot_port, fly_staging_port = ports[6:]
    fly_url = f"http://127.0.0.1:{fly_port}"
    logs, marker, env = state.logs_dir(dir), str(dir), _child_env()
    st: dict[str, Any] = {
        "dir": marker,
        "region": state.REGION,
        "aws": {"endpoint_url": f"http://127.0.0.1:{aws_port}", "control_url": f"http://127.0.0.1:{control_port}",
                "access_key_id": state.AWS_ACCESS_KEY_ID, "pid": None},
        "ecs": {},
        "elbv2": {},
        "postgres": {"host": "127.0.0.1", "port": pg_port, "user": state.PG_USER, "database": state.PG_DATABASE,
                     "bin_dir": str(postgres.BIN_DIR), "data_dir": str(postgres.data_dir(dir)),
                     "superuser": state.PG_SUPERUSER, "socket_dir": str(postgres.socket_dir(dir))},
        "bot": {"url": f"http://127.0.0.1:{bot_port}", "pid": None},
        "bot_staging": {"url": f"http://127.0.0.1:{staging_port}", "pid": None},
        # The Fly double serves the Machines API (under /v1), GraphQL and its control endpoints on one port.
        "fly": {"api_url": fly_url, "graphql_url": f"{fly_url}/graphql", "control_url": fly_url,
                "app": state.FLY_APP, "staging_app": state.FLY_STAGING_APP, "pid": None},
        "bot_fly": {"url": f"http://127.0.0.1:{fly_bot_port}", "pid": None, "app": state.FLY_APP},
        "bot_fly_staging": {"url": f"http://127.0.0.1:{fly_staging_port}", "pid": None, "app": state.FLY_STAGING_APP},
        "prometheus": {"url": f"http://127.0.0.1:{prom_port}", "pid": None, "job": state.PROMETHEUS_JOB,
                       "staging_job": state.PROMETHEUS_STAGING_JOB, "fly_job": state.PROMETHEUS_FLY_JOB,
                       "fly_staging_job": state.PROMETHEUS_FLY_STAGING_JOB},
    }
    control = st["aws"]["control_url"]

    # Slow starters first and in parallel: moto takes seconds to import, PostgreSQL
    # ~1-3s for initdb + start, Prometheus ~1s. Seeding needs only the AWS side.
    aws_pid = st["aws"]["pid"] = procs.spawn(
        _python_module("sandbox.aws_server", "--dir", marker, "--port", str(aws_port), "--control-port", str(control_port)),
        logs / "aws.log", cwd=state.REPO_ROOT, env=env)
    state.record_proc(dir, "aws", aws_pid)
    prom_pid = st["prometheus"]["pid"] = prometheus.start(dir, prom_port, bot_port, staging_port,
                                                          fly_bot_port, fly_staging_port)
    state.record_proc(dir, "prometheus", prom_pid)
    fly_pid = st["fly"]["pid"] = procs.spawn(_fly_command(dir, fly_port, secrets["fly_api_token"]),
                                             logs / "fly.log", cwd=state.REPO_ROOT, env=env)
    state.record_proc(dir, "fly", fly_pid)

    def start_postgres() -> None:
        _step("postgres: initdb + start", lambda: postgres.init_and_start(dir, pg_port))
        state.record_proc(dir, "postgres", postgres.postmaster_pid(dir) or 0)
        _step("postgres: schema + 1000 rows", lambda: postgres.bootstrap(dir, pg_port, secrets["postgres_password"]))

    def start_aws() -> None:
        _step("aws: moto + controller", lambda: procs.wait_for(
            lambda: procs.http_ok(f"{control}/sandbox/health"), 30, "the AWS server", aws_pid, logs / "aws.log"))
        # The service's first deployment is no scenario of ours: let it settle at once.
        procs.http_json(f"{control}/sandbox/config", "POST", {"deploy_seconds": 0})
        st.update(_step("aws: seed ECS/ELBv2", lambda: seed.seed(st, secrets["postgres_password"])))
        _step("ecs: initial deployment settled", lambda: procs.wait_for(
            lambda: seed.service_settled(st), 20, "the ECS service to settle", aws_pid, logs / "aws.log"))
        procs.http_json(f"{control}/sandbox/config", "POST", {"deploy_seconds": DEFAULT_DEPLOY_SECONDS})

    def start_fly() -> None:
        _step("fly: Machines API + GraphQL double", lambda: procs.wait_for(
            lambda: _fly_ok(fly_url), 30, "the Fly double", fly_pid, logs / "fly.log"))

    with ThreadPoolExecutor(max_workers=3) as pool:
        for future in [pool.submit(start_postgres), pool.submit(start_aws), pool.submit(start_fly)]:
            future.result()  # re-raises a failure of any side
    state.save(dir, st)  # the bot reads its config from here

    traffic = ["--traffic-rps", str(state.TRAFFIC_RPS)]
    bot_pid = st["bot"]["pid"] = procs.spawn(
        _python_module("sandbox.bot", "--dir", marker, "--port", str(bot_port), *traffic),
        logs / "bot.log", cwd=state.REPO_ROOT, env=env)
    state.record_proc(dir, "bot", bot_pid)
    staging_pid = st["bot_staging"]["pid"] = procs.spawn(
        _python_module("sandbox.bot", "--dir", marker, "--port", str(staging_port),
                       "--service", state.STAGING_SERVICE, *traffic),
        logs / "bot-staging.log", cwd=state.REPO_ROOT, env=env)
    state.record_proc(dir, "bot_staging", staging_pid)
    for name, log in (("bot_fly", "bot-fly.log"), ("bot_fly_staging", "bot-fly-staging.log")):
        bot_port_of = st[name]["url"].rsplit(":", 1)[1]
        st[name]["pid"] = procs.spawn(
            _python_module("sandbox.bot", "--dir", marker, "--port", bot_port_of, "--fly-app", st[name]["app"], *traffic),
            logs / log, cwd=state.REPO_ROOT, env=env)
        state.record_proc(dir, name, st[name]["pid"])
    _step("bot: /api/health", lambda: procs.wait_for(
        lambda: procs.http_ok(f"{st['bot']['url']}/api/health"), 15, "the bot", bot_pid, logs / "bot.log"))
    _step("bot (staging): /api/health", lambda: procs.wait_for(
        lambda: procs.http_ok(f"{st['bot_staging']['url']}/api/health"), 15, "the staging bot", staging_pid,
        logs / "bot-staging.log"))
    for name, log in (("bot_fly", "bot-fly.log"), ("bot_fly_staging", "bot-fly-staging.log")):
        _step(f"{name}: /api/health", lambda name=name, log=log: procs.wait_for(
            lambda: _follows_platform(f"{st[name]['url']}/api/health"), 15, f"the bot {name}", st[name]["pid"], logs / log))
    _step("prometheus: ready", lambda: procs.wait_for(
        lambda: prometheus.ready(st["prometheus"]["url"]), 20, "Prometheus", prom_pid, logs / "prometheus.log"))
    procs.http_json(f"{control}/sandbox/calls/reset", method="POST")  # count only what users do
    state.save(dir, st)
    return st


def _fly_command(dir: Path, port: int, token: str) -> list[str]:
    """The double's command line: the token travels in a 0600 file, never in argv."""
    args = ["--host", "127.0.0.1", "--port", str(port), "--token-file", str(state.save_fly_token(dir, token)),
            "--start-seconds", f"{FLY_START_SECONDS:g}", "--seed", "default", "--dir", str(dir)]
    if os.environ.get(ENV_FLY_VALIDATE, "1") != "0":
        args.append("--validate")
    return _python_module("sandbox.fly_double", *args)


def _follows_platform(url: str) -> bool:
    """The bot answers with a version: it has read its platform. (Not a 200: the Fly apps are
    seeded serving the bad release, whose /api/health is 503.)"""
    body = procs.http_json(url, timeout=1)[1]
    return isinstance(body, dict) and bool(body.get("version"))


def down(dir: Path, quiet: bool = False) -> int:
    say = (lambda *a: None) if quiet else print
    try:
        st = state.load(dir)
    except (FileNotFoundError, ValueError):
        st = {}
    recorded = state.load_procs(dir)
    if not st and not recorded and not (dir / "pg").exists():
        say(f"sandbox in {dir} is not running")
        return 0
    marker = str(dir)
    pids = {name: recorded.get(name) or st.get(name, {}).get("pid") for name in PROCESSES}

    pg_pid = postgres.postmaster_pid(dir)
    stopped = 0
    if procs.ours(pg_pid, marker):
        stopped += 1
        try:
            postgres.stop(dir)
        except Exception as err:
            say(f"pg_ctl stop failed ({err}); killing the postmaster")
    mine = [pid for pid in pids.values() if procs.ours(pid, marker)]
    if procs.ours(pg_pid, marker):
        mine.append(pg_pid)
    procs.stop(mine)
    stopped += len([p for p in mine if p != pg_pid])
    left = [pid for pid in mine if procs.alive(pid)]

    for path in (state.state_path(dir), state.secrets_path(dir)):
        path.unlink(missing_ok=True)
    for path in (state.run_dir(dir), dir / "pg", prometheus.home(dir)):
        shutil.rmtree(path, ignore_errors=True)
    if left:
        print(f"sandbox down: processes still alive: {left}", file=sys.stderr)
        return 1
    say(f"sandbox in {dir} stopped ({stopped} processes); logs kept in {state.logs_dir(dir)}")
    return 0
