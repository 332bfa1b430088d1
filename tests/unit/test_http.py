"""Unit tests of module_utils.http against a real HTTP server on 127.0.0.1 (stdlib, in a thread)."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import http as h
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError
from ansible_collections.hotelbot.ops.plugins.modules.http_check import SPEC
from module_runner import closed_port, run_module, run_work

HEALTH = {'status': 'healthy', 'version': '1.4.2', 'build': 7, 'ready': True,
          'faqs': [{'id': 1, 'q': 'Check-in?'}, {'id': 2, 'q': 'Breakfast?'}]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status, body, ctype='application/json'):
        data = body if isinstance(body, bytes) else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode())
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    def _route(self):
        srv = self.server
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else b''
        with srv.lock:
            srv.requests.append((self.command, self.path))
            srv.hits[parts.path] = srv.hits.get(parts.path, 0) + 1
            hits = srv.hits[parts.path]
        if parts.path == '/health':
            return self._send(200, HEALTH)
        if parts.path.startswith('/status/'):
            code = int(parts.path.rsplit('/', 1)[1])
            return self._send(code, {'status': 'unhealthy' if code >= 500 else 'other'})
        if parts.path == '/sleep':
            time.sleep(float(query.get('s', '0.2')))
            return self._send(200, {'slept': True})
        if parts.path == '/flaky':
            # fails (503) for the first `fail` requests, then answers 200 healthy
            if hits <= int(query.get('fail', '2')):
                return self._send(503, {'status': 'starting'})
            return self._send(200, {'status': 'healthy'})
        if parts.path == '/echo':
            return self._send(200, {'method': self.command, 'query': query,
                                    'headers': {k.lower(): v for k, v in self.headers.items()},
                                    'body': body.decode()})
        if parts.path == '/text':
            return self._send(200, 'Hello from the hotel bot', 'text/plain; charset=utf-8')
        if parts.path == '/redirect':
            self.send_response(302)
            self.send_header('Location', '/health')
            self.send_header('Content-Length', '0')
            self.end_headers()
            return None
        return self._send(404, {'error': 'not found'})

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = _route


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    # Loopback requests must not go to a proxy configured on the machine.
    for name in ('http_proxy', 'https_proxy', 'all_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY'):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope='module')
def server():
    srv = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.requests = []
    srv.hits = {}
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = 'http://127.0.0.1:%d' % srv.server_address[1]
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def srv(server):
    with server.lock:
        server.requests.clear()
        server.hits.clear()
    return server


def run_params(params, check_mode=False, hidden=None):
    """http_check's work as the module runs it (params completed from its SPEC), retry pauses cut short."""
    hidden = hidden if hidden is not None else set()
    return run_work(SPEC, lambda task: h.check_http(task, sleep=lambda s: time.sleep(min(s, 0.05))), params,
                    check_mode=check_mode, hide=lambda *v: hidden.update(v))


def run(srv, checks, check_mode=False, hidden=None, **top):
    params = dict(base_url=srv.url, checks=checks)
    params.update(top)
    return run_params(params, check_mode=check_mode, hidden=hidden)


# ----------------------------------------------------------------------- statistics

@pytest.mark.parametrize('pct, expected', [(0, 15), (5, 15), (30, 20), (40, 20), (50, 35), (100, 50)])
def test_percentile_nearest_rank_known_list(pct, expected):
    assert h.percentile([50, 15, 40, 20, 35], pct) == expected


def test_percentile_edges():
    assert h.percentile(list(range(1, 101)), 95) == 95
    assert h.percentile(list(range(1, 101)), 29) == 29     # 0.29 * 100 is 28.999... in floats
    assert h.percentile(list(range(1, 11)), 95) == 10      # rank ceil(9.5) = 10
    assert h.percentile(list(range(1, 11)), 50) == 5
    assert h.percentile([7], 95) == 7
    assert h.percentile([], 50) is None
    with pytest.raises(ValueError):
        h.percentile([1], 101)


def test_latency_stats():
    stats = h.latency_stats([3.0, 1.0, 2.0, 10.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    assert stats == dict(min=1.0, p50=5.0, p95=10.0, max=10.0, mean=5.5)
    assert h.latency_stats([]) == dict(min=None, p50=None, p95=None, max=None, mean=None)
    assert h.latency_stats([1.23456])['p95'] == 1.23


# ----------------------------------------------------------------------- URLs and masking

def test_join_url_keeps_base_path():
    assert h.join_url('https://h/prefix/', '/api/health') == 'https://h/prefix/api/health'
    assert h.join_url('https://h', 'api/faqs?limit=5') == 'https://h/api/faqs?limit=5'


def test_mask_url_masks_secret_query_values_and_password_only():
    url = 'https://bot:pw1@h/api/whatsapp/webhook?token=abc123&limit=5&api_key=k9&x=1&Password=p#frag'
    assert h.mask_url(url) == ('https://bot:********@h/api/whatsapp/webhook'
                               '?token=********&limit=5&api_key=********&x=1&Password=********#frag')
    assert h.mask_url('https://h/p?x=1&y=2', ('x',)) == 'https://h/p?x=********&y=2'
    assert h.mask_url('https://h/api/faqs?language=en&limit=5') == 'https://h/api/faqs?language=en&limit=5'
    assert set(h.url_secrets(url)) == {'pw1', 'abc123', 'k9', 'p'}
    assert set(h.url_secrets('https://h/p?token=a%2Bb')) == {'a%2Bb', 'a+b'}


def test_header_secrets_split_the_scheme():
    assert h.header_secrets('Bearer s3cr3t') == ['Bearer s3cr3t', 's3cr3t']
    assert h.header_secrets('rawkey') == ['rawkey']


# ----------------------------------------------------------------------- JSON fields

@pytest.mark.parametrize('field, expected, error', [
    ('status', 'healthy', None),
    ('status', 'unhealthy', "json field status: expected 'unhealthy', got 'healthy'"),
    ('faqs.0.id', 1, None),
    ('faqs.-1.id', 2, None),
    ('faqs.1.q', 'Breakfast?', None),
    ('faqs.5.id', 1, 'json field faqs.5.id: missing (faqs has 2 items)'),
    ('faqs.x', 1, "json field faqs.x: missing (faqs is an array, 'x' is not an index)"),
    ('nope', 1, "json field nope: missing (the document has no key 'nope')"),
    ('status.x', 1, 'json field status.x: missing (status is string, not an object or array)'),
    ('faqs|length', 2, None),
    ('faqs|length', 5, 'json field faqs|length: expected 5, got 2'),
    ('build|length', 1, 'json field build|length: number has no length'),
    ('faqs|type', 'array', None),
    ('faqs.0|exists', True, None),
    ('faqs.9|exists', False, None),
    ('faqs.9|exists', True, 'json field faqs.9|exists: expected true, got false'),
    ('build', '7', None),                   # string expected matches the same number
    ('ready', True, None),
    ('ready', 1, 'json field ready: expected 1, got true'),   # true is not 1
    ('', HEALTH, None),
])
def test_check_json_field(field, expected, error):
    assert h.check_json_field(HEALTH, field, expected) == error


# ----------------------------------------------------------------------- requests

def test_healthy_check_passes_with_counts_latency_and_response(srv):
    result = run(srv, [dict(name='health', path='/health', count=3,
                            json_fields={'status': 'healthy', 'faqs.0.id': 1, 'faqs|length': 2},
                            body_contains='healthy')])
    check = result['checks']['health']
    assert result['passed'] is True and check['passed'] is True
    assert (check['ok'], check['failed'], check['count']) == (3, 0, 3)
    assert check['status_counts'] == {'200': 3}
    assert check['errors'] == [] and check['attempts'] == 1
    assert check['url'] == srv.url + '/health' and check['method'] == 'GET'
    lat = check['latency_ms']
    assert 0 < lat['min'] <= lat['p50'] <= lat['p95'] <= lat['max'] and lat['mean'] > 0
    assert check['response']['json']['version'] == '1.4.2'
    assert result['failed_checks'] == [] and result['msg'] == '1 of 1 checks passed'
    assert result['summary'][0].startswith('health: passed, 3/3 ok, p95 ')
    assert srv.hits['/health'] == 3


def test_wrong_status_and_json_field_are_reported_and_fail(srv):
    with pytest.raises(OpsError) as err:
        run(srv, [dict(name='health', path='/status/503', count=2, json_fields={'status': 'healthy'}),
                  dict(name='faqs', path='/health')])
    assert err.value.msg == '1 of 2 checks failed: health (expected status [200], got 503)'
    check = err.value.result['checks']['health']
    assert check['errors'] == ['expected status [200], got 503',
                               "json field status: expected 'healthy', got 'unhealthy'"]
    assert (check['ok'], check['failed']) == (0, 2)
    assert check['status_counts'] == {'503': 2}
    assert check['response']['status'] == 503
    assert err.value.result['passed'] is False
    assert err.value.result['failed_checks'] == ['health']
    assert err.value.result['checks']['faqs']['passed'] is True


def test_accepted_statuses_and_fail_on_error_false(srv):
    result = run(srv, [dict(name='gone', path='/status/404', status=[404, 410]),
                       dict(name='bad', path='/status/500')], fail_on_error=False)
    assert result['checks']['gone']['passed'] is True
    assert result['passed'] is False and result['failed_checks'] == ['bad']
    assert result['msg'] == '1 of 2 checks failed: bad (expected status [200], got 500)'
    assert result['summary'][1] == 'bad: FAILED, 0/1 ok, p95 %.1f ms: expected status [200], got 500' % (
        result['checks']['bad']['latency_ms']['p95'])


def test_body_contains_and_non_json_body(srv):
    result = run(srv, [dict(name='t', path='/text', body_contains='hotel bot'),
                       dict(name='missing', path='/text', body_contains='nope'),
                       dict(name='notjson', path='/text', json_fields={'a': 1})], fail_on_error=False)
    assert result['checks']['t']['passed'] is True
    assert result['checks']['missing']['errors'] == ["body does not contain 'nope'"]
    assert result['checks']['notjson']['errors'][0].startswith('response is not JSON')
    assert result['checks']['t']['response'] == dict(status=200, body='Hello from the hotel bot', json=None,
                                                     body_bytes=24, truncated=False)


def test_concurrency_overlaps_requests(srv):
    started = time.monotonic()
    result = run(srv, [dict(name='slow', path='/sleep?s=0.2', count=10, concurrency=10)])
    took = time.monotonic() - started
    assert result['checks']['slow']['ok'] == 10
    # One after the other they would take at least 2.0 s; the margin absorbs a loaded machine.
    assert took < 1.5, 'concurrent requests took %.2fs' % took
    assert result['checks']['slow']['latency_ms']['min'] >= 195


def test_concurrency_one_is_sequential(srv):
    started = time.monotonic()
    run(srv, [dict(name='slow', path='/sleep?s=0.2', count=5)])
    assert time.monotonic() - started >= 1.0


def test_top_level_defaults_apply_to_checks(srv):
    result = run(srv, [dict(name='a', path='/health'), dict(name='b', path='/health', count=1)], count=4)
    assert result['checks']['a']['count'] == 4 and result['checks']['b']['count'] == 1
    assert srv.hits['/health'] == 5


def test_max_latency_uses_p95(srv):
    with pytest.raises(OpsError) as err:
        run(srv, [dict(name='slow', path='/sleep?s=0.15', count=2, concurrency=2, max_latency_ms=50)])
    errors = err.value.result['checks']['slow']['errors']
    assert len(errors) == 1 and errors[0].startswith('p95 latency ') and errors[0].endswith('above max_latency_ms 50')
    assert err.value.result['checks']['slow']['ok'] == 2   # the requests themselves were fine
    assert run(srv, [dict(name='fast', path='/health', max_latency_ms=5000)])['passed'] is True


def test_retries_rerun_failing_checks_until_they_pass(srv):
    result = run(srv, [dict(name='settling', path='/flaky?fail=2'), dict(name='steady', path='/health')],
                 retries=3, retry_delay=0.01)
    assert result['checks']['settling']['passed'] is True
    assert result['checks']['settling']['attempts'] == 3
    assert result['checks']['steady']['attempts'] == 1
    assert srv.hits['/flaky'] == 3 and srv.hits['/health'] == 1   # passing checks are not re-run
    assert result['summary'][0].endswith(', 3 attempts')


def test_retries_exhausted_reports_last_attempt(srv):
    with pytest.raises(OpsError) as err:
        run(srv, [dict(name='settling', path='/flaky?fail=5')], retries=2, retry_delay=0)
    check = err.value.result['checks']['settling']
    assert check['attempts'] == 3 and srv.hits['/flaky'] == 3
    assert check['errors'] == ['expected status [200], got 503']


def test_connection_refused_is_an_error_not_a_traceback():
    params = dict(checks=[dict(name='down', url='http://127.0.0.1:%d/api/health' % closed_port(), count=2)],
                  fail_on_error=False)
    result = run_params(params)
    check = result['checks']['down']
    assert check['errors'] == ['connection refused']
    assert (check['ok'], check['failed']) == (0, 2)
    assert check['status_counts'] == {} and check['latency_ms']['p95'] is None
    assert check['response'] is None
    assert result['summary'] == ['down: FAILED, 0/2 ok: connection refused']


def test_timeout_is_an_error(srv):
    started = time.monotonic()
    result = run(srv, [dict(name='slow', path='/sleep?s=1.5', timeout=0.3)], fail_on_error=False)
    assert result['checks']['slow']['errors'] == ['timed out after 0.3s']
    assert time.monotonic() - started < 1.2


def test_tls_error_is_an_error(srv):
    params = dict(checks=[dict(name='tls', url=srv.url.replace('http://', 'https://') + '/health')],
                  fail_on_error=False)
    error = run_params(params)['checks']['tls']['errors'][0]
    assert error.startswith('TLS error'), error


def test_redirects_followed_or_not(srv):
    assert run(srv, [dict(name='r', path='/redirect', json_fields={'status': 'healthy'})])['passed']
    result = run(srv, [dict(name='r', path='/redirect', status=[302])], follow_redirects=False)
    assert result['checks']['r']['status_counts'] == {'302': 1}


def test_request_method_headers_and_json_body_are_sent(srv):
    result = run(srv, [dict(name='conv', path='/echo', method='post',
                            headers={'X-Trace': 'check', 'x-override': 'check'},
                            secret_headers={'Authorization': 'Bearer api-secret-1'},
                            json={'phoneNumber': '1234567890', 'hotelInfo': {'id': 'hotel-123'}})],
                 headers={'X-Override': 'top', 'X-Top': 'yes'}, secret_headers={'X-Api-Key': 'top-secret-2'})
    echo = result['checks']['conv']['response']['json']
    assert echo['method'] == 'POST'
    assert json.loads(echo['body']) == {'phoneNumber': '1234567890', 'hotelInfo': {'id': 'hotel-123'}}
    headers = echo['headers']
    assert headers['content-type'] == 'application/json'
    assert headers['authorization'] == 'Bearer api-secret-1'
    assert headers['x-api-key'] == 'top-secret-2'
    assert headers['x-override'] == 'check' and headers['x-top'] == 'yes' and headers['x-trace'] == 'check'
    assert headers['user-agent'].startswith('hotelbot.ops-http_check/')


def test_secrets_are_hidden_and_query_tokens_masked(srv):
    hidden = set()
    result = run(srv, [
        dict(name='webhook', path='/echo', method='POST', secret_query={'token': 'wh-token-3'},
             json={'body': 'Test message'}),
        dict(name='inline', path='/echo?language=en&api_key=inline-key-4'),
        dict(name='conv', path='/echo', secret_headers={'Authorization': 'Bearer api-secret-5'}),
    ], hidden=hidden, headers={'Cookie': 'session=c6'})
    assert result['checks']['webhook']['url'] == srv.url + '/echo?token=********'
    assert result['checks']['inline']['url'] == srv.url + '/echo?language=en&api_key=********'
    # the request really carried the token
    assert result['checks']['webhook']['response']['json']['query'] == {'token': 'wh-token-3'}
    assert {'wh-token-3', 'inline-key-4', 'Bearer api-secret-5', 'api-secret-5', 'session=c6'} <= hidden
    # nothing but the echoed bodies (which Ansible scrubs via no_log_values) carries them
    for check in result['checks'].values():
        check['response'] = None
    text = json.dumps(result)
    for secret in ('wh-token-3', 'inline-key-4', 'api-secret-5', 'c6'):
        assert secret not in text


def test_check_mode_skips_non_read_only_methods(srv):
    result = run(srv, [dict(name='health', path='/health'),
                       dict(name='webhook', path='/echo', method='POST', json={}),
                       dict(name='probe', path='/echo', method='PUT', run_in_check_mode=True)],
                 check_mode=True)
    webhook = result['checks']['webhook']
    assert webhook['skipped'] is True and webhook['passed'] is True and webhook['attempts'] == 0
    assert webhook['skip_reason'] == 'POST is not sent in check mode; set run_in_check_mode to send it'
    assert result['checks']['health']['skipped'] is False and result['checks']['health']['ok'] == 1
    assert result['checks']['probe']['ok'] == 1
    assert ('POST', '/echo') not in srv.requests and ('PUT', '/echo') in srv.requests
    assert result['skipped_checks'] == ['webhook']
    assert result['msg'] == '2 of 3 checks passed, 1 skipped in check mode (webhook)'
    assert list(result['checks']) == ['health', 'webhook', 'probe']   # order of the input


@pytest.mark.parametrize('params, message', [
    (dict(checks=[dict(name='a', path='/x')]), "check 'a': needs url, or path together with base_url"),
    (dict(base_url='URL', checks=[dict(name='a', path='/x'), dict(name='a', path='/y')]),
     "check 'a': duplicate name"),
    (dict(base_url='URL', checks=[dict(name='a', path='/x', status=[200, 99, 600])]),
     "check 'a': status codes must be between 100 and 599, got [99, 600]"),
    (dict(base_url='ftp://h', checks=[dict(name='a', path='/x')]), 'base_url must be an http:// or https:// URL'),
    (dict(base_url='URL', checks=[dict(name='a', url='/relative')]), "check 'a': url must be an http:// or https://"),
    (dict(base_url='URL', checks=[dict(name='a', path='/x', json_fields={'faqs|len': 1})]),
     "unknown modifier 'len'"),
    (dict(base_url='URL', checks=[dict(name='a', path='/x', method='GE T')]), 'is not a valid HTTP method'),
    (dict(base_url='URL', checks=[]), 'checks must list at least one check'),
    # Mistakes that used to reach the bug path (ValueError from urllib) or a per-request error:
    (dict(base_url='http://[::1', checks=[dict(name='a', path='/x')]), 'base_url is not a valid URL: Invalid IPv6 URL'),
    (dict(base_url='http://127.0.0.1:99999', checks=[dict(name='a', path='/x')]),
     'base_url is not a valid URL: port out of range 0-65535'),
    (dict(base_url='http://127.0.0.1:8o8o', checks=[dict(name='a', path='/x')]), 'base_url is not a valid URL: port'),
    (dict(base_url='http://127.0.0.1:0', checks=[dict(name='a', path='/x')]), 'base_url is not a valid URL: port 0'),
    (dict(checks=[dict(name='a', url='http://[::1/x')]), "check 'a': url is not a valid URL: Invalid IPv6 URL"),
    (dict(checks=[dict(name='a', url='https:///x')]), "check 'a': url must be an http:// or https:// URL with a host"),
    (dict(base_url='URL', checks=[dict(name='a', path='/api/faqs?q=check in')]),
     "check 'a': path must not contain spaces or control characters"),
])
def test_bad_input_fails_before_any_request(srv, params, message):
    if params.get('base_url') == 'URL':
        params['base_url'] = srv.url
    with pytest.raises(OpsError) as err:
        run_params(params)
    assert err.value.msg.startswith('invalid input, nothing was requested: ')
    assert message in err.value.msg
    assert srv.requests == []


# Ranges live in the SPEC (context min/max/above): common.execute names them before the work runs.
@pytest.mark.parametrize('params, message', [
    (dict(base_url='URL', checks=[dict(name='a', path='/x', count=0)]), 'checks[0].count must be between 1 and 100000, got 0'),
    (dict(base_url='URL', count=0, checks=[dict(name='a', path='/x')]), 'count must be between 1 and 100000, got 0'),
    (dict(base_url='URL', checks=[dict(name='a', path='/x', concurrency=0)]),
     'checks[0].concurrency must be between 1 and 256, got 0'),
    (dict(base_url='URL', checks=[dict(name='a', path='/x', timeout=0)]), 'checks[0].timeout must be in (0, 3600], got 0'),
    (dict(base_url='URL', retries=-1, checks=[dict(name='a', path='/x')]), 'retries must be between 0 and 100, got -1'),
    (dict(base_url='URL', max_body_bytes=0, checks=[dict(name='a', path='/x')]),
     'max_body_bytes must be between 1 and 67108864, got 0'),
])
def test_out_of_range_input_fails_before_any_request(srv, params, message):
    params['base_url'] = srv.url
    with pytest.raises(OpsError) as err:
        run_params(params)
    assert message in err.value.msg
    assert srv.requests == []


def test_all_input_problems_are_named_at_once(srv):
    # The spec's checks (ranges) at once, then the work's own checks (names, methods, status codes) at once.
    with pytest.raises(OpsError) as err:
        run_params(dict(base_url=srv.url, checks=[
            dict(name='a', path='/x', count=0),
            dict(name='b', path='/x', concurrency=0),
            dict(name='c', path='/y', timeout=0)]))
    assert err.value.msg.count(';') == 2
    with pytest.raises(OpsError) as err:
        run_params(dict(base_url=srv.url, checks=[
            dict(name='a', path='/x', method='GE T'),
            dict(name='b', path='/x', status=[99]),
            dict(name='b', path='/y')]))
    assert err.value.msg.startswith('invalid input, nothing was requested: ')
    assert err.value.msg.count(';') == 2
    assert srv.requests == []


def test_bad_input_does_not_leak_tokens_in_message():
    with pytest.raises(OpsError) as err:
        run_params(dict(checks=[dict(name='a', url='ftp://h/x?token=leak-7')]))
    assert 'leak-7' not in err.value.msg and 'token=********' in err.value.msg


def test_a_password_in_a_url_that_does_not_parse_is_hidden_and_not_shown():
    hidden = set()
    with pytest.raises(OpsError) as err:
        run_params(dict(base_url='http://ops:pw-leak-9@[::1', checks=[dict(name='a', path='/x')]), hidden=hidden)
    assert 'pw-leak-9' in hidden and 'pw-leak-9' not in err.value.msg
    assert '\n' not in err.value.msg


def test_a_missing_ca_path_is_named_before_any_request(srv, tmp_path):
    missing = str(tmp_path / 'nope' / 'ca.pem')
    with pytest.raises(OpsError) as err:
        run_params(dict(base_url=srv.url, ca_path=missing, checks=[dict(name='a', path='/health')]))
    assert err.value.msg == 'ca_path %s does not exist or is not a file, nothing was requested' % missing
    not_pem = tmp_path / 'ca.pem'
    not_pem.write_text('not a certificate\n')
    with pytest.raises(OpsError) as err:
        run_params(dict(base_url=srv.url, ca_path=str(not_pem), checks=[dict(name='a', path='/health')]))
    assert err.value.msg.startswith('ca_path %s is not a PEM file of CA certificates' % not_pem)
    assert srv.requests == []


# ----------------------------------------------------------------------- bodies: read up to max_body_bytes

class Streaming(BaseHTTPRequestHandler):
    """Answers GET /big?bytes=N with N bytes of JSON-looking text, written 1 MiB at a time."""
    protocol_version = 'HTTP/1.1'
    CHUNK = b'{"status": "healthy", "pad": "' + b'x' * (1024 * 1024 - 32) + b'"}\n'

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's naming)
        size = int(parse_qs(urlsplit(self.path).query)['bytes'][0])
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(size))
        self.end_headers()
        sent = 0
        view = memoryview(self.CHUNK)
        try:
            while sent < size:
                piece = view[:min(len(view), size - sent)]
                self.wfile.write(piece)
                sent += len(piece)
        finally:
            with self.server.lock:
                self.server.sent += sent


@pytest.fixture
def streaming():
    srv = ThreadingHTTPServer(('127.0.0.1', 0), Streaming)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.sent = 0
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    srv.url = 'http://127.0.0.1:%d' % srv.server_address[1]
    yield srv
    srv.shutdown()
    srv.server_close()


def sent(srv, expected, wait=5.0):
    """The bytes the server sent, once its threads have counted them (they count after the last write)."""
    deadline = time.monotonic() + wait
    while srv.sent < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return srv.sent


def test_a_body_over_max_body_bytes_is_counted_not_kept(streaming):
    size = 300 * 1024
    result = run_params(dict(base_url=streaming.url, max_body_bytes=1000, fail_on_error=False, checks=[
        dict(name='json', path='/big?bytes=%d' % size, json_fields={'status': 'healthy'}),
        dict(name='head', path='/big?bytes=%d' % size, body_contains='"status": "healthy"'),
        dict(name='tail', path='/big?bytes=%d' % size, body_contains='"}'),
    ]))
    json_check, head, tail = (result['checks'][n] for n in ('json', 'head', 'tail'))
    for check in (json_check, head, tail):
        assert check['body_bytes'] == size and check['body_truncated'] == 1
        assert check['response']['body_bytes'] == size and check['response']['truncated'] is True
        assert check['response']['json'] is None
    assert json_check['passed'] is False
    assert json_check['errors'] == ['response is %d bytes, more than max_body_bytes 1000: not checked as JSON' % size]
    assert head['passed'] is True   # the text is in the first 1000 bytes
    assert tail['passed'] is False
    assert tail['errors'][0].startswith("body does not contain '\"}' in its first 1000 bytes (max_body_bytes")
    assert sent(streaming, 3 * size) == 3 * size


def _limit_memory():
    # A safety net should the bodies be kept after all: 3 GB of address space, not the machine.
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (3 * 1024 ** 3, 3 * 1024 ** 3))


def test_memory_stays_flat_with_20_concurrent_200mb_bodies(streaming):
    size = 200 * 1024 * 1024
    outcome = run_module('http_check', dict(base_url=streaming.url, count=20, concurrency=20, timeout=60, checks=[
        dict(name='big', path='/big?bytes=%d' % size, body_contains='healthy')]), timeout=300,
        preexec_fn=_limit_memory)
    assert outcome.result is not None, outcome.stderr[-2000:]
    check = outcome.result['checks']['big']
    assert outcome.rc == 0 and check['passed'] is True, outcome.result.get('msg')
    assert check['body_bytes'] == 20 * size == sent(streaming, 20 * size)
    assert check['body_truncated'] == 20
    assert outcome.max_rss < 150 * 1024 * 1024, 'peak RSS %d MiB' % (outcome.max_rss // 2 ** 20)


# ----------------------------------------------------------------------- the action plugin: both paths, -vvvv

def _playbook_run(tmp_path, task, in_process):
    """One http_check task through ansible-playbook -vvvv on a local connection; (result, output)."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    binary = os.path.dirname(sys.executable)
    out = tmp_path / ('result-%s.json' % in_process)
    playbook = tmp_path / 'check.yml'
    playbook.write_text(json.dumps([{'hosts': 'localhost', 'gather_facts': False, 'tasks': [
        {'hotelbot.ops.http_check': task, 'register': 'checked', 'ignore_errors': True},
        {'ansible.builtin.copy': {'content': '{{ checked | to_json }}', 'dest': str(out)}},
    ]}]))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(root, 'ansible.cfg'),
               PATH=binary + os.pathsep + os.environ['PATH'])
    run = subprocess.run(
        [os.path.join(binary, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local', str(playbook), '-vvvv',
         '-e', 'ansible_python_interpreter=%s' % sys.executable,
         '-e', 'hotelbot_controller_modules=%s' % ('true' if in_process else 'false')],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text()), run.stdout + run.stderr


def test_secrets_never_appear_at_vvvv_in_either_path(srv, tmp_path):
    secrets = ('hdr-secret-71', 'top-secret-72', 'query-secret-73', 'userinfo-pw-74', 'inline-key-75', 'cookie-76')
    # a plain header with a credential's name (Cookie) is hidden too, though it is no no_log option
    task = dict(base_url=srv.url, secret_headers={'X-Api-Key': 'top-secret-72'}, fail_on_error=False,
                headers={'Cookie': 'session=cookie-76'}, checks=[
        dict(name='conv', path='/health', secret_headers={'Authorization': 'Bearer hdr-secret-71'}),
        dict(name='webhook', path='/health', secret_query={'token': 'query-secret-73'}),
        dict(name='inline', path='/health?api_key=inline-key-75'),
        dict(name='userinfo', url=srv.url.replace('http://', 'http://ops:userinfo-pw-74@') + '/health')])
    here, here_log = _playbook_run(tmp_path, task, in_process=True)
    there, there_log = _playbook_run(tmp_path, task, in_process=False)
    assert 'AnsiballZ_http_check.py' in there_log and 'AnsiballZ_http_check.py' not in here_log
    for result in (here, there):
        assert result['checks']['conv']['passed'] and result['checks']['webhook']['passed']
        assert result['checks']['webhook']['url'] == srv.url + '/health?token=********'
    assert [r['passed'] for r in here['checks'].values()] == [r['passed'] for r in there['checks'].values()]
    for secret in secrets:
        assert secret not in here_log and secret not in there_log, secret
        assert secret not in json.dumps(here) and secret not in json.dumps(there), secret
