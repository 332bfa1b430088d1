"""Client for the AWS double's control API (used by tests and benchmarks).

Every function takes an optional state dir (default: $HOTELBOT_SANDBOX_DIR or
<repo>/.sandbox) and reads the control URL from its state.json.
"""
from __future__ import annotations

import os
import urllib.parse
from typing import Any

from sandbox import procs, state


def _call(path: str, method: str = "GET", body: Any = None, dir: str | os.PathLike | None = None) -> Any:
    url = state.load(dir)["aws"]["control_url"] + path
    status, data = procs.http_json(url, method=method, body=body, timeout=10)
    if status != 200:
        raise RuntimeError(f"control API {method} {path}: HTTP {status}: {data}")
    return data


def serving(cluster: str = state.CLUSTER, service: str = state.SERVICE, dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """{"taskDefinition", "revision", "image", "runningCount", "desiredCount", "rolloutState"}"""
    query = urllib.parse.urlencode({"cluster": cluster, "service": service})
    return _call(f"/sandbox/ecs/serving?{query}", dir=dir)


def set_deploy_seconds(seconds: float, dir: str | os.PathLike | None = None) -> dict[str, Any]:
    return _call("/sandbox/config", "POST", {"deploy_seconds": seconds}, dir=dir)


def calls(dir: str | os.PathLike | None = None) -> dict[str, int]:
    """AWS API calls received since the last reset, e.g. {"ecs:UpdateService": 1}."""
    return _call("/sandbox/calls", dir=dir)


def reset_calls(dir: str | os.PathLike | None = None) -> None:
    _call("/sandbox/calls/reset", "POST", {}, dir=dir)


def aws_down(dir: str | os.PathLike | None = None) -> None:
    """The AWS endpoint refuses connections; moto's state stays."""
    _call("/sandbox/aws/down", "POST", {}, dir=dir)


def aws_up(dir: str | os.PathLike | None = None) -> None:
    _call("/sandbox/aws/up", "POST", {}, dir=dir)


def health(dir: str | os.PathLike | None = None) -> dict[str, Any]:
    return _call("/sandbox/health", dir=dir)
