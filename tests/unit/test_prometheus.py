"""Unit tests of module_utils.prometheus: the sustained rule on sample lists, input, queries,
and the HTTP client against a real HTTP server on 127.0.0.1 (stdlib, in a thread)."""
import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import duration
from ansible_collections.hotelbot.ops.plugins.module_utils import prometheus as p
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, Task
from ansible_collections.hotelbot.ops.plugins.modules.prometheus_gate import SPEC
# no_proxy_env is an autouse fixture: importing it is what applies it here.
from module_runner import closed_port, no_proxy_env, run_work, spec_params  # noqa: F401  # pylint: disable=unused-import

T = 1795298400.0   # evaluation time used by the judge tests
STEP = 30.0
FOR = 600.0
MIN = 60


def series(values_by_offset):
    """[[ts, value]] for offsets (seconds before T, negative) -> value, every STEP."""
    return [[T + off, value] for off, value in values_by_offset]


def ramp(start_off, end_off, value):
    return [(off, value) for off in range(int(start_off), int(end_off) + 1, int(STEP))]


def history(breach_from, value=0.06, base=0.01, start=-30 * MIN):
    """STEP-spaced history up to T: base before breach_from, value from breach_from on."""
    return series([(off, value if off >= breach_from else base) for off in range(start, 1, int(STEP))])


def judge(samples, **kw):
    kw.setdefault('threshold', 0.05)
    return p.judge(samples, for_s=kw.pop('for_s', FOR), step_s=kw.pop('step_s', STEP), now=kw.pop('now', T), **kw)


# --------------------------------------------------------------------------- the rule

def test_6pct_for_11_minutes_is_unhealthy():
    verdict = judge(history(-11 * MIN))
    assert verdict['decision'] == 'unhealthy'
    assert verdict['breached'] is True
    assert verdict['breached_since'] == T - 11 * MIN
    assert verdict['first_breach_at'] == T - 10 * MIN   # the first in the window


def test_6pct_for_exactly_10_minutes_is_unhealthy_and_one_step_less_is_not():
    assert judge(history(-10 * MIN))['decision'] == 'unhealthy'
    assert judge(history(-10 * MIN + int(STEP)))['decision'] == 'healthy'


def test_6pct_for_9_minutes_is_healthy_with_the_breach_start():
    verdict = judge(history(-9 * MIN))
    assert verdict['decision'] == 'healthy'
    assert verdict['breached'] is False
    assert verdict['breached_since'] == T - 9 * MIN


def test_single_spike_is_healthy():
    samples = history(1, base=0.0)
    samples[-8][1] = 0.9
    verdict = judge(samples)
    assert verdict['decision'] == 'healthy'
    assert verdict['first_breach_at'] == samples[-8][0]
    assert verdict['breached_since'] is None
    assert verdict['max_value'] == 0.9


def test_exactly_the_threshold_is_not_above():
    verdict = judge(history(-30 * MIN, value=0.05))
    assert verdict['decision'] == 'healthy'
    assert verdict['first_breach_at'] is None
    # and just above it is
    assert judge(history(-30 * MIN, value=0.0500001))['decision'] == 'unhealthy'


def test_a_gap_inside_the_window_is_inconclusive():
    samples = [s for s in history(-30 * MIN) if not T - 6 * MIN < s[0] < T - 4 * MIN]
    verdict = judge(samples)
    assert verdict['decision'] == 'inconclusive'
    assert verdict['gap'] == [T - 6 * MIN, T - 4 * MIN]
    # the same gap with healthy values is inconclusive too: a breach could hide in it
    samples = [s for s in history(1, base=0.0) if not T - 6 * MIN < s[0] < T - 4 * MIN]
    assert judge(samples)['decision'] == 'inconclusive'


def test_one_missing_sample_is_a_gap_but_edge_jitter_is_not():
    samples = [s for s in history(1, base=0.0) if s[0] != T - 5 * MIN]
    assert judge(samples)['decision'] == 'inconclusive'        # 2 steps apart > 1.5 steps
    samples = [s for s in history(1, base=0.0) if s[0] != T]
    assert judge(samples)['decision'] == 'healthy'             # newest 1 step before T
    samples = [s for s in history(1, base=0.0) if s[0] not in (T, T - STEP)]
    assert judge(samples)['decision'] == 'inconclusive'        # stale: 2 steps before T


def test_a_gap_before_a_proven_breach_does_not_matter():
    samples = [s for s in history(-12 * MIN) if s[0] < T - 15 * MIN or s[0] >= T - 12 * MIN]
    verdict = judge(samples)
    assert verdict['decision'] == 'unhealthy'
    # but a gap inside the breach breaks the run: inconclusive, not unhealthy
    samples = [s for s in history(-20 * MIN) if not T - 6 * MIN < s[0] < T - 4 * MIN]
    assert judge(samples)['decision'] == 'inconclusive'


def test_a_breach_that_ended_is_not_current():
    samples = series([(off, 0.06 if off < -2 * MIN else 0.0) for off in range(-30 * MIN, 1, 30)])
    verdict = judge(samples)
    assert verdict['decision'] == 'healthy'
    assert verdict['breached_since'] is None


def test_stale_breach_is_not_unhealthy():
    samples = [s for s in history(-20 * MIN) if s[0] <= T - 5 * MIN]
    assert judge(samples)['decision'] == 'inconclusive'


@pytest.mark.parametrize('policy', ['inconclusive', 'healthy', 'unhealthy'])
def test_no_data_follows_the_policy(policy):
    verdict = judge([], on_no_data=policy)
    assert verdict['decision'] == policy and verdict['no_data'] is True
    # samples only long before the window are no data as well
    verdict = judge(series(ramp(-40 * MIN, -30 * MIN, 0.0)), on_no_data=policy)
    assert verdict['decision'] == policy and verdict['no_data'] is True


def test_nan_samples_are_missing_and_samples_after_now_are_ignored():
    samples = history(-30 * MIN)
    for s in samples:
        if T - 6 * MIN < s[0] < T - 4 * MIN:
            s[1] = 'NaN'
    assert judge(samples)['decision'] == 'inconclusive'
    future = history(1, base=0.0) + series([(30, 0.9), (60, 0.9)])
    assert judge(future)['decision'] == 'healthy'
    # string values as Prometheus sends them
    assert judge([[ts, str(v)] for ts, v in history(-11 * MIN)])['decision'] == 'unhealthy'


def test_combine_takes_the_worst():
    assert p.combine([dict(decision='healthy'), dict(decision='inconclusive')])['decision'] == 'inconclusive'
    assert p.combine([dict(decision='inconclusive'), dict(decision='unhealthy')])['decision'] == 'unhealthy'


# --------------------------------------------------------------------------- durations, times, queries

# The gate's durations are the collection's one grammar (duration.py), which takes decimals: 1.5m is 90s.
@pytest.mark.parametrize('value,seconds', [
    ('30s', 30), ('10m', 600), ('1h', 3600), ('1h30m', 5400), ('500ms', 0.5), ('2d', 172800),
    (45, 45), (1.5, 1.5), ('90', 90), ('1m30s', 90), ('1.5m', 90),
])
def test_parse_duration(value, seconds):
    assert duration.parse_duration(value, positive=True) == seconds


@pytest.mark.parametrize('value', ['', '10x', 'm', '-5', 0, -1, True, None, 'nan', '30s10m'])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError, match='step'):
        duration.parse_duration(value, 'step', positive=True)


def test_promql_duration_and_times():
    assert [duration.promql_duration(s) for s in (60, 90, 3600, 0.5, 7200, 30)] == [
        '1m', '90s', '1h', '500ms', '2h', '30s']
    assert p.iso(T) == '2026-11-21T22:00:00Z'
    assert p.iso(None) is None
    assert p.parse_time('2026-11-21T22:00:00Z') == T
    assert p.parse_time('2026-11-21T23:00:00+01:00') == T
    assert p.parse_time('2026-11-21T22:00:00') == T
    assert p.parse_time(T) == T and p.parse_time(str(T)) == T
    with pytest.raises(ValueError):
        p.parse_time('yesterday')


def test_default_queries_match_the_sandbox_metrics():
    q = p.build_queries(job='hotel-voice-bot', latency=True)
    assert q['error_ratio'] == (
        '(sum(rate(http_requests_total{job="hotel-voice-bot",status=~"5.."}[1m])) or vector(0))'
        ' / sum(rate(http_requests_total{job="hotel-voice-bot"}[1m]))')
    assert q['latency_p95'] == (
        'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="hotel-voice-bot"}[1m])))')
    assert p.build_queries(job='x')['latency_p95'] is None


def test_queries_with_selector_quoting_and_custom_query():
    q = p.build_queries(job='a"b\\c', selector='{service="x", env="prod"}', metric='req_total', status_label='code',
                        error_status_regex='5..|429', rate_window=300)
    assert q['error_ratio'] == (
        '(sum(rate(req_total{job="a\\"b\\\\c",service="x", env="prod",code=~"5..|429"}[5m])) or vector(0))'
        ' / sum(rate(req_total{job="a\\"b\\\\c",service="x", env="prod"}[5m]))')
    assert p.build_queries(selector='service="x"')['error_ratio'].startswith(
        '(sum(rate(http_requests_total{service="x",status=~"5.."}[1m]))')
    assert p.build_queries(query=' up == 0 ', job='x')['error_ratio'] == 'up == 0'


# --------------------------------------------------------------------------- input

def test_invalid_input_names_every_problem_and_queries_nothing():
    # Each layer names all its problems at once: the SPEC's (which options go together, then ranges),
    # then the gate's own (URL, durations, threshold, mode, names).
    layers = [
        (dict(bearer_token='tok-123456', url_username='u', url_password='pw-123456'),
         ['parameters are mutually exclusive: bearer_token|url_username, bearer_token|url_password']),
        (dict(retries=-1, timeout=0), ['retries must be between 0 and 10', 'timeout must be greater than 0']),
        (dict(url='ftp://x', step='5x', for_duration='1m', threshold=-1, mode='evaluate', watch_for='10m',
              job=None, status_label='bad-label', bearer_token='tok-123456'),
         ['invalid input, nothing was queried: ', 'url must be an http:// or https:// URL',
          'step must be a number of seconds or a duration like 30s',
          'threshold is a ratio between 0 and 1 (0.05 for 5%), not -1', 'watch_for and poll_interval need mode=watch',
          'set job and/or selector', 'status_label must be']),
    ]
    for params, parts in layers:
        with pytest.raises(OpsError) as err:
            run_work(SPEC, p.gate, dict(dict(url='http://127.0.0.1:1', job='x'), **params))
        for part in parts:
            assert part in err.value.msg, part
        assert 'tok-123456' not in err.value.msg


@pytest.mark.parametrize('params,expected', [
    (dict(mode='watch'), 'mode is watch but all of the following are missing: watch_for'),
    (dict(mode='watch', watch_for='5m', evaluate_at=T), 'evaluate_at cannot be used with mode=watch'),
    (dict(step='20m'), 'step (1200s) must not be longer than for (600s)'),
    (dict(step='10ms', for_duration='1h'), 'use a longer step'),
    (dict(evaluate_at='yesterday'), 'evaluate_at must be a unix timestamp or an ISO 8601 time'),
    (dict(url_password='secret-pw'), "missing parameter(s) required by 'url_password': url_username"),
    (dict(error_status_regex='5(('), 'error_status_regex is not a valid regular expression'),
    (dict(latency_p95_max=0.0), 'latency_p95_max must be greater than 0'),
    (dict(on_query_error='healthy'), 'on_query_error must be one of: inconclusive, unhealthy, got: healthy'),
])
def test_invalid_input(params, expected):
    full = dict(url='http://127.0.0.1:1', job='x')
    full.update(params)
    with pytest.raises(OpsError) as err:
        run_work(SPEC, p.gate, full)
    assert expected in err.value.msg
    assert 'secret-pw' not in err.value.msg


def test_for_alias_is_used():
    settings = p.Settings(spec_params(SPEC, {'url': 'http://p:9090', 'job': 'x', 'for': '15m'}))
    assert settings.for_s == 900


def test_secrets_are_hidden_and_sent_as_headers():
    hidden = []
    settings = p.Settings(spec_params(SPEC, dict(url='http://user:url-pass-1@p:9090/?token=qs-secret-1', job='x',
                                                 bearer_token='bearer-secret-1')), hide=lambda *v: hidden.extend(v))
    assert 'bearer-secret-1' in hidden and 'url-pass-1' in hidden and 'qs-secret-1' in hidden
    assert settings.headers == {'Authorization': 'Bearer bearer-secret-1'}
    hidden = []
    settings = p.Settings(spec_params(SPEC, dict(url='http://p:9090', job='x', url_username='ops',
                                                 url_password='basic-pw-1')), hide=lambda *v: hidden.extend(v))
    token = base64.b64encode(b'ops:basic-pw-1').decode()
    assert settings.headers == {'Authorization': 'Basic ' + token}
    assert 'basic-pw-1' in hidden and token in hidden
    assert p.Client('http://user:url-pass-1@p:9090', None).display_url == 'http://user:********@p:9090'


# --------------------------------------------------------------------------- HTTP against a real server

def matrix(values, metric=None):
    return {'status': 'success', 'data': {'resultType': 'matrix', 'result': [
        {'metric': metric or {}, 'values': [[ts, str(v)] for ts, v in values]}]}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def _send(self, status, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        srv = self.server
        length = int(self.headers.get('Content-Length') or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        with srv.lock:
            srv.requests.append(dict(path=urlsplit(self.path).path, form=form,
                                     auth=self.headers.get('Authorization')))
            count = len(srv.requests)
        behaviour = srv.behaviour(count, form) if callable(srv.behaviour) else srv.behaviour
        if behaviour == 'close':
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, body = behaviour
        self._send(status, body)


@pytest.fixture
def srv():
    server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    server.lock = threading.Lock()
    server.requests = []
    server.behaviour = (200, matrix([]))
    server.url = 'http://127.0.0.1:%d' % server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def gate(url, sleeps=None, **params):
    full = dict(url=url, job='hotel-voice-bot', evaluate_at=T, retries=2, retry_delay=0.5)
    full.update(params)
    return run_work(SPEC, lambda task: p.gate(task, sleep=(sleeps.append if sleeps is not None else lambda s: None)),
                    full)


def test_unhealthy_history_from_the_api_with_the_query_sent(srv):
    srv.behaviour = (200, matrix(history(-11 * MIN)))
    result = gate(srv.url)
    assert result['decision'] == 'unhealthy' and result['healthy'] is False and result['changed'] is False
    assert result['breached_since'] == p.iso(T - 11 * MIN)
    assert result['decided_at'] == p.iso(T)
    assert result['samples'][-1] == [T, 0.06]
    assert len(result['samples']) <= p.MAX_SAMPLES_RETURNED
    (request,) = srv.requests
    assert request['path'] == '/api/v1/query_range'
    assert request['form']['query'] == result['query']['error_ratio']
    assert float(request['form']['end']) == T and float(request['form']['step']) == STEP
    assert float(request['form']['start']) <= T - FOR - STEP
    assert result['reason'].endswith('.') and 'above 0.05' in result['reason']


def test_fail_on_unhealthy_raises_with_the_result(srv):
    srv.behaviour = (200, matrix(history(-11 * MIN)))
    with pytest.raises(OpsError) as err:
        gate(srv.url, fail_on_unhealthy=True)
    assert err.value.result['decision'] == 'unhealthy'
    assert 'above 0.05' in err.value.msg
    srv.behaviour = (200, matrix(history(-9 * MIN)))
    result = gate(srv.url, fail_on_unhealthy=True)
    assert result['decision'] == 'healthy'
    assert result['breached_since'] == p.iso(T - 9 * MIN)    # breaching, not for long enough yet
    srv.behaviour = (200, matrix(history(1)))
    assert gate(srv.url)['breached_since'] is None


def test_empty_result_is_no_data_with_policy(srv):
    assert gate(srv.url)['decision'] == 'inconclusive'
    assert gate(srv.url, on_no_data='healthy')['decision'] == 'healthy'
    assert gate(srv.url, on_no_data='unhealthy')['decision'] == 'unhealthy'


def test_500_answers_are_retried_then_inconclusive_never_healthy(srv):
    srv.behaviour = (500, {'status': 'error', 'errorType': 'internal', 'error': 'boom'})
    sleeps = []
    result = gate(srv.url, sleeps=sleeps)
    assert result['decision'] == 'inconclusive'
    assert len(srv.requests) == 3 and sleeps == [0.5, 0.5]
    assert result['attempts'] == 3
    assert result['rules']['error_ratio']['query_error'] == 'HTTP 500 (internal): boom (after 3 attempts)'
    srv.requests[:] = []
    assert gate(srv.url, on_query_error='unhealthy')['decision'] == 'unhealthy'


def test_closed_connections_are_retried_and_recovery_counts(srv):
    srv.behaviour = lambda count, form: 'close' if count <= 2 else (200, matrix(history(1, base=0.0)))
    result = gate(srv.url)
    assert result['decision'] == 'healthy'
    assert len(srv.requests) == 3 and result['attempts'] == 3


def test_connection_refused_is_inconclusive(srv):
    result = gate('http://127.0.0.1:%d' % closed_port(), retries=1)
    assert result['decision'] == 'inconclusive'
    assert 'connection refused (after 2 attempts)' in result['reason']


def test_bad_query_fails_at_once_without_retries(srv):
    srv.behaviour = (400, {'status': 'error', 'errorType': 'bad_data', 'error': 'parse error at char 3'})
    with pytest.raises(OpsError, match='rejected the query: HTTP 400 \\(bad_data\\): parse error'):
        gate(srv.url, query='sum(((')
    assert len(srv.requests) == 1


def test_401_is_a_query_error_not_retried_and_token_not_shown(srv):
    srv.behaviour = (401, b'Unauthorized')
    result = gate(srv.url, bearer_token='bearer-secret-1')
    assert result['decision'] == 'inconclusive'
    assert len(srv.requests) == 1
    assert srv.requests[0]['auth'] == 'Bearer bearer-secret-1'
    assert 'bearer-secret-1' not in json.dumps(result)


def test_basic_auth_is_sent(srv):
    srv.behaviour = (200, matrix(history(1, base=0.0)))
    gate(srv.url, url_username='ops', url_password='basic-pw-1')
    assert srv.requests[0]['auth'] == 'Basic ' + base64.b64encode(b'ops:basic-pw-1').decode()


def test_latency_rule_and_worst_series(srv):
    def answer(count, form):
        if form['query'].startswith('histogram_quantile'):
            return 200, matrix(history(-12 * MIN, value=2.4, base=0.2))
        return 200, matrix(history(1, base=0.0))
    srv.behaviour = answer
    result = gate(srv.url, latency_p95_max=1.0)
    assert result['decision'] == 'unhealthy'
    assert result['rules']['error_ratio']['decision'] == 'healthy'
    assert result['rules']['latency_p95']['decision'] == 'unhealthy'
    assert result['latency_samples'][-1] == [T, 2.4]
    assert 'latency above 1 for 12m' in result['reason']

    two = matrix(history(1, base=0.0), {'path': '/a'})
    two['data']['result'] += matrix(history(-11 * MIN), {'path': '/b'})['data']['result']
    srv.behaviour = (200, two)
    result = gate(srv.url, query='sum by (path) (x)')
    assert result['decision'] == 'unhealthy'
    assert result['rules']['error_ratio']['labels'] == {'path': '/b'}


def test_watch_returns_at_the_first_unhealthy_evaluation(srv):
    clock = {'now': T - 5 * MIN}

    def answer(count, form):
        end = float(form['end'])
        return 200, matrix([s for s in history(-13 * MIN) if s[0] <= end])
    srv.behaviour = answer

    def sleep(seconds):
        clock['now'] += seconds
    params = dict(url=srv.url, job='x', mode='watch', watch_for='20m', poll_interval='1m', retries=0)
    result = p.gate(Task(spec_params(SPEC, params)), sleep=sleep, clock=lambda: clock['now'],
                    monotonic=lambda: clock['now'])
    assert result['decision'] == 'unhealthy'
    # breach began at T-13m, so it is 10m old at T-3m: evaluations at T-5m, T-4m, T-3m
    assert result['evaluations'] == 3
    assert result['decisions'] == ['healthy', 'healthy', 'unhealthy']
    assert result['decided_at'] == p.iso(T - 3 * MIN)
    assert result['first_breach_at'] == p.iso(T - 13 * MIN)


def test_watch_is_healthy_only_after_the_whole_duration(srv):
    clock = {'now': T}
    srv.behaviour = lambda count, form: (200, matrix(
        [[float(form['end']) - off, 0.01] for off in range(40 * MIN, -1, -30)]))

    def sleep(seconds):
        clock['now'] += seconds
    params = dict(url=srv.url, job='x', mode='watch', watch_for='5m', retries=0)
    result = p.gate(Task(spec_params(SPEC, params)), sleep=sleep, clock=lambda: clock['now'],
                    monotonic=lambda: clock['now'])
    assert result['decision'] == 'healthy'
    assert result['evaluations'] == 11   # every step (30s) for 5m, both ends included
    assert clock['now'] == T + 5 * MIN


class MillisecondPrometheus:
    """query_range as Prometheus answers it: start and end rounded to the millisecond, one point
    per step from start; the ratio is 0.3 from breach_at on, 0 before."""

    def __init__(self, breach_at):
        self.breach_at = breach_at

    def query_range(self, query, start, end, step):
        first = round(start * 1000) / 1000.0
        values, ts = [], first
        while ts <= round(end * 1000) / 1000.0 + 1e-9:
            values.append([ts, '0.3' if ts >= self.breach_at else '0'])
            ts = round((ts + step) * 1000) / 1000.0
        return [dict(metric={}, values=values)]


@pytest.mark.parametrize('fraction', [0.0, 0.0003, 0.0005, 0.0007, 0.0009])
def test_the_rule_is_met_at_for_whatever_the_sub_millisecond_part_of_now(fraction):
    """A breach that began exactly `for` ago is unhealthy; one step less is not. The gate's clock
    has sub-millisecond digits Prometheus drops; they must not cost a step."""
    settings = p.Settings(spec_params(SPEC, dict(url='http://p:9090', job='x', for_duration='15s', step='1s')))
    now = 1763850000.368 + fraction
    met = p.evaluate(MillisecondPrometheus(breach_at=1763850000.368 - 15), settings, now)
    assert met['decision'] == p.UNHEALTHY, met['reason']
    not_yet = p.evaluate(MillisecondPrometheus(breach_at=1763850000.368 - 14), settings, now)
    assert not_yet['decision'] == p.HEALTHY, not_yet['reason']


def test_watch_evaluates_on_a_fixed_cadence():
    """Evaluations that take time do not drift: the sleeps make up for them."""
    clock = {'t': 1763850000.0}
    slept = []

    class SlowClient:
        def query_range(self, query, start, end, step):
            clock['t'] += 0.3   # each evaluation takes 0.3 s
            return [dict(metric={}, values=[[round(end * 1000) / 1000.0 - k, '0'] for k in range(20, -1, -1)])]

    def sleep(seconds):
        slept.append(round(seconds, 3))
        clock['t'] += seconds

    def settings_clock():
        return clock['t']

    params = spec_params(SPEC, dict(url='http://p:9090', job='x', for_duration='15s', step='1s', mode='watch',
                                    watch_for='3s'))
    original = p.Client.query_range
    try:
        p.Client.query_range = lambda self, *args: SlowClient().query_range(*args)
        result = p.gate(Task(params), sleep=sleep, clock=settings_clock, monotonic=settings_clock)
    finally:
        p.Client.query_range = original
    assert result['decision'] == p.HEALTHY
    assert slept[:2] == [0.7, 0.7], slept


# --------------------------------------------------------------------------- issue 11: limits, bad input, bad answers

@pytest.mark.parametrize('threshold', [5, 1, 0, 1.5, -0.01, float('nan')])
def test_a_threshold_outside_0_1_is_refused_and_nothing_is_queried(srv, threshold):
    with pytest.raises(OpsError) as err:
        gate(srv.url, threshold=threshold)
    assert 'threshold is a ratio between 0 and 1 (0.05 for 5%%), not %g' % threshold in err.value.msg
    assert '\n' not in err.value.msg
    assert srv.requests == []


def test_threshold_5_no_longer_judges_a_50pct_error_ratio_healthy(srv):
    srv.behaviour = (200, matrix(history(-30 * MIN, value=0.5)))
    assert gate(srv.url, threshold=0.05)['decision'] == 'unhealthy'
    with pytest.raises(OpsError):
        gate(srv.url, threshold=5)


def test_the_latency_limit_is_seconds_not_a_ratio(srv):
    # 5 seconds is a fine p95 limit while the ratio threshold stays a share
    srv.behaviour = (200, matrix(history(1, base=0.0)))
    assert gate(srv.url, threshold=0.05, latency_p95_max=5)['decision'] == 'healthy'
    for bad in (0, -1, float('inf')):
        with pytest.raises(OpsError, match='latency_p95_max must be greater than 0 seconds'):
            gate(srv.url, latency_p95_max=bad)


@pytest.mark.parametrize('retries, ok', [(0, True), (10, True), (11, False), (1000000, False), (-1, False)])
def test_retries_are_bounded(srv, retries, ok):
    srv.behaviour = (200, matrix(history(1, base=0.0)))
    if ok:
        assert gate(srv.url, retries=retries)['decision'] == 'healthy'
    else:
        with pytest.raises(OpsError, match='retries must be between 0 and 10, got %d' % retries):
            gate(srv.url, retries=retries)
        assert srv.requests == []


@pytest.mark.parametrize('url, message', [
    ('http://[::1', 'url is not a valid URL: Invalid IPv6 URL'),
    ('http://127.0.0.1:99999', 'url is not a valid URL: port out of range 0-65535'),
    ('http://ops:pw-leak-9@[::1', 'url is not a valid URL: Invalid IPv6 URL'),
    ('127.0.0.1:9090', 'url must be an http:// or https:// URL with a host'),
    ('http://', 'url must be an http:// or https:// URL with a host'),
])
def test_bad_urls_are_named_not_a_bug(url, message):
    hidden = []
    with pytest.raises(OpsError) as err:
        run_work(SPEC, p.gate, dict(url=url, job='x'), hide=hidden.append)
    assert message in err.value.msg and '\n' not in err.value.msg
    assert 'pw-leak-9' not in err.value.msg
    assert ('pw-leak-9' in hidden) == ('pw-leak-9' in url)


def test_a_missing_ca_path_is_named(tmp_path):
    missing = str(tmp_path / 'ca.pem')
    with pytest.raises(OpsError) as err:
        run_work(SPEC, p.gate, dict(url='https://127.0.0.1:1', job='x', ca_path=missing))
    assert err.value.msg == 'ca_path %s does not exist or is not a file, nothing was requested' % missing


def answer(data):
    return {'status': 'success', 'data': data}


@pytest.mark.parametrize('body, what', [
    (answer([]), 'data is a list, not an object'),
    (answer([{'resultType': 'matrix'}]), 'data is a list, not an object'),
    ({'status': 'success'}, 'data is missing or null, not an object'),
    (answer({'result': []}), 'data has no resultType'),
    (answer({'resultType': 'matrix', 'result': 'none'}), 'data.result is a string, not a list'),
    (answer({'resultType': 'matrix', 'result': {'a': 1}}), 'data.result is an object, not a list'),
    (answer({'resultType': 'matrix'}), 'data.result is missing or null, not a list'),
    (answer({'resultType': 'matrix', 'result': ['x']}), 'data.result[0] is a string, not an object'),
    (answer({'resultType': 'matrix', 'result': [{'metric': {}}]}), 'data.result[0].values is missing or null'),
    (answer({'resultType': 'matrix', 'result': [{'metric': [], 'values': []}]}), 'data.result[0].metric is a list'),
    (answer({'resultType': 'matrix', 'result': [{'values': [[T, '0.01'], [T]]}]}),
     'data.result[0].values[1] is not a [time, value] pair'),
    (answer({'resultType': 'matrix', 'result': [{'values': [[T, 'abc']]}]}),
     'data.result[0].values[0] has the value "abc", not a number'),
    (answer({'resultType': 'matrix', 'result': [{'values': [[T, None]]}]}),
     'data.result[0].values[0] has the value null, not a number'),
    (answer({'resultType': 'matrix', 'result': [{'values': [['yesterday', '0.1']]}]}),
     'data.result[0].values[0] has the time "yesterday", not a number'),
])
def test_an_unusable_answer_is_inconclusive_naming_what_is_wrong(srv, body, what):
    srv.behaviour = (200, body)
    result = gate(srv.url)
    assert result['decision'] == 'inconclusive' and result['healthy'] is False
    assert what in result['reason'] and what in result['rules']['error_ratio']['query_error']
    assert len(srv.requests) == 1   # a malformed answer is not retried
    # the query-error policy decides, as for a Prometheus that cannot be asked
    assert gate(srv.url, on_query_error='unhealthy')['decision'] == 'unhealthy'


def test_nan_and_inf_are_legal_values(srv):
    # NaN (0/0: no requests) is missing data; +Inf is above any threshold
    values = history(-30 * MIN, value='+Inf')
    srv.behaviour = (200, {'status': 'success', 'data': {'resultType': 'matrix', 'result': [
        {'metric': {}, 'values': [[ts, v] for ts, v in values]}]}})
    assert gate(srv.url)['decision'] == 'unhealthy'
    values = [[ts, 'NaN'] for ts, _v in history(1)]
    srv.behaviour = (200, {'status': 'success', 'data': {'resultType': 'matrix', 'result': [
        {'metric': {}, 'values': values}]}})
    result = gate(srv.url)
    assert result['decision'] == 'inconclusive' and result['rules']['error_ratio']['no_data'] is True
