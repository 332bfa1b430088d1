"""The verify role checks the bot's version: a rollback whose bot answers healthy with the wrong
version fails verification and marks nothing stable (the ECS ledger does not move). And the role on
its own, against the stand-in: its refusals, and the verify_result it registers."""
import http.server
import json
import os
import subprocess
import sys
import threading

import pytest
import yaml

from conftest import BIN, FAMILY, ROOT, failed_results


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
        self.server.requests.append(('GET', self.path.split('?')[0]))
        if self.path.startswith('/api/health'):
            return self._send({'status': 'healthy', 'version': self.server.version})
        if self.path.startswith('/api/faqs'):
            return self._send({'faqs': [{'id': 1, 'question': 'Check-in?', 'answer': 'From 3 pm.'}]})
        return self._send({'ok': True})

    def do_POST(self):  # noqa: N802
        self.server.requests.append(('POST', self.path.split('?')[0]))
        self.rfile.read(int(self.headers.get('Content-Length') or 0))
        return self._send({'ok': True})

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), StandIn)
    server.version = '9.9.9'
    server.requests = []
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


def run_verify(tmp_path, stand_in, **role_vars):
    """The verify role alone on localhost; returns the run with the verify_result it left."""
    out = tmp_path / 'verify_result.json'
    play = [{'hosts': 'localhost', 'gather_facts': False, 'tasks': [
        {'ansible.builtin.import_role': {'name': 'hotelbot.ops.verify'},
         'vars': dict({'verify_base_url': stand_in.url, 'verify_health_count': 2, 'verify_retries': 0}, **role_vars)},
        {'ansible.builtin.copy': {'content': '{{ verify_result | to_json }}', 'dest': str(out)}},
    ]}]
    path = tmp_path / 'play.yml'
    path.write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'), ANSIBLE_NOCOLOR='1')
    run = subprocess.run([os.path.join(BIN, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                          '-e', 'ansible_python_interpreter=%s' % sys.executable, str(path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    run.verify_result = json.loads(out.read_text()) if out.exists() else None
    return run


@pytest.mark.parametrize('enabled, message', [
    ({'verify_webhook': True}, 'verify_webhook is true but verify_webhook_token is empty'),
    ({'verify_conversation': True}, 'verify_conversation is true but verify_api_token is empty'),
])
def test_a_test_enabled_without_its_token_is_refused_before_any_request(tmp_path, stand_in, enabled, message):
    run = run_verify(tmp_path, stand_in, **enabled)
    assert run.returncode != 0
    assert message in run.stdout.replace('\n', ' '), run.stdout[-2000:]
    assert stand_in.requests == []


def test_verify_result_is_recorded_with_latency_and_the_version_the_bot_reports(tmp_path, stand_in):
    stand_in.version = '1.2.0'
    run = run_verify(tmp_path, stand_in, verify_expected_version='1.2.0')
    assert run.returncode == 0, run.stdout[-2000:]
    result = run.verify_result
    assert result['passed'] is True and result['failed_checks'] == []
    assert result['version'] == '1.2.0'
    assert set(result['latency_ms']) == {'health', 'faqs'}
    assert result['latency_ms']['health']['p95'] > 0
    assert result['checks']['health']['ok'] == 2
    assert stand_in.requests.count(('GET', '/api/health')) == 2
