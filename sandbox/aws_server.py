"""The sandbox's AWS: moto's server app hosted in-process, the ECS deployment
controller, and a small JSON control API on a separate port.

Run by `python -m sandbox up` as
    python -m sandbox.aws_server --dir D --port P1 --control-port P2
Hosting moto in this process (instead of `moto_server`) lets the controller reach
moto's in-memory backends directly.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from io import BytesIO
from typing import Any, Callable, Iterable

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from sandbox import ecs_double, state

_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # one line per call is noise
        pass


class _Server(ThreadedWSGIServer):
    """Threaded WSGI server that can drop its open keep-alive connections, so that
    'AWS down' also breaks clients that hold a pooled connection."""

    daemon_threads = True

    def __init__(self, host: str, port: int, app: Callable) -> None:
        super().__init__(host, port, app, handler=_QuietHandler)
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Switchable:
    """A server on a fixed port that can stop listening (clients get 'connection
    refused') and listen again on the same port, while the app and its state live on."""

    def __init__(self, port: int, app: Callable) -> None:
        self.port, self.app = port, app
        self.server: _Server | None = None
        self.lock = threading.Lock()

    @property
    def listening(self) -> bool:
        return self.server is not None

    def up(self) -> None:
        with self.lock:
            if self.server is None:
                self.server = _Server("127.0.0.1", self.port, self.app)
                threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def down(self) -> None:
        with self.lock:
            if self.server is not None:
                server, self.server = self.server, None
                server.shutdown()
                server.server_close()
                server.drop_connections()


class CallCounter:
    """WSGI middleware: counts AWS API calls as "<signing name>:<Action>" (e.g.
    "ecs:UpdateService", "elasticloadbalancing:DescribeTargetHealth") and runs each
    request under the controller's lock."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.counts: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        key = self._key(environ)
        with self.lock:
            self.counts[key] += 1
        with ecs_double.LOCK:
            return list(self.app(environ, start_response))  # render while holding the lock

    @staticmethod
    def _key(environ: dict[str, Any]) -> str:
        match = _CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        service = match.group(1) if match else "unknown"
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:  # JSON protocol (ECS): "AmazonEC2ContainerServiceV20141113.UpdateService"
            return f"{service}:{target.rsplit('.', 1)[-1]}"
        action = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("Action")
        if not action and environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            # Query protocol (EC2, ELBv2): Action is in the form body; read it and put
            # it back for moto.
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = BytesIO(body)
            action = urllib.parse.parse_qs(body.decode(errors="replace")).get("Action")
        if action:
            return f"{service}:{action[0]}"
        return f"{service}:{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"


class Faults:
    """WSGI middleware: for a while, answer every AWS call with an HTTP error instead of
    passing it to moto, in the body format of the call's protocol (ECS: JSON
    {"__type", "message"}; ELBv2: the query protocol's XML ErrorResponse)."""

    CODES = {500: "ServerException", 503: "ServiceUnavailableException", 400: "ThrottlingException"}

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.until = 0.0
        self.status = 500
        self.injected = 0   # calls answered with an injected error since the last errors_for()

    def errors_for(self, seconds: float, status: int) -> dict[str, Any]:
        if seconds < 0 or status not in self.CODES:
            raise ValueError(f"seconds must be >= 0 and status one of {sorted(self.CODES)}")
        described = self.describe()   # what the previous fault did
        self.until, self.status, self.injected = time.monotonic() + seconds, status, 0
        return described

    def describe(self) -> dict[str, Any]:
        return {"status": self.status, "seconds_left": round(max(0.0, self.until - time.monotonic()), 3),
                "injected": self.injected}

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if time.monotonic() >= self.until:
            return self.app(environ, start_response)
        self.injected += 1
        code = self.CODES[self.status]
        message = "Rate exceeded" if self.status == 400 else "injected by the sandbox"
        if environ.get("HTTP_X_AMZ_TARGET"):
            body, ctype = json.dumps({"__type": code, "message": message}).encode(), "application/x-amz-json-1.1"
        else:
            body = (f'<ErrorResponse><Error><Type>Receiver</Type><Code>{code}</Code><Message>{message}</Message>'
                    f"</Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>").encode()
            ctype = "text/xml"
        start_response(f"{self.status} {'Bad Request' if self.status == 400 else 'Server Error'}",
                       [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]


def control_app(aws: Switchable, counter: CallCounter, faults: Faults) -> Callable:
    def reply(status: int, body: Any) -> Response:
        return Response(json.dumps(body, default=str), status=status, mimetype="application/json")

    def settings() -> dict[str, float]:
        return {"deploy_seconds": ecs_double.SETTINGS.deploy_seconds, "drain_seconds": ecs_double.SETTINGS.drain_seconds}

    @Request.application
    def app(request: Request) -> Response:
        route = (request.method, request.path)
        try:
            if route == ("GET", "/sandbox/health"):
                return reply(200, {"status": "ok", "aws_listening": aws.listening})
            if route == ("GET", "/sandbox/ecs/serving"):
                cluster = request.args.get("cluster", state.CLUSTER)
                service = request.args.get("service", state.SERVICE)
                try:
                    body = ecs_double.serving(state.ACCOUNT_ID, state.REGION, cluster, service)
                except Exception as err:  # unknown cluster/service, no deployments
                    return reply(404, {"error": f"{type(err).__name__}: {err}"})
                return reply(200, body)
            if route == ("POST", "/sandbox/config"):
                data = request.get_json(force=True, silent=True) or {}
                for name in ("deploy_seconds", "drain_seconds"):
                    if name in data:
                        value = float(data[name])
                        if value < 0:
                            return reply(400, {"error": f"{name} must be >= 0"})
                        setattr(ecs_double.SETTINGS, name, value)
                return reply(200, settings())
            if route == ("GET", "/sandbox/config"):
                return reply(200, settings())
            if route == ("POST", "/sandbox/aws/errors"):
                # {"seconds": 3, "status": 500|503|400}: every AWS call fails so for that long (0 ends it)
                data = request.get_json(force=True, silent=True) or {}
                return reply(200, faults.errors_for(float(data.get("seconds", 0)), int(data.get("status", 500))))
            if route == ("GET", "/sandbox/aws/errors"):
                return reply(200, faults.describe())
            if route == ("GET", "/sandbox/calls"):
                with counter.lock:
                    return reply(200, dict(counter.counts))
            if route == ("POST", "/sandbox/calls/reset"):
                with counter.lock:
                    counter.counts.clear()
                return reply(200, {})
            if route == ("POST", "/sandbox/aws/down"):
                aws.down()
                return reply(200, {"aws_listening": False})
            if route == ("POST", "/sandbox/aws/up"):
                aws.up()
                return reply(200, {"aws_listening": True})
        except (TypeError, ValueError) as err:
            return reply(400, {"error": str(err)})
        return reply(404, {"error": f"no route {request.method} {request.path}"})

    return app


def _warm_up(port: int) -> None:
    """moto builds each service's backend (EC2's is big) on first use: do it now,
    before reporting healthy, so that seeding and the first user call are fast."""
    import boto3

    session = boto3.session.Session(aws_access_key_id=state.AWS_ACCESS_KEY_ID,
                                    aws_secret_access_key=state.AWS_SECRET_ACCESS_KEY, region_name=state.REGION)
    endpoint = f"http://127.0.0.1:{port}"
    session.client("ec2", endpoint_url=endpoint).describe_vpcs()
    session.client("elbv2", endpoint_url=endpoint).describe_load_balancers()
    session.client("ecs", endpoint_url=endpoint).list_clusters()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, help="sandbox state dir (marks the process as ours)")
    parser.add_argument("--port", type=int, required=True, help="AWS endpoint port")
    parser.add_argument("--control-port", type=int, required=True)
    args = parser.parse_args(argv)

    # Imported here: loading moto takes seconds and only this process needs it.
    from moto.server import DomainDispatcherApplication, create_backend_app

    ecs_double.install()
    faults = Faults(DomainDispatcherApplication(create_backend_app))
    counter = CallCounter(faults)   # calls answered with an injected error count too
    aws = Switchable(args.port, counter)
    aws.up()
    _warm_up(args.port)

    stop = threading.Event()
    threading.Thread(target=ecs_double.run_controller, args=(stop,), daemon=True).start()

    control = _Server("127.0.0.1", args.control_port, control_app(aws, counter, faults))

    def on_term(signum: int, frame: Any) -> None:
        stop.set()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    print(f"aws endpoint 127.0.0.1:{args.port}, control 127.0.0.1:{args.control_port}", flush=True)
    try:
        control.serve_forever(poll_interval=0.1)
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
