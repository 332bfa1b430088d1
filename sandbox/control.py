"""Clients for the doubles' control APIs, AWS and Fly (used by tests and benchmarks).

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


# ---- the Fly double (sandbox/fly_double.py): its /sandbox/fly/... control endpoints


def _fly_call(path: str, method: str = "GET", body: Any = None, dir: str | os.PathLike | None = None) -> Any:
    url = state.load(dir)["fly"]["control_url"] + path
    status, data = procs.http_json(url, method=method, body=body, timeout=10)
    if not 200 <= status < 300:
        raise RuntimeError(f"Fly control API {method} {path}: HTTP {status}: {data}")
    return data


def fly_state(dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The double's whole model: apps, Machines (image, state, instance, lease, metadata),
    releases, and `spec_errors` (requests or responses that did not validate)."""
    return _fly_call("/sandbox/fly/state", dir=dir)


def fly_serving(app: str = state.FLY_APP, dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """What the app's bot serves: {"app", "image", "version", "machines": {id: image}, "started"}."""
    return _fly_call(f"/sandbox/fly/serving?{urllib.parse.urlencode({'app': app})}", dir=dir)


def fly_faults(dir: str | os.PathLike | None = None, **faults: Any) -> dict[str, Any]:
    """E.g. fly_faults(down=True), fly_faults(status_burst={"status": 503, "count": 2, "retry_after": 1}),
    fly_faults(down_after=5); fly_faults(down=False) lifts an outage."""
    return _fly_call("/sandbox/fly/faults", "POST", faults, dir=dir)


def fly_lease(machine_id: str, app: str = state.FLY_APP, owner: str = "someone@example.com",
              description: str = "held by someone else", ttl: int = 60,
              dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Someone else takes a Machine's lease (as another flyctl would)."""
    body = {"app": app, "machine_id": machine_id, "owner": owner, "description": description, "ttl": ttl}
    return _fly_call("/sandbox/fly/lease", "POST", body, dir=dir)


def fly_settings(dir: str | os.PathLike | None = None, **settings: Any) -> dict[str, Any]:
    """E.g. fly_settings(start_seconds=0.2): how long an updated Machine takes to start."""
    return _fly_call("/sandbox/fly/settings", "POST", settings, dir=dir)


def fly_calls(dir: str | os.PathLike | None = None) -> dict[str, int]:
    """Machines API and GraphQL requests received, per operation."""
    return _fly_call("/sandbox/fly/calls", dir=dir)


def fly_reset(dir: str | os.PathLike | None = None, **seed: Any) -> dict[str, Any]:
    """Back to the seed (Machines on v5's bad image, no leases or ledger); fly_reset(machines=N)
    seeds N Machines in the production app (the benchmark)."""
    return _fly_call("/sandbox/fly/reset", "POST", seed, dir=dir)
