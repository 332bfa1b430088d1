# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one HTTP transport of hotelbot.ops: every HTTP client of the collection sends through it.

http_check, the Prometheus gate, and the Fly Machines, Fly GraphQL, WAHA, Kubernetes and OpenAI
clients share one Transport: TLS (validate_certs, ca_path), proxies from the environment
(use_proxy), redirects, a bearer token or basic auth, JSON in and out, bodies read up to
max_body_bytes with flat memory, one-line errors with the URL masked and every credential it was
given hidden, and ONE retry policy (request()):

- retried: a 429 or 5xx answer, and no answer at all (refused, reset, timed out, closed);
- not retried: any other answer (a 4xx is the request's fault) and a TLS certificate that does
  not verify (it will not verify the next time either);
- at most `tries` tries, paced by a poll.Backoff (poll.RETRY unless the client passes its own);
  a Retry-After header (seconds or an HTTP date) stretches the pause, capped at RETRY_AFTER_CAP.

send() is one try with no retry: http_check times each request itself and has its own
check-level retries.

Built on the standard library's urllib, not ansible.module_utils.urls, because that measured worse
on every count that matters here (ansible-core 2.19, Python 3.11, 1000 GETs to 127.0.0.1):
- import: +90 ms CPU per module process on top of AnsibleModule (it imports cryptography.x509);
- CPU per request: 1.35 ms with Request(context=...) against 0.45-0.55 ms for a reused urllib
  opener, because Request.open builds a new opener per request - time that lands in every latency
  http_check measures; without a context it re-reads the CA bundle per request (57 ms);
- behaviour: Request.open installs its opener process-wide (install_opener) on every call, keeps
  cookies across requests, adds ~/.netrc credentials (which we would not know to hide) and gunzips
  bodies (so body_bytes would no longer be the bytes received).
What it adds over urllib (GSSAPI, unix sockets, client certificates) no client of ours uses.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import email.utils
import functools
import http.client
import json
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request

from ansible_collections.hotelbot.ops.plugins.module_utils.common import MIN_HIDDEN_LENGTH, OpsError, one_line
from ansible_collections.hotelbot.ops.plugins.module_utils.masking import MASK, is_secret_name
from ansible_collections.hotelbot.ops.plugins.module_utils.poll import RETRY, poll
from ansible_collections.hotelbot.ops.plugins.module_utils.url import header_secrets, mask_url, url_secrets_any

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_TRIES = 3
# A server asking for minutes (Retry-After: 3600) must not stall a rollback: we ask again sooner.
RETRY_AFTER_CAP = 60.0
# Bodies are read in pieces of this size; past max_body_bytes they are counted, not kept.
READ_CHUNK = 256 * 1024
USER_AGENT = 'hotelbot.ops/0.1'


class Answer:
    """An HTTP answer of any status. body is at most max_body_bytes; body_bytes counts the whole
    body received and truncated says whether body is only its beginning."""

    def __init__(self, status, headers, body, body_bytes, truncated):
        self.status = status
        self.headers = headers
        self.body = body
        self.body_bytes = body_bytes
        self.truncated = truncated
        self.charset = (headers.get_content_charset() if headers is not None else None) or 'utf-8'

    def text(self):
        return self.body.decode(self.charset, 'replace')

    def json(self):
        """The decoded JSON body; ValueError when it is not JSON (or was cut at max_body_bytes)."""
        if self.truncated:
            raise ValueError('the body is %d bytes, more than max_body_bytes' % self.body_bytes)
        return json.loads(self.text())

    def retry_after(self, now=time.time):
        """Seconds the server asks to wait (Retry-After: seconds or an HTTP date), or None."""
        return retry_after_seconds(self.headers.get('Retry-After') if self.headers is not None else None, now)


class TransportError(Exception):
    """A request that failed: no answer (status None, reason says why) or an answer the caller
    did not accept (status, answer). str() is one line with the URL masked, credentials hidden."""

    def __init__(self, msg, reason, status=None, answer=None, tries=1, retryable=False):
        super(TransportError, self).__init__(msg)
        self.msg = msg
        self.reason = reason
        self.status = status
        self.answer = answer
        self.tries = tries
        self.retryable = retryable


def json_type(value):
    """The JSON name of a decoded value's type."""
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'boolean'
    if isinstance(value, (int, float)):
        return 'number'
    if isinstance(value, str):
        return 'string'
    if isinstance(value, list):
        return 'array'
    return 'object'


def retry_after_seconds(value, now=time.time):
    """Retry-After as seconds from now (0 or more), None when absent or unreadable."""
    if not value:
        return None
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now())


def retryable_status(status):
    return status == 429 or 500 <= status <= 599


def tls_context(validate_certs=True, ca_path=None):
    """The TLS context of a transport; OpsError naming ca_path when it cannot be used."""
    if not validate_certs:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_path is not None and not os.path.isfile(ca_path):
        raise OpsError('ca_path %s does not exist or is not a file, nothing was requested' % ca_path)
    try:
        return ssl.create_default_context(cafile=ca_path)
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, 'reason', None) or getattr(err, 'strerror', None) or err
        raise OpsError('ca_path %s is not a PEM file of CA certificates (%s), nothing was requested'
                       % (ca_path, reason))


def auth_header(bearer_token=None, username=None, password=None):
    """The Authorization header for a bearer token or basic auth (at most one of them), or {}."""
    if bearer_token:
        return {'Authorization': 'Bearer %s' % bearer_token}
    if username is not None:
        pair = ('%s:%s' % (username, password or '')).encode('utf-8')
        return {'Authorization': 'Basic %s' % base64.b64encode(pair).decode('ascii')}
    return {}


def no_answer_reason(err, timeout):
    """A short operator-facing reason for an exception raised before any answer arrived."""
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, (socket.timeout, TimeoutError)) or 'timed out' in str(reason):
        return 'timed out after %gs' % timeout
    if isinstance(reason, ConnectionRefusedError):
        return 'connection refused'
    if isinstance(reason, ConnectionResetError):
        return 'connection reset by peer'
    if isinstance(reason, ssl.SSLCertVerificationError):
        return 'TLS certificate verification failed: %s' % (reason.verify_message or reason)
    if isinstance(reason, ssl.SSLError):
        return 'TLS error: %s' % (reason.reason or reason)
    if isinstance(reason, socket.gaierror):
        return 'cannot resolve host: %s' % (reason.strerror or reason)
    if isinstance(reason, http.client.RemoteDisconnected):
        return 'server closed the connection without a response'
    if isinstance(reason, http.client.HTTPException):
        return 'invalid HTTP response: %s: %s' % (type(reason).__name__, reason)
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[:1].lower() + reason.strerror[1:]
    return '%s: %s' % (type(reason).__name__, reason) if not isinstance(reason, str) else reason


def _worth_retrying(err):
    """No answer is worth another try, except a certificate that does not verify."""
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    return not isinstance(reason, ssl.SSLCertVerificationError)


def read_body(response, limit):
    """(the first limit bytes, the byte count of the whole body, whether it was longer than limit).

    Reads in READ_CHUNK pieces and drops what is past limit, so memory does not grow with the body.
    """
    kept = bytearray()
    total = 0
    while True:
        chunk = response.read(READ_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        room = limit - len(kept)
        if room > 0:
            kept += chunk[:room]
    return bytes(kept), total, total > limit


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Return 3xx answers as they are (they then show up as their status)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class _TLSOnFirstUse(urllib.request.HTTPSHandler):
    """HTTPS with a TLS context built at the first https:// request: loading the system's CA store
    costs about 50 ms, which a task that only speaks http:// (a loopback sandbox, a sidecar) never
    needs to pay."""

    def __init__(self, make_context):
        urllib.request.HTTPSHandler.__init__(self)
        self._make_context = make_context
        self._tls = None
        self._tls_lock = threading.Lock()   # one opener serves several threads (http_check)

    def https_open(self, req):
        with self._tls_lock:
            if self._tls is None:
                self._tls = self._make_context()
        return self.do_open(http.client.HTTPSConnection, req, context=self._tls)


def _built(context):
    """make_context for a context built in advance."""
    return lambda: context


def build_opener(make_context, follow_redirects=True, use_proxy=True):
    """A urllib opener, shared by threads: no cookies are kept, and its one state, the TLS context
    (make_context(), called once, at the first https:// request), is made under a lock."""
    handlers = [_TLSOnFirstUse(make_context)]
    if not use_proxy:
        handlers.append(urllib.request.ProxyHandler({}))
    if not follow_redirects:
        handlers.append(_NoRedirect())
    return urllib.request.build_opener(*handlers)


class Transport:
    """HTTP for one client: its TLS, proxy, auth and default headers, and its retry policy.

    hide(*values) is called at once with every credential given (token, password, secret headers,
    URL passwords and secret query values of the URLs sent); they are also masked in messages.
    """

    def __init__(self, validate_certs=True, ca_path=None, use_proxy=True, follow_redirects=True,
                 timeout=10.0, headers=None, bearer_token=None, username=None, password=None,
                 max_body_bytes=DEFAULT_MAX_BODY_BYTES, tries=DEFAULT_TRIES, backoff=RETRY,
                 secret_query_keys=(), user_agent=USER_AGENT, hide=None, sleep=time.sleep, opener=None):
        self._hide = hide or (lambda *values: None)
        self._secrets = set()
        self._secrets_lock = threading.Lock()   # http_check sends from several threads
        self.secret_query_keys = tuple(secret_query_keys)
        self.headers = {'User-Agent': user_agent}
        self.headers.update(headers or {})
        self.headers.update(auth_header(bearer_token, username, password))
        self._keep_secret(bearer_token, password)
        for name, value in self.headers.items():
            if value and is_secret_name(name):
                self._keep_secret(*header_secrets(value))
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.tries = tries
        self.backoff = backoff
        self.sleep = sleep
        self.attempts = 0
        make_context = functools.partial(tls_context, validate_certs)
        if ca_path is not None:
            # A CA bundle the user named is checked now: a wrong one is refused before any request.
            make_context = _built(tls_context(validate_certs, ca_path))
        self.opener = opener or build_opener(make_context, follow_redirects, use_proxy)

    def _keep_secret(self, *values):
        values = [str(v) for v in values if v]
        with self._secrets_lock:
            self._secrets.update(values)
        self._hide(*values)

    def scrub(self, text):
        """text with every credential this transport knows masked."""
        with self._secrets_lock:
            known = sorted(self._secrets, key=len, reverse=True)
        for secret in known:
            if len(secret) >= MIN_HIDDEN_LENGTH:
                text = text.replace(secret, MASK)
        return text

    def shown(self, url):
        """url as messages show it: credentials masked, wherever in it they are."""
        return self.scrub(mask_url(url, self.secret_query_keys))

    def send(self, method, url, data=None, headers=None, timeout=None, max_body_bytes=None):
        """One request and its whole answer, whatever its status; TransportError when none came."""
        self._keep_secret(*url_secrets_any(url, self.secret_query_keys))
        timeout = self.timeout if timeout is None else timeout
        limit = self.max_body_bytes if max_body_bytes is None else max_body_bytes
        request = urllib.request.Request(url, data=data, headers=dict(self.headers, **(headers or {})),
                                         method=method)
        try:
            response = self.opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as err:
            # A non-2xx (or unfollowed 3xx) answer is an answer, not a failure to connect.
            response = err
        except Exception as err:  # pylint: disable=broad-except
            reason = self.scrub(no_answer_reason(err, timeout))
            raise TransportError('%s %s: %s' % (method, self.shown(url), reason), reason,
                                 retryable=_worth_retrying(err))
        try:
            body, size, cut = read_body(response, limit)
        except Exception as err:  # pylint: disable=broad-except
            if not isinstance(response, urllib.error.HTTPError):
                reason = self.scrub(no_answer_reason(err, timeout))
                raise TransportError('%s %s: %s' % (method, self.shown(url), reason), reason, retryable=True)
            body, size, cut = b'', 0, False   # an error answer whose body broke off: its status is the news
        finally:
            response.close()
        return Answer(response.status, response.headers, body, size, cut)

    def request(self, method, url, data=None, payload=None, headers=None, accept=None):
        """The answer, after the retry policy; payload is sent as JSON, accept(status) says which
        statuses are a success (default 2xx). TransportError after the last try, naming the tries."""
        headers = dict(headers or {})
        if payload is not None:
            data = json.dumps(payload).encode('utf-8')
            headers.setdefault('Content-Type', 'application/json')
        accept = accept or (lambda status: 200 <= status <= 299)
        tries = 0
        asked = []   # the server's Retry-After of the last answer, for the pause after it

        def attempt(_deadline):
            nonlocal tries
            tries += 1
            self.attempts += 1
            try:
                answer = self.send(method, url, data=data, headers=headers)
            except TransportError as err:
                if err.retryable and tries < self.tries:
                    return None
                raise self._after(err, tries)
            if accept(answer.status):
                return answer
            if retryable_status(answer.status) and tries < self.tries:
                asked.append(answer.retry_after())
                return None
            raise self._after(self._refused(method, url, answer), tries)

        def pause(scheduled):
            # poll() draws its pause before the try, so the server's wish is applied here.
            wish = asked.pop() if asked else None
            self.sleep(scheduled if wish is None else max(scheduled, min(wish, RETRY_AFTER_CAP)))

        return poll(attempt, None, self.backoff, sleep=pause)

    def json(self, method, url, payload=None, headers=None):
        """The decoded JSON answer of a request (payload sent as JSON); TransportError otherwise."""
        headers = dict(headers or {})
        headers.setdefault('Accept', 'application/json')
        answer = self.request(method, url, payload=payload, headers=headers)
        try:
            return answer.json()
        except ValueError as err:
            reason = 'HTTP %d: the answer is not JSON (%s)' % (answer.status, one_line(err, 80))
            raise TransportError('%s %s: %s' % (method, self.shown(url), reason), reason, answer.status, answer)

    def _refused(self, method, url, answer):
        reason = 'HTTP %d: %s' % (answer.status, self.scrub(one_line(answer.text())) or 'no body')
        return TransportError('%s %s: %s' % (method, self.shown(url), reason), reason, answer.status, answer,
                              retryable=retryable_status(answer.status))

    @staticmethod
    def _after(err, tries):
        if tries > 1:
            err.msg = '%s (after %d tries)' % (err.msg, tries)
            err.args = (err.msg,)
        err.tries = tries
        return err
