"""A throwaway PostgreSQL cluster in <dir>/pg: initdb, start, schema + seed, stop.

initdb and postgres refuse to run as root, so as root the server runs as the
`postgres` OS user (the data dir is chowned to it).
"""
from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

from sandbox import state


def _find_bin_dir() -> Path:
    """$HOTELBOT_PG_BIN, else PostgreSQL 15 (what the sandbox is tested with), else
    the newest Debian-installed major version."""
    if os.environ.get("HOTELBOT_PG_BIN"):
        return Path(os.environ["HOTELBOT_PG_BIN"])
    preferred = Path("/usr/lib/postgresql/15/bin")
    if (preferred / "initdb").exists():
        return preferred
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else preferred


BIN_DIR = _find_bin_dir()
OS_USER = "postgres"

SCHEMA = """
CREATE TABLE public.bot_messages (
    id bigserial PRIMARY KEY,
    message_id uuid NOT NULL UNIQUE,
    phone_number text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    body text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bot_messages_created_at_idx ON public.bot_messages (created_at);
"""

# Deterministic: same ids, numbers, texts and timestamps on every `up`, so tests and
# backups can compare checksums across runs.
SEED = """
INSERT INTO public.bot_messages (message_id, phone_number, direction, body, payload, created_at)
SELECT md5('hotelbot-seed-' || g)::uuid,
       '+1555' || lpad((g % 97)::text, 7, '0'),
       CASE WHEN g % 2 = 1 THEN 'inbound' ELSE 'outbound' END,
       (ARRAY['What time is check-in?', 'Check-in is from 3 pm.', 'Is breakfast included?',
              'Breakfast is served 7-10 am.', 'Can I book a late checkout?'])[1 + g % 5],
       jsonb_build_object('seed', true, 'n', g, 'hotelId', 'hotel-' || (1 + g % 3)),
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute'
FROM generate_series(1, 1000) AS g;
"""


def data_dir(dir: Path) -> Path:
    return dir / "pg" / "data"


def socket_dir(dir: Path) -> Path:
    return dir / "pg" / "run"


def log_file(dir: Path) -> Path:
    return state.logs_dir(dir) / "postgres.log"


def _as_root() -> bool:
    return os.geteuid() == 0


def _run(cmd: list[str], dir: Path, **kwargs: Any) -> None:
    """Run a server binary (as `postgres` when we are root), output to the log."""
    extra = {"user": OS_USER, "group": OS_USER, "extra_groups": []} if _as_root() else {}
    with open(log_file(dir), "ab") as log:
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/", check=False, **extra, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {result.returncode}); see {log_file(dir)}")


def check_binaries() -> None:
    for name in ("initdb", "pg_ctl", "postgres"):
        if not (BIN_DIR / name).exists():
            raise RuntimeError(f"{BIN_DIR / name} not found: install PostgreSQL (`make setup`, or apt-get install postgresql)")


def _prepare_dirs(dir: Path) -> None:
    (dir / "pg").mkdir(mode=0o700, parents=True, exist_ok=True)
    socket_dir(dir).mkdir(mode=0o700, exist_ok=True)
    log_file(dir).touch()
    if _as_root():
        entry = pwd.getpwnam(OS_USER)
        for path in (dir / "pg", socket_dir(dir), log_file(dir)):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        probe = subprocess.run(["test", "-w", str(dir / "pg")], user=OS_USER, check=False)
        if probe.returncode != 0:
            raise RuntimeError(
                f"the {OS_USER} OS user cannot reach {dir / 'pg'}: every parent directory of the "
                f"sandbox dir must be traversable (o+x) when running as root"
            )
    if len(str(socket_dir(dir) / ".s.PGSQL.00000")) > 100:
        raise RuntimeError(f"sandbox dir path too long for a unix socket: {dir}")


def init_and_start(dir: Path, port: int) -> None:
    """initdb + start on 127.0.0.1:port. Host connections need a password
    (scram-sha-256); the superuser may use the unix socket without one (trust)."""
    _prepare_dirs(dir)
    _run([str(BIN_DIR / "initdb"), "-D", str(data_dir(dir)), "-U", state.PG_SUPERUSER, "-E", "UTF8",
          "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions"], dir)
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{socket_dir(dir)}'",
        "fsync": "off",  # throwaway data: speed over durability
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    if (BIN_DIR.parent / "lib" / "pg_stat_statements.so").exists():
        settings["shared_preload_libraries"] = "'pg_stat_statements'"
        settings["pg_stat_statements.track"] = "all"
    with open(data_dir(dir) / "postgresql.conf", "a") as conf:
        conf.write("\n# hotelbot sandbox\n")
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
    _run([str(BIN_DIR / "pg_ctl"), "-D", str(data_dir(dir)), "-l", str(log_file(dir)), "-w", "-t", "20", "start"],
         dir, start_new_session=True)


def bootstrap(dir: Path, port: int, password: str) -> None:
    """Role, database, table, seed rows, pg_stat_statements (if available)."""
    import psycopg
    from psycopg import sql

    superuser = {"host": str(socket_dir(dir)), "port": port, "user": state.PG_SUPERUSER, "connect_timeout": 5}
    with psycopg.connect(dbname="postgres", autocommit=True, **superuser) as conn:
        # keep the password out of pg_stat_statements and the server log
        conn.execute("SET pg_stat_statements.track_utility = off")
        conn.execute("SET log_min_error_statement = panic")
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(state.PG_USER), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(state.PG_DATABASE), sql.Identifier(state.PG_USER)))
        # lets pg_check read other sessions' statements in pg_stat_statements
        conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(state.PG_USER)))
    with psycopg.connect(dbname=state.PG_DATABASE, **superuser) as conn:
        preloaded = conn.execute("SELECT 'pg_stat_statements' = ANY(string_to_array(current_setting('shared_preload_libraries'), ','))").fetchone()[0]
        if preloaded:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(state.PG_USER)))  # objects owned by the app role
        conn.execute(SCHEMA)
        conn.execute(SEED)
        conn.execute("ANALYZE public.bot_messages")


def postmaster_pid(dir: Path) -> int | None:
    try:
        return int((data_dir(dir) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def stop(dir: Path) -> None:
    """pg_ctl stop -m fast; the caller kills the postmaster by pid if this fails."""
    if not (data_dir(dir) / "postmaster.pid").exists():
        return
    _run([str(BIN_DIR / "pg_ctl"), "-D", str(data_dir(dir)), "-m", "fast", "-w", "-t", "10", "stop"], dir)
