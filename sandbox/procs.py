"""Process and port helpers shared by the components."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768+), so an
    outgoing connection cannot grab it between this check and the server's bind."""
    for _attempt in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found on 127.0.0.1")


def free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def spawn(cmd: list[str], log: Path, cwd: Path | None = None, **kwargs: Any) -> int:
    """Start a detached process (own session, so it outlives `up` and is not hit
    by the terminal's Ctrl-C); its output goes to `log`. Returns the pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            **kwargs,
        )
    return proc.pid


def alive(pid: int | None) -> bool:
    """True if pid runs and is not a zombie (PID 1 here may never reap orphans)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user (postgres)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def ours(pid: int | None, marker: str) -> bool:
    """Alive and its command line names our state dir: guards against signalling an
    unrelated process that reused a recorded pid."""
    return bool(pid) and alive(pid) and marker in cmdline(pid)


def stop(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM the process groups, then SIGKILL whatever is left after `grace`."""
    pids = [p for p in pids if alive(p)]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)


def _signal(pid: int, sig: int) -> None:
    # Each component leads its own session (start_new_session), so signalling the
    # group also reaches anything it started.
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def http_json(url: str, method: str = "GET", body: Any = None, timeout: float = 2.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (OSError, urllib.error.URLError):
        return False


def wait_for(check: Callable[[], bool], timeout: float, what: str, pid: int | None = None, log: Path | None = None) -> None:
    """Poll `check` until true; fail early if the process it waits on died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # not ready yet: connection refused, partial state...
            pass
        if pid is not None and not alive(pid):
            raise RuntimeError(f"{what} exited during startup; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}; see {log}")
        time.sleep(0.05)
