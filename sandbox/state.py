"""Where the sandbox keeps its files, and reading/writing them.

state.json (0644) is what playbooks, tests and benchmarks read to find the stack; it
never holds a secret. secrets.json (0600) holds the generated passwords and tokens.
"""
from __future__ import annotations

import json
import os
import secrets as _secrets
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_DIR = "HOTELBOT_SANDBOX_DIR"

# Fixed names of the seeded platform; other code (inventory, tests) relies on them.
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
AWS_ACCESS_KEY_ID = "testing"
AWS_SECRET_ACCESS_KEY = "testing"  # moto accepts any value; this is not a secret
CLUSTER = "hotel-voice-bot"
SERVICE = "hotel-voice-bot-service"
STAGING_SERVICE = "hotel-voice-bot-staging"
FAMILY = "hotel-voice-bot"
PG_USER = "hotelbot"
PG_DATABASE = "hotel_voice_bot"
PG_SUPERUSER = "postgres"
PROMETHEUS_JOB = "hotel-voice-bot"
PROMETHEUS_STAGING_JOB = "hotel-voice-bot-staging"
# The Fly.io side (sandbox/fly_double.py): two apps, each followed by its own bot and scrape job.
FLY_APP = "hotel-voice-bot"
FLY_STAGING_APP = "hotel-voice-bot-staging"
PROMETHEUS_FLY_JOB = "hotel-voice-bot-fly"
PROMETHEUS_FLY_STAGING_JOB = "hotel-voice-bot-fly-staging"
# Guest requests a second each bot sends itself, so Prometheus has an error ratio to judge.
TRAFFIC_RPS = 10


def state_dir(dir: str | os.PathLike | None = None) -> Path:
    """The state dir: explicit argument, else $HOTELBOT_SANDBOX_DIR, else <repo>/.sandbox."""
    chosen = dir or os.environ.get(ENV_DIR) or REPO_ROOT / ".sandbox"
    return Path(chosen).expanduser().resolve()


def logs_dir(dir: Path) -> Path:
    return dir / "logs"


def run_dir(dir: Path) -> Path:
    """Runtime bookkeeping (pids of started processes); removed by `down`."""
    return dir / "run"


def state_path(dir: Path) -> Path:
    return dir / "state.json"


def secrets_path(dir: Path) -> Path:
    return dir / "secrets.json"


def load(dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """state.json of a running sandbox; FileNotFoundError if it is not up."""
    return json.loads(state_path(state_dir(dir)).read_text())


def load_secrets(dir: str | os.PathLike | None = None) -> dict[str, str]:
    return json.loads(secrets_path(state_dir(dir)).read_text())


def _write_json(path: Path, data: Any, mode: int) -> None:
    """Atomic write with the final mode set before any content exists."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.chmod(tmp, mode)  # umask may have removed bits we want (0644)
    os.replace(tmp, path)


def save(dir: Path, state: dict[str, Any]) -> None:
    _write_json(state_path(dir), state, 0o644)


def save_secrets(dir: Path, values: dict[str, str]) -> None:
    _write_json(secrets_path(dir), values, 0o600)


def new_secrets() -> dict[str, str]:
    return {
        "aws_secret_access_key": AWS_SECRET_ACCESS_KEY,
        "postgres_password": _secrets.token_urlsafe(18),
        "bot_api_token": _secrets.token_urlsafe(24),
        "waha_webhook_token": _secrets.token_urlsafe(24),
        # The shape of a Fly macaroon token as `fly tokens create` prints it.
        "fly_api_token": f"FlyV1 fm2_{_secrets.token_urlsafe(48)}",
    }


def fly_token_path(dir: Path) -> Path:
    """The Fly double's token file (0600, in the run dir, so `down` removes it)."""
    return run_dir(dir) / "fly-token"


def save_fly_token(dir: Path, token: str) -> Path:
    path = fly_token_path(dir)
    run_dir(dir).mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)  # no newline: a reader that does not strip gets the token exactly
    return path


def load_procs(dir: Path) -> dict[str, int]:
    """Pids of the processes `up` started, recorded as soon as each one starts so
    that `down` can clean up after an `up` that failed half-way."""
    try:
        return json.loads((run_dir(dir) / "pids.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def record_proc(dir: Path, name: str, pid: int) -> None:
    procs = load_procs(dir)
    procs[name] = pid
    run_dir(dir).mkdir(parents=True, exist_ok=True)
    _write_json(run_dir(dir) / "pids.json", procs, 0o644)
