# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP checks for hotelbot.ops.http_check: requests, timing, percentiles, assertions.

Standard library only (urllib, ssl, json, concurrent.futures), so the unit tests
import it without Ansible. The entry point is check_http(params, check_mode, hide):
params are the module's parameters, hide(*values) registers values that must never
be shown (module.no_log_values), and the return value is the module result. Input
errors, and failed checks when fail_on_error is set, raise OpsError.

Every request of a check is assessed on its own (status, body, JSON fields); a check
passes when every request passed and, if max_latency_ms is set, the nearest-rank p95
latency of the requests that got a response is not above it. A non-2xx answer is a
response like any other (urllib's HTTPError is read, not raised); a request that got
no response (refused, timed out, TLS failure) is a failed request with a plain error.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import http.client
import json
import math
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError
from ansible_collections.hotelbot.ops.plugins.module_utils.masking import is_secret_name
from ansible_collections.hotelbot.ops.plugins.module_utils.url import (  # noqa: F401 (re-exported)
    add_query, header_secrets, join_url, mask_url, url_problem, url_secrets, url_secrets_any,
)

USER_AGENT = 'hotelbot.ops-http_check/0.1'
MAX_ERRORS = 5
MAX_BODY_SHOWN = 1024
MAX_JSON_KEPT = 65536
# Bodies are read in chunks of this size; past max_body_bytes they are counted, not kept, so
# memory stays near concurrency x max_body_bytes whatever the servers send.
READ_CHUNK = 256 * 1024
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
MAX_MAX_BODY_BYTES = 64 * 1024 * 1024
READ_ONLY_METHODS = frozenset(['GET', 'HEAD', 'OPTIONS'])

# Which query keys and headers hold credentials, and URL userinfo: masking.py (one rule for every module).
METHOD_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

# Top-level defaults, the same as the module's argument spec (used when a key is absent).
DEFAULTS = dict(
    base_url=None, count=1, concurrency=1, timeout=10.0, validate_certs=True, ca_path=None,
    headers=None, secret_headers=None, max_latency_ms=None, retries=0, retry_delay=1.0,
    fail_on_error=True, follow_redirects=True, use_proxy=True, max_body_bytes=DEFAULT_MAX_BODY_BYTES,
)


# --------------------------------------------------------------------------- statistics

def percentile(values, pct):
    """Nearest-rank percentile: the smallest value with at least pct% of values <= it.

    percentile([15, 20, 35, 40, 50], 30) == 20; p0 is the minimum, p100 the maximum.
    Returns None for no values.
    """
    if not values:
        return None
    if pct < 0 or pct > 100:
        raise ValueError('percentile must be between 0 and 100, got %r' % (pct,))
    ordered = sorted(values)
    # round() first so 0.29 * 100 (28.999...) does not fall a rank short.
    rank = int(math.ceil(round(pct * len(ordered) / 100.0, 9)))
    return ordered[max(rank, 1) - 1]


def latency_stats(values_ms):
    """min, p50, p95, max and mean of latencies in ms (nearest rank), rounded to 0.01 ms.

    All None when there is no value (no request got a response).
    """
    if not values_ms:
        return dict(min=None, p50=None, p95=None, max=None, mean=None)
    return dict(
        min=round(min(values_ms), 2),
        p50=round(percentile(values_ms, 50), 2),
        p95=round(percentile(values_ms, 95), 2),
        max=round(max(values_ms), 2),
        mean=round(sum(values_ms) / len(values_ms), 2),
    )


# --------------------------------------------------------------------------- JSON paths

_MISSING = object()


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


def json_lookup(data, path):
    """Follow a dotted path (dict keys, list indexes) into data.

    Returns (value, None), or (_MISSING, reason) when the path does not exist. An empty
    path is the whole document. A negative index counts from the end of a list.
    """
    value = data
    walked = []
    for part in path.split('.') if path else []:
        where = '.'.join(walked) or 'the document'
        if isinstance(value, dict):
            if part not in value:
                return _MISSING, 'missing (%s has no key %r)' % (where, part)
            value = value[part]
        elif isinstance(value, list):
            try:
                index = int(part)
            except ValueError:
                return _MISSING, 'missing (%s is an array, %r is not an index)' % (where, part)
            if not -len(value) <= index < len(value):
                return _MISSING, 'missing (%s has %d items)' % (where, len(value))
            value = value[index]
        else:
            return _MISSING, 'missing (%s is %s, not an object or array)' % (where, json_type(value))
        walked.append(part)
    return value, None


def split_field(field):
    """'faqs|length' -> ('faqs', 'length'); 'status' -> ('status', None)."""
    path, sep, modifier = field.rpartition('|')
    if not sep:
        return field, None
    return path, modifier.strip()


MODIFIERS = ('length', 'type', 'exists')


def _show(value):
    text = repr(value) if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + '...'


def values_match(expected, actual):
    """Equality for assertions: booleans only equal booleans (true is not 1), and a string
    expected value equals a number with the same text (version: '2' matches 2)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if expected == actual:
        return True
    numbers = (int, float)
    if isinstance(expected, str) and isinstance(actual, numbers):
        return expected.strip() == str(actual)
    if isinstance(actual, str) and isinstance(expected, numbers):
        return actual.strip() == str(expected)
    return False


def check_json_field(data, field, expected):
    """None when field (path[|modifier]) of data equals expected, else an error message."""
    path, modifier = split_field(field)
    value, reason = json_lookup(data, path)
    label = 'json field %s' % field
    if modifier == 'exists':
        value = value is not _MISSING
    elif value is _MISSING:
        return '%s: %s' % (label, reason)
    elif modifier == 'length':
        if not isinstance(value, (list, dict, str)):
            return '%s: %s has no length' % (label, json_type(value))
        value = len(value)
    elif modifier == 'type':
        value = json_type(value)
    if values_match(expected, value):
        return None
    return '%s: expected %s, got %s' % (label, _show(expected), _show(value))


# --------------------------------------------------------------------------- requests

class Check:
    """One named check, validated and with every default resolved."""

    def __init__(self, name, url, method='GET', headers=None, data=None, status=None,
                 json_fields=None, body_contains=None, count=1, concurrency=1, timeout=10.0,
                 max_latency_ms=None, run_in_check_mode=False, secret_query_keys=(),
                 max_body_bytes=DEFAULT_MAX_BODY_BYTES):
        self.name = name
        self.url = url
        self.method = method.upper()
        self.headers = headers or {}
        self.data = data
        self.status = list(status or [200])
        self.json_fields = json_fields or {}
        self.body_contains = body_contains
        self.count = count
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_latency_ms = max_latency_ms
        self.run_in_check_mode = run_in_check_mode
        self.max_body_bytes = max_body_bytes
        self.display_url = mask_url(url, secret_query_keys)


class Sample:
    """The outcome of one request: a status and body, or an error; latency in ms.

    body is at most the check's max_body_bytes; body_bytes counts the whole body received and
    truncated says whether body is only its beginning.
    """

    def __init__(self, status=None, body=None, latency_ms=None, error=None, charset=None, body_bytes=0,
                 truncated=False):
        self.status = status
        self.body = body
        self.latency_ms = latency_ms
        self.error = error
        self.charset = charset or 'utf-8'
        self.body_bytes = body_bytes
        self.truncated = truncated

    def text(self):
        return (self.body or b'').decode(self.charset, 'replace')


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Return 3xx responses as they are (they then show up as their status)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def tls_context(validate_certs=True, ca_path=None):
    """The TLS context of the requests; OpsError naming ca_path when it cannot be used."""
    if validate_certs:
        if ca_path is not None and not os.path.isfile(ca_path):
            raise OpsError('ca_path %s does not exist or is not a file, nothing was requested' % ca_path)
        try:
            return ssl.create_default_context(cafile=ca_path)
        except (OSError, ssl.SSLError) as err:
            reason = getattr(err, 'reason', None) or getattr(err, 'strerror', None) or err
            raise OpsError('ca_path %s is not a PEM file of CA certificates (%s), nothing was requested'
                           % (ca_path, reason))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def build_opener(validate_certs=True, ca_path=None, follow_redirects=True, use_proxy=True):
    """A urllib opener for the checks (shared by the worker threads; it keeps no state)."""
    handlers = [urllib.request.HTTPSHandler(context=tls_context(validate_certs, ca_path))]
    if not use_proxy:
        handlers.append(urllib.request.ProxyHandler({}))
    if not follow_redirects:
        handlers.append(_NoRedirect())
    return urllib.request.build_opener(*handlers)


def describe_error(err, timeout):
    """A short operator-facing message for an exception raised by a request."""
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


def send(opener, check, clock=time.perf_counter):
    """Make one request of check; never raises for network or HTTP errors."""
    request = urllib.request.Request(check.url, data=check.data, headers=check.headers,
                                     method=check.method)
    started = clock()
    try:
        response = opener.open(request, timeout=check.timeout)
        try:
            body, size, cut = read_body(response, check.max_body_bytes)
            status = response.status
            charset = response.headers.get_content_charset()
        finally:
            response.close()
    except urllib.error.HTTPError as err:
        # A non-2xx (or unfollowed 3xx) answer is a response to assess, not a failure to connect.
        status = err.code
        charset = err.headers.get_content_charset() if err.headers is not None else None
        try:
            body, size, cut = read_body(err, check.max_body_bytes)
        except Exception:  # pylint: disable=broad-except
            body, size, cut = b'', 0, False
        finally:
            err.close()
    except Exception as err:  # pylint: disable=broad-except
        return Sample(latency_ms=(clock() - started) * 1000.0, error=describe_error(err, check.timeout))
    return Sample(status=status, body=body, latency_ms=(clock() - started) * 1000.0, charset=charset,
                  body_bytes=size, truncated=cut)


def assess(check, sample):
    """The list of assertion failures of one sample (empty when it passed)."""
    if sample.error:
        return [sample.error]
    errors = []
    if sample.status not in check.status:
        errors.append('expected status %s, got %d' % (check.status, sample.status))
    if check.body_contains is not None and check.body_contains not in sample.text():
        if sample.truncated:
            errors.append('body does not contain %s in its first %d bytes (max_body_bytes; the body is %d bytes)'
                          % (_show(check.body_contains), check.max_body_bytes, sample.body_bytes))
        else:
            errors.append('body does not contain %s' % _show(check.body_contains))
    if check.json_fields:
        if sample.truncated:
            errors.append('response is %d bytes, more than max_body_bytes %d: not checked as JSON'
                          % (sample.body_bytes, check.max_body_bytes))
            return errors
        try:
            data = json.loads(sample.text())
        except ValueError as err:
            errors.append('response is not JSON (%s)' % err)
        else:
            for field, expected in check.json_fields.items():
                error = check_json_field(data, field, expected)
                if error:
                    errors.append(error)
    return errors


def _response_view(sample):
    if sample is None or sample.status is None:
        return None
    text = sample.text()
    view = dict(status=sample.status, body=text[:MAX_BODY_SHOWN], json=None, body_bytes=sample.body_bytes,
                truncated=sample.truncated)
    if len(text) <= MAX_JSON_KEPT and not sample.truncated:
        try:
            view['json'] = json.loads(text)
        except ValueError:
            pass
    return view


def run_check(check, opener, clock=time.perf_counter):
    """Make check.count requests, check.concurrency at a time, and assess them."""
    started = clock()

    def one(index):
        sample = send(opener, check, clock=clock)
        errors = assess(check, sample)
        if index != check.count - 1:
            sample.body = None  # only the last response is reported
        return sample, errors

    workers = max(1, min(check.concurrency, check.count))
    if workers == 1:
        outcomes = [one(i) for i in range(check.count)]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(one, range(check.count)))

    status_counts = Counter(str(s.status) for s, _e in outcomes if s.status is not None)
    body_bytes = sum(s.body_bytes for s, _e in outcomes)
    truncated = sum(1 for s, _e in outcomes if s.truncated)
    latency = latency_stats([s.latency_ms for s, _e in outcomes if s.status is not None])
    distinct = []
    for _sample, errors in outcomes:
        for error in errors:
            if error not in distinct:
                distinct.append(error)
    failed = sum(1 for _s, errors in outcomes if errors)
    extra = []
    if check.max_latency_ms is not None and latency['p95'] is not None and latency['p95'] > check.max_latency_ms:
        extra.append('p95 latency %.1f ms above max_latency_ms %g' % (latency['p95'], check.max_latency_ms))
    return dict(
        passed=failed == 0 and not extra,
        skipped=False,
        skip_reason=None,
        url=check.display_url,
        method=check.method,
        count=check.count,
        ok=check.count - failed,
        failed=failed,
        status_counts=dict(sorted(status_counts.items())),
        latency_ms=latency,
        body_bytes=body_bytes,
        body_truncated=truncated,
        errors=distinct[:MAX_ERRORS - len(extra)] + extra,
        attempts=1,
        response=_response_view(outcomes[-1][0] if outcomes else None),
        elapsed_s=round(clock() - started, 3),
    )


def skipped_result(check, reason):
    return dict(
        passed=True, skipped=True, skip_reason=reason, url=check.display_url, method=check.method,
        count=check.count, ok=0, failed=0, status_counts={}, latency_ms=latency_stats([]),
        body_bytes=0, body_truncated=0, errors=[], attempts=0, response=None, elapsed_s=0.0,
    )


def run_checks(checks, opener, retries=0, retry_delay=1.0, check_mode=False, sleep=time.sleep,
               clock=time.perf_counter):
    """Run every check; re-run the failing ones up to retries more times, retry_delay apart.

    In check mode, checks whose method is not read only are skipped unless they set
    run_in_check_mode. Returns an ordered dict name -> result.
    """
    results = OrderedDict((check.name, None) for check in checks)
    pending = []
    for check in checks:
        if check_mode and check.method not in READ_ONLY_METHODS and not check.run_in_check_mode:
            results[check.name] = skipped_result(
                check, '%s is not sent in check mode; set run_in_check_mode to send it' % check.method)
        else:
            pending.append(check)
    attempt = 0
    while pending:
        attempt += 1
        failing = []
        for check in pending:
            result = run_check(check, opener, clock=clock)
            result['attempts'] = attempt
            results[check.name] = result
            if not result['passed']:
                failing.append(check)
        if not failing or attempt > retries:
            break
        if retry_delay > 0:
            sleep(retry_delay)
        pending = failing
    return results


def summary_line(name, result):
    """One human line for a check result."""
    if result['skipped']:
        return '%s: skipped (%s)' % (name, result['skip_reason'])
    line = '%s: %s, %d/%d ok' % (name, 'passed' if result['passed'] else 'FAILED', result['ok'], result['count'])
    if result['latency_ms']['p95'] is not None:
        line += ', p95 %.1f ms' % result['latency_ms']['p95']
    if result['attempts'] > 1:
        line += ', %d attempts' % result['attempts']
    if result['errors']:
        line += ': ' + result['errors'][0]
    return line


# --------------------------------------------------------------------------- input

# Upper bounds: a typo (count: 100000000000, timeout: 36000000) would otherwise hang the play for days.
MAXIMUMS = dict(count=100000, concurrency=256, timeout=3600, retries=100, retry_delay=3600)


def _number(problems, where, name, value, minimum, strict=False):
    if value is None:
        return
    maximum = MAXIMUMS.get(name)
    if math.isnan(value):
        problems.append('%s%s must be a number, got %s' % (where, name, value))
    elif strict and value <= minimum:
        problems.append('%s%s must be greater than %g, got %s' % (where, name, minimum, value))
    elif not strict and value < minimum:
        problems.append('%s%s must be at least %g, got %s' % (where, name, minimum, value))
    elif maximum is not None and value > maximum:
        problems.append('%s%s must be at most %g, got %s' % (where, name, maximum, value))


def _merge_headers(*layers):
    """Merge header dicts, later ones winning, names compared case-insensitively."""
    merged = OrderedDict()
    for layer in layers:
        for key, value in (layer or {}).items():
            merged[str(key).lower()] = (str(key), '' if value is None else str(value))
    return dict(merged.values())


def build_checks(params, hide=None):
    """Validate params and return the list of Check; raise OpsError naming every problem.

    hide(*values) is called with every credential found (secret headers, secret query values,
    secret-looking query values in URLs, URL passwords) before anything is requested.
    """
    hide = hide or (lambda *values: None)
    p = dict(DEFAULTS)
    p.update((k, v) for k, v in params.items() if v is not None or k not in DEFAULTS)
    problems = []
    base_url = p.get('base_url')
    if isinstance(base_url, str):
        hide(*url_secrets_any(base_url))
    if base_url is not None:
        problem = url_problem('base_url', base_url)
        if problem:
            problems.append(problem)
            base_url = None
    for name in ('count', 'concurrency'):
        _number(problems, '', name, p[name], 1)
    _number(problems, '', 'timeout', p['timeout'], 0, strict=True)
    _number(problems, '', 'max_latency_ms', p['max_latency_ms'], 0, strict=True)
    _number(problems, '', 'retries', p['retries'], 0)
    _number(problems, '', 'retry_delay', p['retry_delay'], 0)
    max_body = p['max_body_bytes']
    if max_body is None or not 1 <= max_body <= MAX_MAX_BODY_BYTES:
        problems.append('max_body_bytes must be between 1 and %d, got %s' % (MAX_MAX_BODY_BYTES, max_body))

    top_secrets = p['secret_headers'] or {}
    for value in top_secrets.values():
        hide(*header_secrets(value))
    for key, value in (p['headers'] or {}).items():
        if value and is_secret_name(key):
            hide(*header_secrets(value))

    checks = []
    seen = set()
    raw_checks = params.get('checks') or []
    if not raw_checks:
        problems.append('checks must list at least one check')
    for index, raw in enumerate(raw_checks):
        raw = raw or {}
        name = raw.get('name')
        where = 'check %r: ' % name if name else 'check #%d: ' % (index + 1)
        if not name:
            problems.append('%sname is required' % where)
        elif name in seen:
            problems.append('%sduplicate name (names must be unique)' % where)
        seen.add(name)

        secret_query = raw.get('secret_query') or {}
        for value in (raw.get('secret_headers') or {}).values():
            hide(*header_secrets(value))
        for key, value in (raw.get('headers') or {}).items():
            if value and is_secret_name(key):
                hide(*header_secrets(value))
        for value in secret_query.values():
            if value not in (None, ''):
                hide(str(value), urllib.parse.quote_plus(str(value)))

        url = raw.get('url')
        path = raw.get('path')
        if url and path:
            problems.append('%sset url or path, not both' % where)
        elif url:
            hide(*url_secrets_any(url))
            problem = url_problem('url', url)
            if problem:
                problems.append(where + problem)
                url = None
        elif base_url:
            url = join_url(base_url, path or '')
            problem = url_problem('path', url)
            if problem:
                problems.append(where + problem)
                url = None
        elif p.get('base_url') is None:
            problems.append('%sneeds url, or path together with base_url' % where)
        if url:
            url = add_query(url, secret_query)
            hide(*url_secrets(url, secret_query))

        method = str(raw.get('method') or 'GET')
        if not METHOD_RE.match(method):
            problems.append('%smethod %r is not a valid HTTP method' % (where, method))

        status = raw.get('status') or [200]
        bad = [s for s in status if not isinstance(s, int) or isinstance(s, bool) or not 100 <= s <= 599]
        if bad:
            problems.append('%sstatus codes must be between 100 and 599, got %s' % (where, bad))

        count = raw.get('count') if raw.get('count') is not None else p['count']
        concurrency = raw.get('concurrency') if raw.get('concurrency') is not None else p['concurrency']
        timeout = raw.get('timeout') if raw.get('timeout') is not None else p['timeout']
        max_latency = raw.get('max_latency_ms') if raw.get('max_latency_ms') is not None else p['max_latency_ms']
        _number(problems, where, 'count', count, 1)
        _number(problems, where, 'concurrency', concurrency, 1)
        _number(problems, where, 'timeout', timeout, 0, strict=True)
        _number(problems, where, 'max_latency_ms', max_latency, 0, strict=True)

        json_fields = raw.get('json_fields') or {}
        for field in json_fields:
            modifier = split_field(str(field))[1]
            if modifier is not None and modifier not in MODIFIERS:
                problems.append('%sjson_fields key %r: unknown modifier %r (use %s)'
                                % (where, field, modifier, ', '.join(MODIFIERS)))

        body = raw.get('body')
        payload = raw.get('json')
        if body is not None and payload is not None:
            problems.append('%sset json or body, not both' % where)
        headers = _merge_headers({'User-Agent': USER_AGENT}, p['headers'], top_secrets,
                                 raw.get('headers'), raw.get('secret_headers'))
        data = None
        if payload is not None:
            data = json.dumps(payload).encode('utf-8')
            if not any(k.lower() == 'content-type' for k in headers):
                headers['Content-Type'] = 'application/json'
        elif body is not None:
            data = str(body).encode('utf-8')

        if problems:
            continue
        checks.append(Check(
            name=name, url=url, method=method, headers=headers, data=data, status=status,
            json_fields=json_fields, body_contains=raw.get('body_contains'), count=count,
            concurrency=concurrency, timeout=float(timeout), max_latency_ms=max_latency,
            run_in_check_mode=bool(raw.get('run_in_check_mode')),
            secret_query_keys=tuple(str(k) for k in secret_query),
            max_body_bytes=max_body,
        ))
    if problems:
        raise OpsError('invalid input, nothing was requested: ' + '; '.join(problems))
    return checks


# --------------------------------------------------------------------------- entry point

def check_http(params, check_mode=False, hide=None, opener=None, sleep=time.sleep):
    """Run the checks described by the module parameters and return the module result.

    Raises OpsError on invalid input (before any request), and when a check failed and
    fail_on_error is true (the result fields go with the error).
    """
    p = dict(DEFAULTS)
    p.update((k, v) for k, v in params.items() if v is not None or k not in DEFAULTS)
    checks = build_checks(params, hide=hide)
    if opener is None:
        opener = build_opener(validate_certs=p['validate_certs'], ca_path=p['ca_path'],
                              follow_redirects=p['follow_redirects'], use_proxy=p['use_proxy'])
    results = run_checks(checks, opener, retries=p['retries'], retry_delay=p['retry_delay'],
                         check_mode=check_mode, sleep=sleep)
    failed = [name for name, r in results.items() if not r['passed']]
    skipped = [name for name, r in results.items() if r['skipped']]
    result = dict(
        changed=False,
        passed=not failed,
        checks=dict(results),
        summary=[summary_line(name, r) for name, r in results.items()],
        failed_checks=failed,
        skipped_checks=skipped,
    )
    if failed:
        result['msg'] = '%d of %d checks failed: %s' % (
            len(failed), len(results),
            '; '.join('%s (%s)' % (name, (results[name]['errors'] or ['failed'])[0]) for name in failed))
        if p['fail_on_error']:
            raise OpsError(result.pop('msg'), **result)
    else:
        ran = len(results) - len(skipped)
        result['msg'] = '%d of %d checks passed' % (ran, len(results))
        if skipped:
            result['msg'] += ', %d skipped in check mode (%s)' % (len(skipped), ', '.join(skipped))
    return result
