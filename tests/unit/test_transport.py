"""module_utils/transport.py, the one HTTP transport, against a real HTTP server on 127.0.0.1: the retry
policy (429, 5xx, no answer; Retry-After; bounded tries; never a 4xx), the body cap, JSON, masking."""
import email.utils
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import transport as t
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError
from ansible_collections.hotelbot.ops.plugins.module_utils.poll import Backoff
# no_proxy_env is an autouse fixture: importing it is what applies it here.
from module_runner import closed_port, no_proxy_env  # noqa: F401  # pylint: disable=unused-import

NOW = 1795298400.0


class Handler(BaseHTTPRequestHandler):
    """GET /fail?status=503&times=2[&after=...]: answers status (with Retry-After: after) for the first
    `times` requests to that path, then 200 {"ok": true}. POST /echo answers the JSON it got."""
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def _send(self, status, body, headers=()):
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self.server.lock:
            self.server.hits[parts.path] = hits = self.server.hits.get(parts.path, 0) + 1
            self.server.auth.append(self.headers.get('Authorization'))
        if parts.path == '/big':
            return self._send(200, b'x' * int(query['bytes']))
        if hits <= int(query.get('times', '0')):
            headers = [('Retry-After', query['after'])] if 'after' in query else []
            return self._send(int(query['status']), {'error': query.get('say', 'busy')}, headers)
        return self._send(200, {'ok': True})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        self._send(200, dict(got=body, content_type=self.headers.get('Content-Type')))


@pytest.fixture
def srv():
    server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.hits = {}
    server.auth = []
    threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    server.url = 'http://127.0.0.1:%d' % server.server_address[1]
    yield server
    server.shutdown()
    server.server_close()


def transport(pauses, **options):
    options.setdefault('backoff', Backoff(first=1.0, most=30.0, factor=2.0))
    return t.Transport(sleep=pauses.append, **options)


@pytest.mark.parametrize('status', [429, 500, 502, 503, 504])
def test_429_and_5xx_are_retried_on_the_backoff(srv, status):
    pauses = []
    answer = transport(pauses, tries=4).request('GET', srv.url + '/fail?status=%d&times=2' % status)
    assert answer.status == 200 and answer.json() == {'ok': True}
    assert srv.hits['/fail'] == 3
    assert pauses == [1.0, 2.0]   # the Backoff's schedule, one pause per retry


def test_the_default_schedule_is_poll_retry(srv):
    pauses = []
    t.Transport(sleep=pauses.append).request('GET', srv.url + '/fail?status=503&times=2')
    assert pauses == [1.0, 2.0]   # poll.RETRY: 1 s, then doubling


def test_connection_refused_is_retried_and_tries_are_bounded():
    pauses = []
    client = transport(pauses, tries=3)
    url = 'http://127.0.0.1:%d/x' % closed_port()
    with pytest.raises(t.TransportError) as err:
        client.request('GET', url)
    assert err.value.msg == 'GET %s: connection refused (after 3 tries)' % url
    assert err.value.reason == 'connection refused' and err.value.status is None and err.value.tries == 3
    assert client.attempts == 3 and pauses == [1.0, 2.0]


def test_a_5xx_that_lasts_fails_after_the_last_try(srv):
    pauses = []
    with pytest.raises(t.TransportError) as err:
        transport(pauses, tries=3).request('GET', srv.url + '/fail?status=503&times=99&say=down')
    assert srv.hits['/fail'] == 3 and len(pauses) == 2
    assert err.value.status == 503 and err.value.answer.json() == {'error': 'down'}
    assert err.value.msg.endswith(': HTTP 503: {"error": "down"} (after 3 tries)')


@pytest.mark.parametrize('status', [400, 401, 403, 404, 409, 422])
def test_a_4xx_is_not_retried(srv, status):
    pauses = []
    with pytest.raises(t.TransportError) as err:
        transport(pauses, tries=5).request('GET', srv.url + '/fail?status=%d&times=99' % status)
    assert srv.hits['/fail'] == 1 and pauses == []
    assert err.value.status == status and err.value.tries == 1 and '(after' not in err.value.msg


def test_retry_after_in_seconds_stretches_the_pause_and_is_capped(srv):
    pauses = []
    transport(pauses, tries=3).request('GET', srv.url + '/fail?status=429&times=1&after=7')
    assert pauses == [7.0]
    srv.hits.clear()
    pauses = []
    transport(pauses, tries=3).request('GET', srv.url + '/fail?status=503&times=2&after=0')
    assert pauses == [1.0, 2.0]   # a shorter wish does not shorten the schedule
    srv.hits.clear()
    pauses = []
    transport(pauses, tries=3).request('GET', srv.url + '/fail?status=503&times=1&after=3600')
    assert pauses == [t.RETRY_AFTER_CAP]


def test_retry_after_as_an_http_date(srv):
    date = email.utils.formatdate(time.time() + 12, usegmt=True)
    pauses = []
    transport(pauses, tries=2).request('GET', srv.url + '/fail?status=503&times=1&after=' + date.replace(' ', '%20'))
    assert len(pauses) == 1 and 10.0 <= pauses[0] <= 12.0   # the date is to the second


@pytest.mark.parametrize('value, seconds', [
    ('120', 120.0), (' 5 ', 5.0), (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
    (email.utils.formatdate(NOW - 30, usegmt=True), 0.0), ('soon', None), ('', None), (None, None), ('-5', None),
])
def test_retry_after_seconds(value, seconds):
    assert t.retry_after_seconds(value, now=lambda: NOW) == seconds


def test_send_is_one_try_whatever_the_status(srv):
    client = transport([])
    answer = client.send('GET', srv.url + '/fail?status=503&times=1')
    assert answer.status == 503 and srv.hits['/fail'] == 1
    with pytest.raises(t.TransportError) as err:
        client.send('GET', 'http://127.0.0.1:%d/' % closed_port())
    assert err.value.retryable is True and err.value.tries == 1


def test_the_body_is_read_up_to_max_body_bytes_and_counted(srv):
    answer = transport([], max_body_bytes=1000).request('GET', srv.url + '/big?bytes=700000')
    assert len(answer.body) == 1000 and answer.body_bytes == 700000 and answer.truncated is True
    with pytest.raises(ValueError, match='more than max_body_bytes'):
        answer.json()
    whole = transport([]).send('GET', srv.url + '/big?bytes=1000', max_body_bytes=1000)
    assert whole.body_bytes == 1000 and whole.truncated is False


def test_json_in_and_out(srv):
    got = transport([]).json('POST', srv.url + '/echo', {'machine': 'app-1', 'count': 2})
    assert got == {'got': {'machine': 'app-1', 'count': 2}, 'content_type': 'application/json'}


def test_auth_and_every_credential_hidden_and_masked(srv):
    hidden, pauses = [], []
    client = transport(pauses, tries=1, bearer_token='bearer-secret-42', hide=lambda *v: hidden.extend(v),
                       headers={'X-Api-Key': 'header-secret-43'})
    url = srv.url + '/fail?status=401&times=9&say=bearer-secret-42+is+not+valid&token=query-secret-44'
    with pytest.raises(t.TransportError) as err:
        client.request('GET', url)
    assert srv.auth[-1] == 'Bearer bearer-secret-42'
    assert {'bearer-secret-42', 'header-secret-43', 'query-secret-44'} <= set(hidden)
    for secret in ('bearer-secret-42', 'header-secret-43', 'query-secret-44'):
        assert secret not in err.value.msg
    assert 'token=********' in err.value.msg and '\n' not in err.value.msg
    basic = transport([], username='ops', password='basic-pw-45', hide=lambda *v: hidden.extend(v))
    basic.request('GET', srv.url + '/ok')
    assert srv.auth[-1] == t.auth_header(username='ops', password='basic-pw-45')['Authorization']
    assert 'basic-pw-45' in hidden


def test_a_userinfo_password_is_masked_in_messages():
    hidden = []
    client = transport([], tries=1, hide=lambda *v: hidden.extend(v))
    with pytest.raises(t.TransportError) as err:
        client.request('GET', 'http://ops:userinfo-pw-46@127.0.0.1:%d/x' % closed_port())
    assert 'userinfo-pw-46' in hidden and 'userinfo-pw-46' not in err.value.msg
    assert 'ops:********@' in err.value.msg


def test_a_missing_ca_path_is_named():
    with pytest.raises(OpsError, match='ca_path /nonexistent/ca.pem does not exist'):
        t.Transport(ca_path='/nonexistent/ca.pem')


@pytest.fixture(scope='module')
def tls_srv(tmp_path_factory):
    """The same server behind TLS, with a self-signed certificate for 127.0.0.1 (made by openssl)."""
    ssl = pytest.importorskip('ssl')
    folder = tmp_path_factory.mktemp('tls')
    cert, key = folder / 'cert.pem', folder / 'key.pem'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1',
                    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', str(key), '-out', str(cert)],
                   check=True, capture_output=True)
    server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    server.lock, server.hits, server.auth = threading.Lock(), {}, []
    threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    server.url, server.cert = 'https://127.0.0.1:%d' % server.server_address[1], str(cert)
    yield server
    server.shutdown()
    server.server_close()


def test_https_checks_the_certificate_against_the_ca_given_or_the_system_store(tls_srv, tmp_path):
    # The TLS context is built at the first https:// request (a plain-http task never loads the CA store):
    # it must still refuse a certificate no CA vouches for, and accept it from the ca_path named.
    with pytest.raises(t.TransportError) as err:
        transport([], tries=1).request('GET', tls_srv.url + '/ok')
    assert 'certificate' in err.value.msg.lower()
    assert transport([], tries=1, ca_path=tls_srv.cert).json('GET', tls_srv.url + '/ok') == {'ok': True}
    assert transport([], tries=1, validate_certs=False).json('GET', tls_srv.url + '/ok') == {'ok': True}
    # A CA bundle that is not PEM is refused when the transport is made, before any request.
    not_pem = tmp_path / 'not.pem'
    not_pem.write_text('not a certificate\n')
    with pytest.raises(OpsError, match='is not a PEM file of CA certificates'):
        t.Transport(ca_path=str(not_pem))
