"""The seam of plugins/plugin_utils/controller.py: a module's work run in the controller's worker
(a local connection) must behave exactly as the module process does - same validation messages, same
result, check mode honoured, secrets removed even at -vvvv - and hotelbot_controller_modules=false
must run the real module. Driven with real ansible-playbook runs against a local Prometheus double
(an HTTP server answering query_range), so no sandbox is needed."""
import json
import re
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
TOKEN = 'tok-' + 'Zq8Xw3Lp9Vn2'


class Prometheus(BaseHTTPRequestHandler):
    """Every range query answers an error ratio of 0.5 for the last 60 s at 1 s steps."""
    seen = []

    def do_GET(self):
        Prometheus.seen.append(self.headers.get('Authorization', ''))
        self.rfile.read(int(self.headers.get('Content-Length') or 0))
        now = int(time.time())
        body = json.dumps({'status': 'success', 'data': {'resultType': 'matrix', 'result': [
            {'metric': {}, 'values': [[now - i, '0.5'] for i in range(60, -1, -1)]}]}}).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture(scope='module')
def prometheus():
    server = ThreadingHTTPServer(('127.0.0.1', 0), Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield 'http://127.0.0.1:%d' % server.server_port
    server.shutdown()


def play(tmp_path, prometheus, args, in_process, check=False, verbosity='-vvvv', environment=None):
    """Run one prometheus_gate task; return (its registered result, the whole output)."""
    out = tmp_path / ('result-%s.json' % in_process)
    playbook = tmp_path / 'gate.yml'
    task = dict(dict(url=prometheus, job='hotel-voice-bot', for_duration='15s', step='1s', rate_window='5s',
                     retries=0, bearer_token=TOKEN), **args)
    playbook.write_text(json.dumps([{'hosts': 'localhost', 'gather_facts': False, 'tasks': [
        dict({'hotelbot.ops.prometheus_gate': task, 'register': 'gate', 'ignore_errors': True},
             **({'environment': environment} if environment else {})),
        {'ansible.builtin.copy': {'content': '{{ gate | to_json }}', 'dest': str(out)}, 'check_mode': False},
    ]}]))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'), PATH=BIN + os.pathsep + os.environ['PATH'])
    command = [os.path.join(BIN, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local', str(playbook), verbosity,
               '-e', 'ansible_python_interpreter=%s' % sys.executable,
               '-e', 'hotelbot_controller_modules=%s' % ('true' if in_process else 'false')]
    if check:
        command.append('--check')
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text()), run.stdout + run.stderr


SAME = ('decision', 'failed', 'changed', 'threshold', 'for_seconds', 'step_seconds', 'mode')


def test_in_process_gives_the_module_result_without_a_module_process(tmp_path, prometheus):
    here, here_log = play(tmp_path, prometheus, {}, in_process=True)
    there, there_log = play(tmp_path, prometheus, {}, in_process=False)
    assert here['decision'] == 'unhealthy' and here['samples'][-1][1] == 0.5
    assert dict((k, here.get(k)) for k in SAME) == dict((k, there.get(k)) for k in SAME)
    # the same sentence, but for the times in it
    assert re.sub(r'[\d.:TZ-]+', '#', here['msg']) == re.sub(r'[\d.:TZ-]+', '#', there['msg'])
    # the module path starts a Python for the module (AnsiballZ); the controller path does not
    assert 'AnsiballZ_prometheus_gate.py' in there_log
    assert 'AnsiballZ_prometheus_gate.py' not in here_log
    # the token reached Prometheus both times, and neither output shows it
    assert Prometheus.seen.count('Bearer ' + TOKEN) >= 2
    assert TOKEN not in here_log and TOKEN not in there_log
    assert TOKEN not in json.dumps(here) and TOKEN not in json.dumps(there)


@pytest.mark.parametrize('args, option', [
    (dict(bogus=1), 'bogus'),
    (dict(mode='sometimes'), 'mode'),
    (dict(retries='many'), 'retries'),
    (dict(job=''), 'job'),
])
def test_bad_input_reads_the_same_in_both_paths(tmp_path, prometheus, args, option):
    here, here_log = play(tmp_path, prometheus, args, in_process=True, verbosity='-v')
    there, _output = play(tmp_path, prometheus, args, in_process=False, verbosity='-v')
    assert here['failed'] is True and there['failed'] is True
    assert option in here['msg'] and here['msg'] == there['msg']
    assert TOKEN not in here_log


def test_check_mode_reaches_the_work(tmp_path, prometheus):
    """The gate changes nothing either way; what must hold is that the work sees check mode and
    the result says so the same way in both paths."""
    here, _output = play(tmp_path, prometheus, {}, in_process=True, check=True, verbosity='-v')
    there, _output = play(tmp_path, prometheus, {}, in_process=False, check=True, verbosity='-v')
    assert here['changed'] is False and there['changed'] is False
    assert here['decision'] == there['decision'] == 'unhealthy'


def test_the_tasks_environment_reaches_the_work(tmp_path, prometheus):
    """A task's `environment:` applies to the work in both paths: here a proxy on a closed port, which
    the gate must go through (use_proxy) and so cannot reach Prometheus."""
    import socket
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        closed = probe.getsockname()[1]
    proxy = dict(http_proxy='http://127.0.0.1:%d' % closed, no_proxy='', NO_PROXY='')
    for in_process in (True, False):
        result, _output = play(tmp_path, prometheus, {}, in_process=in_process, verbosity='-v', environment=proxy)
        assert result['decision'] == 'inconclusive', (in_process, result['reason'])
