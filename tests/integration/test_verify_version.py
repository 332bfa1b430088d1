"""The verify role checks the bot's version: a rollback whose bot answers healthy with the wrong
version fails verification and marks nothing stable (the ECS ledger does not move)."""
import http.server
import json
import threading

import pytest

from conftest import FAMILY, failed_results


class StandIn(http.server.BaseHTTPRequestHandler):
    """A bot that answers every check healthy, with the version the server is told to claim."""
    protocol_version = 'HTTP/1.1'

    def _send(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.startswith('/api/health'):
            return self._send({'status': 'healthy', 'version': self.server.version})
        if self.path.startswith('/api/faqs'):
            return self._send({'faqs': [{'id': 1, 'question': 'Check-in?', 'answer': 'From 3 pm.'}]})
        return self._send({'ok': True})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get('Content-Length') or 0))
        return self._send({'ok': True})

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), StandIn)
    server.version = '9.9.9'
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = 'http://127.0.0.1:%d' % server.server_address[1]
    yield server
    server.shutdown()
    server.server_close()


def rollback_verified_by(sandbox, url):
    return sandbox.playbook('-e', 'rollback_target=2', '-e', 'hotelbot_base_url=' + url,
                            '-e', 'verify_retries=0', '-e', 'verify_retry_delay=0')


@pytest.mark.parametrize('claims, verified', [('9.9.9', False), ('right', True)])
def test_the_wrong_version_fails_verification_and_marks_nothing(fresh, stand_in, claims, verified):
    stand_in.version = fresh.version_of(2) if claims == 'right' else claims
    target = fresh.td_arn(2)
    fresh.ecs.untag_resource(resourceArn=target, tagKeys=['hotelbot.ops/stable'])
    run = rollback_verified_by(fresh, stand_in.url)
    assert fresh.revision() == 2, run.stdout[-3000:]   # the rollback itself happened
    if verified:
        # the control: the same stand-in with the target's version passes, and the ledger moves
        assert run.returncode == 0, run.stdout[-3000:]
        assert fresh.tags()['hotelbot.ops/last-stable'] == FAMILY + ':2'
        assert 'hotelbot.ops/stable' in fresh.tags(target)
    else:
        assert run.returncode != 0, run.stdout[-3000:]
        assert fresh.tags()['hotelbot.ops/last-stable'] == FAMILY + ':3'
        assert 'hotelbot.ops/stable' not in fresh.tags(target)
        assert any('Verification of' in f.get('msg', '') for f in failed_results(run)), run.stdout[-3000:]
    assert fresh.locks() == []
