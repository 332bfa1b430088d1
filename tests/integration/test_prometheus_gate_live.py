"""prometheus_gate against a real Prometheus serving backfilled synthetic history, through `ansible`.

One Prometheus (no scrape targets) serves every scenario as its own job label (see promdata.py);
the module runs with evaluate_at at the scenario's evaluation time T, 24 hours ago. Query
failures use a closed port and a local HTTP server answering 500. The monitoring rules are
checked and unit-tested with promtool, and a broken copy of them must fail.
"""
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import prometheus
from tests.integration import promdata
from tests.integration.conftest import BIN, ROOT

PROXY_VARS = ('http_proxy', 'https_proxy', 'all_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY')
MONITORING = os.path.join(ROOT, 'monitoring')


def _env():
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               PATH=BIN + os.pathsep + os.environ.get('PATH', ''))
    for name in PROXY_VARS:
        env.pop(name, None)
    return env


def adhoc(args, check_mode=False, verbosity=0):
    """Run the module once with `ansible localhost -m`; (rc, result dict, raw output)."""
    cmd = [os.path.join(BIN, 'ansible'), 'localhost', '-o', '-m', 'hotelbot.ops.prometheus_gate',
           '-a', json.dumps(args)]
    if check_mode:
        cmd.append('--check')
    if verbosity:
        cmd.append('-' + 'v' * verbosity)
    completed = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180, check=False)
    output = completed.stdout + completed.stderr
    line = [ln for ln in completed.stdout.splitlines() if ln.startswith('localhost |')]
    assert line, output
    return completed.returncode, json.loads(line[0].split('=>', 1)[1]), output


@pytest.fixture(scope='module')
def prom(tmp_path_factory):
    for binary in (promdata.PROMETHEUS, promdata.PROMTOOL):
        if not os.path.exists(binary):
            pytest.fail('%s is missing: run `make setup` (Debian package prometheus)' % binary)
    evaluate_at = (int(time.time()) // 3600 - 24) * 3600
    server = promdata.Server(str(tmp_path_factory.mktemp('prometheus')), evaluate_at)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_gate(prom, job, **extra):
    args = dict(url=prom.url, job=job, evaluate_at=prom.evaluate_at, retries=0)
    args.update(extra)
    rc, result, output = adhoc(args)
    assert rc == 0, output
    assert result['changed'] is False
    return result


# --------------------------------------------------------------------------- decisions on real data

def test_6pct_for_11_minutes_is_unhealthy(prom):
    result = run_gate(prom, 'gate-6pct-11m')
    assert result['decision'] == 'unhealthy', result['reason']
    # errors began at T-11m; the 1m rate is above 5% from 30s later
    assert result['breached_since'] == prometheus.iso(prom.evaluate_at - 10 * 60 - 30)
    assert result['decided_at'] == prometheus.iso(prom.evaluate_at)
    assert result['samples'][-1] == [prom.evaluate_at, 0.06]
    assert all(t <= prom.evaluate_at for t, _v in result['samples'])
    assert result['query']['error_ratio'] == (
        '(sum(rate(http_requests_total{job="gate-6pct-11m",status=~"5.."}[1m])) or vector(0))'
        ' / sum(rate(http_requests_total{job="gate-6pct-11m"}[1m]))')


def test_the_same_history_one_minute_earlier_is_not_yet_unhealthy(prom):
    at = prometheus.iso(prom.evaluate_at - 60)
    result = run_gate(prom, 'gate-6pct-11m', evaluate_at=at)
    assert result['decision'] == 'healthy', result['reason']
    assert result['breached_since'] is None or result['breached_since'] > prometheus.iso(prom.evaluate_at - 11 * 60)


def test_fail_on_unhealthy_fails_the_task_with_the_decision(prom):
    rc, result, output = adhoc(dict(url=prom.url, job='gate-6pct-11m', evaluate_at=prom.evaluate_at,
                                    fail_on_unhealthy=True))
    assert rc != 0, output
    assert 'FAILED' in output and result['decision'] == 'unhealthy'
    assert 'above 0.05' in result['msg']


def test_6pct_for_9_minutes_is_not_unhealthy(prom):
    result = run_gate(prom, 'gate-6pct-9m')
    assert result['decision'] == 'healthy', result['reason']
    assert result['breached_since'] is not None     # breaching, but not for long enough
    assert result['rules']['error_ratio']['breached'] is False


def test_a_single_spike_is_healthy(prom):
    result = run_gate(prom, 'gate-spike')
    assert result['decision'] == 'healthy', result['reason']
    assert result['first_breach_at'] is not None
    assert max(v for _t, v in result['samples']) > 0.05


def test_a_gap_in_the_data_is_inconclusive(prom):
    result = run_gate(prom, 'gate-gap')
    assert result['decision'] == 'inconclusive', result['reason']
    assert result['rules']['error_ratio']['gap'] is not None


def test_exactly_5pct_is_not_above(prom):
    result = run_gate(prom, 'gate-5pct', **{'for': '10m'})
    assert result['decision'] == 'healthy', result['reason']
    values = [v for _t, v in result['samples']]
    assert values and all(v == 0.05 for v in values)


def test_a_service_without_5xx_series_is_healthy_not_no_data(prom):
    result = run_gate(prom, 'gate-no-5xx-series')
    assert result['decision'] == 'healthy', result['reason']
    assert all(v == 0 for _t, v in result['samples'])


def test_latency_rule(prom):
    assert run_gate(prom, 'gate-slow')['decision'] == 'healthy'
    result = run_gate(prom, 'gate-slow', latency_p95_max=1.0)
    assert result['decision'] == 'unhealthy', result['reason']
    assert result['rules']['error_ratio']['decision'] == 'healthy'
    assert result['rules']['latency_p95']['decision'] == 'unhealthy'
    assert result['latency_samples'][-1][1] > 1.0
    assert run_gate(prom, 'gate-slow', latency_p95_max=3.0)['decision'] == 'healthy'


def test_unknown_job_is_no_data_per_policy(prom):
    result = run_gate(prom, 'no-such-job')
    assert result['decision'] == 'inconclusive'
    assert result['rules']['error_ratio']['no_data'] is True
    assert run_gate(prom, 'no-such-job', on_no_data='healthy')['decision'] == 'healthy'
    assert run_gate(prom, 'no-such-job', on_no_data='unhealthy')['decision'] == 'unhealthy'


def test_check_mode_decides_the_same(prom):
    rc, result, output = adhoc(dict(url=prom.url, job='gate-6pct-11m', evaluate_at=prom.evaluate_at),
                               check_mode=True)
    assert rc == 0, output
    assert result['decision'] == 'unhealthy' and result['changed'] is False


def test_watch_re_evaluates_until_the_end(prom):
    # The synthetic history is a day old, so "now" has no data: inconclusive, never healthy.
    started = time.monotonic()
    result = run_gate(prom, 'gate-6pct-11m', evaluate_at=None, mode='watch', watch_for=3, poll_interval=1)
    assert time.monotonic() - started >= 3
    assert result['decision'] == 'inconclusive'
    assert result['evaluations'] >= 3 and set(result['decisions']) == {'inconclusive'}


def test_invalid_promql_fails_clearly(prom):
    args = dict(url=prom.url, query='sum(rate(http_requests_total[1m]', retries=3, evaluate_at=prom.evaluate_at)
    rc, result, output = adhoc(args)
    assert rc != 0, output
    assert 'rejected the query: HTTP 400 (bad_data)' in result['msg']
    assert result.get('attempts') is None


# --------------------------------------------------------------------------- Prometheus unreachable or failing

def closed_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class Failing(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def do_POST(self):
        with self.server.lock:
            self.server.hits += 1
            self.server.auth.append(self.headers.get('Authorization'))
        body = json.dumps({'status': 'error', 'errorType': 'internal', 'error': 'storage unavailable'}).encode()
        self.send_response(500)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def failing():
    server = ThreadingHTTPServer(('127.0.0.1', 0), Failing)
    server.lock = threading.Lock()
    server.hits = 0
    server.auth = []
    server.url = 'http://127.0.0.1:%d' % server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_prometheus_down_is_inconclusive_or_unhealthy_by_policy():
    url = 'http://127.0.0.1:%d' % closed_port()
    rc, result, output = adhoc(dict(url=url, job='hotel-voice-bot', retries=1, retry_delay=0.1))
    assert rc == 0, output
    assert result['decision'] == 'inconclusive'
    assert 'connection refused' in result['rules']['error_ratio']['query_error']
    assert result['attempts'] == 2
    rc, result, output = adhoc(dict(url=url, job='hotel-voice-bot', retries=0, on_query_error='unhealthy'))
    assert rc == 0, output
    assert result['decision'] == 'unhealthy'


def test_500_answers_are_retried_then_inconclusive_and_secrets_never_shown(failing):
    token = 'prom-bearer-token-4711'
    rc, result, output = adhoc(dict(url=failing.url, job='hotel-voice-bot', retries=2, retry_delay=0.1,
                                    bearer_token=token), verbosity=4)
    assert rc == 0, output
    assert result['decision'] == 'inconclusive'
    assert failing.hits == 3 and result['attempts'] == 3
    assert failing.auth == ['Bearer ' + token] * 3
    assert 'storage unavailable' in result['rules']['error_ratio']['query_error']
    assert token not in output

    password = 'basic-password-0815'
    rc, result, output = adhoc(dict(url=failing.url, job='hotel-voice-bot', retries=0, url_username='ops',
                                    url_password=password, on_query_error='unhealthy'), verbosity=4)
    assert rc == 0, output
    assert result['decision'] == 'unhealthy'
    assert password not in output


# --------------------------------------------------------------------------- monitoring rules

def promtool(*args, cwd=None):
    return subprocess.run([promdata.PROMTOOL] + list(args), capture_output=True, text=True, timeout=120,
                          check=False, cwd=cwd)


def test_monitoring_rules_check_and_unit_tests_pass():
    rules = sorted(os.path.join(MONITORING, f) for f in os.listdir(MONITORING) if f.endswith('.rules.yml'))
    tests = sorted(os.path.join(MONITORING, 'tests', f) for f in os.listdir(os.path.join(MONITORING, 'tests'))
                   if f.endswith('.yml'))
    assert rules and tests
    checked = promtool('check', 'rules', *rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool('test', 'rules', *tests)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.parametrize('old,new', [
    ('> 0.05', '>= 0.05'),        # exactly 5% would fire
    ('for: 10m', 'for: 8m'),      # 6% for 9m would fire
    ('[1m]))\n            or', '[1m]))\n            and'),   # no value without 5xx series
])
def test_a_broken_rule_fails_the_rule_tests(tmp_path, old, new):
    shutil.copytree(MONITORING, str(tmp_path / 'monitoring'))
    path = tmp_path / 'monitoring' / 'hotel-voice-bot.rules.yml'
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    tested = promtool('test', 'rules', str(tmp_path / 'monitoring' / 'tests' / 'hotel-voice-bot.test.yml'))
    assert tested.returncode != 0, tested.stdout


def test_a_syntax_error_fails_the_rule_check(tmp_path):
    path = tmp_path / 'bad.rules.yml'
    path.write_text((open(os.path.join(MONITORING, 'hotel-voice-bot.rules.yml')).read()
                     .replace('sum by (job) (rate(', 'sum by (job) (rate((', 1)))
    assert promtool('check', 'rules', str(path)).returncode != 0
