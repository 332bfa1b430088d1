# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A tiny stand-in Hotel Voice Bot for the molecule scenario of the verify role.

It copies the sandbox bot's (sandbox/bot.py) paths, status codes and body fields for
/api/health, /api/faqs, /api/whatsapp/webhook and /api/conversations, without a
database. Two test-only endpoints drive it:

  POST /__control/mode   {"mode": "good" | "bad"}   bad = /api/health answers 503 unhealthy
  GET  /__control/stats  requests seen, by "METHOD /path" (no query strings, no bodies)

  standin.py start STATE_FILE   binds 127.0.0.1 on a free port, detaches, and writes
                                {"url", "port", "pid", "webhook_token", "api_token"} to
                                STATE_FILE once it is listening (tokens are random per run)
  standin.py stop STATE_FILE    stops the server named in STATE_FILE and removes the file

Nothing is logged: the webhook token travels in the query string.
"""

import json
import os
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

VERSION = '1.4.2'
FAQS = [
    ('What time is check-in?', 'Check-in starts at 3 PM.'),
    ('What time is check-out?', 'Check-out is until 11 AM.'),
    ('Is breakfast included?', 'Breakfast is served 7-10 AM.'),
    ('Is there Wi-Fi?', 'Yes, free Wi-Fi everywhere.'),
    ('Is there parking?', 'Yes, 20 EUR a night.'),
    ('Are pets allowed?', 'Small pets, on request.'),
]


class State:
    def __init__(self, webhook_token, api_token):
        self.webhook_token = webhook_token
        self.api_token = api_token
        self.mode = 'good'
        self.stats = Counter()
        self.lock = threading.Lock()


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def log_message(self, *args):
            pass

        def _send(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _dispatch(self):
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            length = int(self.headers.get('Content-Length') or 0)
            body = self.rfile.read(length) if length else b''
            with state.lock:
                state.stats['%s %s' % (self.command, url.path)] += 1
            route = {
                ('GET', '/api/health'): self.health,
                ('GET', '/api/faqs'): self.faqs,
                ('POST', '/api/whatsapp/webhook'): self.webhook,
                ('POST', '/api/conversations'): self.conversations,
                ('POST', '/__control/mode'): self.set_mode,
                ('GET', '/__control/stats'): self.stats,
            }.get((self.command, url.path))
            if route is None:
                return self._send(404, {'error': 'not found'})
            status, payload = route(query, body)
            return self._send(status, payload)

        do_GET = do_POST = do_PUT = do_DELETE = _dispatch

        def health(self, query, body):
            healthy = state.mode == 'good'
            return (200 if healthy else 503), {
                'status': 'healthy' if healthy else 'unhealthy',
                'version': VERSION if healthy else VERSION + '-bad',
                'database': 'ok',
            }

        def faqs(self, query, body):
            language = query.get('language', ['en'])[0]
            if language != 'en':
                return 400, {'error': 'unsupported language %r' % language, 'supported': ['en']}
            limit = query.get('limit', ['10'])[0]
            if not limit.isdigit() or not 1 <= int(limit) <= 50:
                return 400, {'error': 'limit must be an integer between 1 and 50'}
            items = [{'id': 'faq-en-%d' % (i + 1), 'question': q, 'answer': a} for i, (q, a) in enumerate(FAQS)]
            return 200, {'language': language, 'faqs': items[:int(limit)]}

        def webhook(self, query, body):
            if query.get('token', [''])[0] != state.webhook_token:
                return 401, {'error': 'invalid or missing webhook token'}
            try:
                message = json.loads(body)
            except ValueError:
                return 400, {'error': 'body must be JSON'}
            missing = [k for k in ('from', 'body', 'messageId') if not isinstance(message.get(k), str) or not message[k]]
            if missing:
                return 400, {'error': 'missing or invalid fields: %s' % ', '.join(missing)}
            return 200, {'received': True, 'messageId': message['messageId']}

        def conversations(self, query, body):
            if self.headers.get('Authorization', '') != 'Bearer %s' % state.api_token:
                return 401, {'error': 'invalid or missing bearer token'}
            try:
                data = json.loads(body)
            except ValueError:
                return 400, {'error': 'body must be JSON'}
            hotel = data.get('hotelInfo') if isinstance(data, dict) else None
            if not isinstance(data, dict) or not data.get('phoneNumber'):
                return 400, {'error': 'phoneNumber is required'}
            if not isinstance(hotel, dict) or not hotel.get('id') or not hotel.get('name'):
                return 400, {'error': 'hotelInfo with id and name is required'}
            return 201, {'conversationId': 'conv-%s' % secrets.token_hex(4), 'phoneNumber': data['phoneNumber'],
                         'hotelId': hotel['id'], 'status': 'active'}

        def set_mode(self, query, body):
            mode = json.loads(body or b'{}').get('mode')
            if mode not in ('good', 'bad'):
                return 400, {'error': 'mode must be good or bad'}
            state.mode = mode
            return 200, {'mode': mode}

        def stats(self, query, body):
            with state.lock:
                return 200, {'mode': state.mode, 'requests': dict(state.stats)}

    return Handler


def start(state_file):
    if os.path.exists(state_file):
        print('already running: %s' % state_file)
        return 0
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        # Parent: wait until the child says it is listening (or gives up).
        os.close(write_end)
        with os.fdopen(read_end) as ready:
            line = ready.readline().strip()
        if line != 'ready':
            print('stand-in did not start: %s' % (line or 'no answer'), file=sys.stderr)
            return 1
        print('started: %s' % state_file)
        return 0
    # Child: detach from the caller (ansible waits for the parent only) and serve.
    os.close(read_end)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    state = State(secrets.token_urlsafe(16), secrets.token_urlsafe(16))
    try:
        server = ThreadingHTTPServer(('127.0.0.1', 0), make_handler(state))
    except OSError as err:
        os.write(write_end, ('bind failed: %s\n' % err).encode())
        os._exit(1)
    server.daemon_threads = True
    port = server.server_address[1]
    tmp = state_file + '.tmp'
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w') as handle:
        json.dump({'url': 'http://127.0.0.1:%d' % port, 'port': port, 'pid': os.getpid(),
                   'webhook_token': state.webhook_token, 'api_token': state.api_token}, handle)
    os.replace(tmp, state_file)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    os.write(write_end, b'ready\n')
    os.close(write_end)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    os._exit(0)


def stop(state_file):
    try:
        with open(state_file) as handle:
            pid = json.load(handle)['pid']
    except (OSError, ValueError, KeyError):
        print('not running: %s' % state_file)
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
        for _attempt in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.remove(state_file)
    print('stopped: %s' % state_file)
    return 0


if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] not in ('start', 'stop'):
        sys.exit('usage: standin.py start|stop STATE_FILE')
    sys.exit(start(sys.argv[2]) if sys.argv[1] == 'start' else stop(sys.argv[2]))
