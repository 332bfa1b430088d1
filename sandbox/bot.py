"""Demo Hotel Voice Bot: the service the runbooks release and roll back.

    python -m sandbox.bot --dir D --port P

    python -m sandbox.bot --dir D --port P --fly-app APP

Which version answers follows the platform state, like a load balancer sending traffic to
what runs: the ECS service (polled from the AWS double's control API) or, with --fly-app,
the Fly app's Machines (the Fly double's /sandbox/fly/serving: the image most started
Machines run, as Fly's proxy spreads requests over them):
- no running tasks (no started Machines): every /api/* request gets 503, as from a load
  balancer without targets;
- an image tagged "-bad": /api/health is 503 and 3 of every 10 other /api/* requests
  fail with 500 (deterministic, by a counter);
- an image tagged "-flaky": healthy, and the English FAQ works, but the German FAQ fails
  with 500 (a localisation bug only the guests' traffic finds: health checks and an English
  smoke test pass, the error ratio in Prometheus rises);
- any other image: normal service.
With --traffic-rps N the bot also plays its guests: N FAQ requests a second to itself, over
real HTTP, languages en/de/es in turn, so Prometheus has an error ratio to judge.
Config comes from the state dir (state.json, secrets.json). No access log: the webhook
token travels in the query string and must not end up in a log.
"""
from __future__ import annotations

import argparse
import hmac
import json
import re
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import prometheus_client
from prometheus_client import Counter, Histogram

from sandbox import state

POLL_SECONDS = 0.2
MAX_BODY = 1 << 20
BAD_MARK = "-bad"
FLAKY_MARK = "-flaky"
FLAKY_LANGUAGES = ("de",)
GUEST_LANGUAGES = ("en", "de", "es")
GUEST_AGENT = "hotelbot-sandbox-guest"

FAQS: dict[str, list[tuple[str, str]]] = {
    "en": [
        ("What time is check-in?", "Check-in starts at 3:00 pm."),
        ("What time is check-out?", "Check-out is until 11:00 am."),
        ("Is breakfast included?", "Breakfast is included for direct bookings, 7:00-10:30 am."),
        ("Do you have parking?", "Yes, underground parking costs 20 EUR per night."),
        ("Is there Wi-Fi?", "Free Wi-Fi is available in all rooms and public areas."),
        ("Are pets allowed?", "Small pets are welcome for 15 EUR per night."),
        ("Can I get a late check-out?", "Late check-out until 2:00 pm can be requested at the front desk."),
        ("How do I get from the airport?", "Take the airport shuttle every 30 minutes, or a taxi (about 25 minutes)."),
    ],
    "es": [
        ("¿A qué hora es el check-in?", "El check-in comienza a las 15:00."),
        ("¿A qué hora es el check-out?", "El check-out es hasta las 11:00."),
        ("¿El desayuno está incluido?", "El desayuno está incluido en reservas directas."),
        ("¿Hay Wi-Fi?", "Wi-Fi gratuito en todo el hotel."),
    ],
    "de": [
        ("Wann ist der Check-in?", "Der Check-in beginnt um 15:00 Uhr."),
        ("Wann ist der Check-out?", "Der Check-out ist bis 11:00 Uhr."),
        ("Ist das Frühstück inklusive?", "Bei Direktbuchung ist das Frühstück inklusive."),
        ("Gibt es WLAN?", "Kostenloses WLAN im ganzen Hotel."),
    ],
}

prometheus_client.disable_created_metrics()  # only the series the dashboards use
REQUESTS = Counter("http_requests_total", "HTTP requests served", ["method", "path", "status", "version"])
LATENCY = Histogram(
    "http_request_duration_seconds", "HTTP request latency", ["path", "version"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def version_of(image: str) -> str:
    """The version a bot answers with: its image's tag."""
    return image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "unknown"


class Platform:
    """Last known serving state of what the bot follows, polled from a double's control API;
    kept when that is unreachable (the tasks keep running when the platform's API is down).
    Subclasses name the URL and read its answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.current: dict[str, Any] | None = None

    def poll(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=1) as resp:
                answer = json.loads(resp.read())
        except (OSError, ValueError):
            return
        self.current = self.serving_of(answer)  # one assignment: readers see the old or the new dict

    @staticmethod
    def serving_of(answer: dict[str, Any]) -> dict[str, Any]:
        """What the bot needs: `running` (0 = no targets), `version`, and what /api/health names."""
        raise NotImplementedError

    def run(self) -> None:
        while True:
            self.poll()
            time.sleep(POLL_SECONDS)


class EcsPlatform(Platform):
    """An ECS service: the tasks of its primary deployment."""

    def __init__(self, control_url: str, cluster: str, service: str) -> None:
        super().__init__(f"{control_url}/sandbox/ecs/serving?{urllib.parse.urlencode({'cluster': cluster, 'service': service})}")

    @staticmethod
    def serving_of(answer: dict[str, Any]) -> dict[str, Any]:
        return {"running": answer["runningCount"], "version": version_of(answer.get("image", "")),
                "names": {"taskDefinition": answer["taskDefinition"].rsplit("/", 1)[-1]}}  # "family:revision"


class FlyPlatform(Platform):
    """A Fly app: the image most of its started Machines run (the Fly double decides, as
    Fly's proxy spreads requests over the started Machines)."""

    def __init__(self, control_url: str, app: str) -> None:
        super().__init__(f"{control_url}/sandbox/fly/serving?{urllib.parse.urlencode({'app': app})}")

    @staticmethod
    def serving_of(answer: dict[str, Any]) -> dict[str, Any]:
        image = answer.get("image") or ""
        return {"running": answer.get("started", 0), "version": version_of(image),
                "names": {"app": answer.get("app"), "image": image}}


class Database:
    """A few pooled connections so /api/health stays fast; a broken pooled
    connection (PostgreSQL restarted) is replaced once, transparently."""

    def __init__(self, **params: Any) -> None:
        self.params = {**params, "connect_timeout": 2, "autocommit": True}
        self.idle: list[Any] = []
        self.lock = threading.Lock()

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(**self.params)

    @contextmanager
    def _connection(self, fresh: bool) -> Iterator[Any]:
        conn = None
        if not fresh:
            with self.lock:
                conn = self.idle.pop() if self.idle else None
        conn = conn or self._connect()
        try:
            yield conn
        except Exception:
            conn.close()
            raise
        with self.lock:
            if len(self.idle) < 8:
                self.idle.append(conn)
                return
        conn.close()

    def run(self, fn: Callable[[Any], Any]) -> Any:
        try:
            with self._connection(fresh=False) as conn:
                return fn(conn)
        except Exception:
            with self._connection(fresh=True) as conn:
                return fn(conn)

    def ping(self) -> bool:
        try:
            self.run(lambda conn: conn.execute("SELECT 1").fetchone())
            return True
        except Exception:
            return False


def _message_uuid(message_id: str) -> uuid.UUID:
    """bot_messages.message_id is a uuid; WhatsApp ids ("false_1555@c.us_3EB0...")
    are not, so map them to a stable uuid5."""
    try:
        return uuid.UUID(message_id)
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"whatsapp:{message_id}")


class Bot:
    def __init__(self, platform: Platform, db: Database, api_token: str, webhook_token: str) -> None:
        self.platform, self.db = platform, db
        self.api_token, self.webhook_token = api_token, webhook_token
        # Per kind of client (guest traffic / everyone else), so the bot's own guest traffic
        # does not shift which of a test's requests fail.
        self.requests_seen = {True: 0, False: 0}
        self.counter_lock = threading.Lock()
        self.routes: dict[tuple[str, str], Callable[..., tuple[int, Any]]] = {
            ("GET", "/api/health"): self.health,
            ("GET", "/api/faqs"): self.faqs,
            ("POST", "/api/whatsapp/webhook"): self.webhook,
            ("POST", "/api/conversations"): self.conversations,
        }
        self.paths = {path for _method, path in self.routes}

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes) -> tuple[int, Any]:
        serving = self.platform.current
        if serving is None:
            return 503, {"error": "platform state unknown"}
        if serving["running"] == 0:
            return 503, {"error": "no running tasks"}
        route = self.routes.get((method, path))
        if route is None:
            return (405, {"error": "method not allowed"}) if path in self.paths else (404, {"error": "not found"})
        guest = headers.get("User-Agent") == GUEST_AGENT if headers is not None else False
        if BAD_MARK in serving["version"] and path != "/api/health" and self._bad_request_fails(guest):
            return 500, {"error": "internal server error", "version": serving["version"]}
        if FLAKY_MARK in serving["version"] and path == "/api/faqs" and \
                query.get("language", ["en"])[0] in FLAKY_LANGUAGES:
            return 500, {"error": "internal server error", "version": serving["version"]}
        return route(serving, query, headers, body)

    def _bad_request_fails(self, guest: bool) -> bool:
        with self.counter_lock:
            self.requests_seen[guest] += 1
            return self.requests_seen[guest] % 10 in (2, 5, 8)

    def health(self, serving: dict[str, Any], query: Any, headers: Any, body: bytes) -> tuple[int, Any]:
        db_ok = self.db.ping()
        healthy = db_ok and BAD_MARK not in serving["version"]
        return (200 if healthy else 503), {
            "status": "healthy" if healthy else "unhealthy",
            "version": serving["version"],
            **serving["names"],
            "database": "ok" if db_ok else "unreachable",
        }

    def faqs(self, serving: dict[str, Any], query: dict[str, list[str]], headers: Any, body: bytes) -> tuple[int, Any]:
        language = query.get("language", ["en"])[0]
        if language not in FAQS:
            return 400, {"error": f"unsupported language {language!r}", "supported": sorted(FAQS)}
        raw_limit = query.get("limit", ["10"])[0]
        if not re.fullmatch(r"\d{1,3}", raw_limit) or not 1 <= int(raw_limit) <= 50:
            return 400, {"error": "limit must be an integer between 1 and 50"}
        items = [{"id": f"faq-{language}-{i + 1}", "question": q, "answer": a} for i, (q, a) in enumerate(FAQS[language])]
        return 200, {"language": language, "faqs": items[: int(raw_limit)]}

    def webhook(self, serving: dict[str, Any], query: dict[str, list[str]], headers: Any, body: bytes) -> tuple[int, Any]:
        token = query.get("token", [""])[0]
        if not token or not hmac.compare_digest(token.encode(), self.webhook_token.encode()):
            return 401, {"error": "invalid or missing webhook token"}
        try:
            event = json.loads(body)
        except ValueError:
            return 400, {"error": "body must be JSON"}
        if isinstance(event, dict) and isinstance(event.get("payload"), dict) and "event" in event:
            # WAHA event envelope: {"event": "message", "payload": {"id", "from", "body"}}
            if event["event"] not in ("message", "message.any"):
                return 200, {"received": True, "ignored": event["event"]}
            message = {"messageId": event["payload"].get("id"), "from": event["payload"].get("from"), "body": event["payload"].get("body")}
        else:
            message = event if isinstance(event, dict) else {}
        missing = [k for k in ("from", "body", "messageId") if not isinstance(message.get(k), str) or not message.get(k)]
        if missing:
            return 400, {"error": f"missing or invalid fields: {', '.join(missing)}"}
        insert = (
            "INSERT INTO public.bot_messages (message_id, phone_number, direction, body, payload) "
            "VALUES (%s, %s, 'inbound', %s, %s) ON CONFLICT (message_id) DO NOTHING"
        )
        params = (_message_uuid(message["messageId"]), message["from"], message["body"], json.dumps(event))
        try:
            self.db.run(lambda conn: conn.execute(insert, params))
        except Exception:
            return 503, {"error": "database unavailable"}
        return 200, {"received": True, "messageId": message["messageId"]}

    def conversations(self, serving: dict[str, Any], query: Any, headers: Any, body: bytes) -> tuple[int, Any]:
        auth = headers.get("Authorization", "")
        expected = f"Bearer {self.api_token}"
        if not hmac.compare_digest(auth.encode(), expected.encode()):
            return 401, {"error": "invalid or missing bearer token"}
        try:
            data = json.loads(body)
        except ValueError:
            return 400, {"error": "body must be JSON"}
        hotel = data.get("hotelInfo") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("phoneNumber"), str) or not data["phoneNumber"]:
            return 400, {"error": "phoneNumber is required"}
        if not isinstance(hotel, dict) or not all(isinstance(hotel.get(k), str) and hotel[k] for k in ("id", "name")):
            return 400, {"error": "hotelInfo with id and name is required"}
        return 201, {
            "conversationId": str(uuid.uuid4()),
            "phoneNumber": data["phoneNumber"],
            "hotelId": hotel["id"],
            "status": "active",
            "createdAt": datetime.now(timezone.utc).isoformat(),
        }


def make_handler(bot: Bot) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive for load loops
        server_version = "hotel-voice-bot"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # see module docstring: no access log

        def do_GET(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def do_PUT(self) -> None:
            self._dispatch()

        def do_DELETE(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            started = time.perf_counter()
            url = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(413, {"error": "body too large"})
                return
            body = self.rfile.read(length) if length else b""
            if url.path == "/metrics" and self.command == "GET":
                self._send(200, prometheus_client.generate_latest(), prometheus_client.CONTENT_TYPE_LATEST)
                return
            if not url.path.startswith("/api/"):
                self._send(404, {"error": "not found"})
                return
            query = urllib.parse.parse_qs(url.query)
            try:
                status, payload = bot.handle(self.command, url.path, query, self.headers, body)
            except Exception as err:  # a bug in the demo must still answer
                print(f"error on {self.command} {url.path}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                status, payload = 500, {"error": "internal server error"}
            serving = bot.platform.current or {}
            version = serving.get("version", "unknown")
            template = url.path if url.path in bot.paths else "unmatched"
            REQUESTS.labels(self.command, template, str(status), version).inc()
            LATENCY.labels(template, version).observe(time.perf_counter() - started)
            self._send(status, payload)

        def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def guests(url: str, rps: float) -> None:
    """Steady guest traffic: FAQ requests to the bot itself, each on a new connection."""
    turn = 0
    while True:
        language = GUEST_LANGUAGES[turn % len(GUEST_LANGUAGES)]
        turn += 1
        try:
            request = urllib.request.Request(f"{url}/api/faqs?language={language}", headers={"User-Agent": GUEST_AGENT})
            with urllib.request.urlopen(request, timeout=2) as resp:
                resp.read()
        except (OSError, ValueError):
            pass  # an error answer is the point; the metrics count it
        time.sleep(1.0 / rps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="demo Hotel Voice Bot")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", help="the ECS service this bot follows (default: the seeded one)")
    parser.add_argument("--fly-app", help="follow this Fly app's Machines (the Fly double) instead of ECS")
    parser.add_argument("--traffic-rps", type=float, default=0.0, help="guest FAQ requests per second to itself")
    args = parser.parse_args(argv)

    st, secrets = state.load(args.dir), state.load_secrets(args.dir)
    pg = st["postgres"]
    if args.fly_app:
        platform: Platform = FlyPlatform(st["fly"]["control_url"], args.fly_app)
    else:
        platform = EcsPlatform(st["aws"]["control_url"], st["ecs"]["cluster"], args.service or st["ecs"]["service"])
    platform.poll()
    threading.Thread(target=platform.run, daemon=True).start()
    db = Database(host=pg["host"], port=pg["port"], user=pg["user"], dbname=pg["database"], password=secrets["postgres_password"])
    bot = Bot(platform, db, secrets["bot_api_token"], secrets["waha_webhook_token"])

    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(bot))
    server.daemon_threads = True
    if args.traffic_rps > 0:
        threading.Thread(target=guests, args=(f"http://127.0.0.1:{args.port}", args.traffic_rps), daemon=True).start()
    print(f"hotel voice bot on 127.0.0.1:{args.port} for {platform.url} (state dir {Path(args.dir)})", flush=True)
    server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
