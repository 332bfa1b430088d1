# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The check engine of hotelbot.ops.http_check: requests timed, percentiles, assertions, masking.

The entry point is check_http(task), the module's work (common.Task: the params validated and
completed by the module's SPEC, check_mode, hide). What the SPEC cannot say (URLs that parse,
unique names, status codes, methods, JSON path modifiers) is checked here before any request;
failed checks raise OpsError when fail_on_error is set. Sending and reading is the collection's
one HTTP transport (module_utils/transport.py); this file times it and judges the answers.

Every request of a check is assessed on its own (status, body, JSON fields); a check
passes when every request passed and, if max_latency_ms is set, the nearest-rank p95
latency of the requests that got a response is not above it. A non-2xx answer is a
response like any other (urllib's HTTPError is read, not raised); a request that got
no response (refused, timed out, TLS failure) is a failed request with a plain error.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import re
import time
import urllib.parse
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError
from ansible_collections.hotelbot.ops.plugins.module_utils.masking import is_secret_name
from ansible_collections.hotelbot.ops.plugins.module_utils.transport import Transport, TransportError, json_type
from ansible_collections.hotelbot.ops.plugins.module_utils.url import (  # noqa: F401 (re-exported)
    add_query, header_secrets, join_url, mask_url, url_problem, url_secrets, url_secrets_any,
)

USER_AGENT = 'hotelbot.ops-http_check/0.1'
MAX_ERRORS = 5
MAX_BODY_SHOWN = 1024
MAX_JSON_KEPT = 65536
READ_ONLY_METHODS = frozenset(['GET', 'HEAD', 'OPTIONS'])
# A token of RFC 9110: what may be an HTTP method.
METHOD_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


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

    def __init__(self, name, url, method, headers, data, status, json_fields, body_contains, count,
                 concurrency, timeout, max_latency_ms, run_in_check_mode, max_body_bytes, display_url):
        self.name = name
        self.url = url
        self.method = method.upper()
        self.headers = headers
        self.data = data
        self.status = list(status)
        self.json_fields = json_fields or {}
        self.body_contains = body_contains
        self.count = count
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_latency_ms = max_latency_ms
        self.run_in_check_mode = run_in_check_mode
        self.max_body_bytes = max_body_bytes
        self.display_url = display_url


class Sample:
    """The outcome of one request: an answer (status, body) or an error; latency in ms.

    body is at most the check's max_body_bytes; body_bytes counts the whole body received and
    truncated says whether body is only its beginning.
    """

    def __init__(self, latency_ms, answer=None, error=None):
        self.latency_ms = latency_ms
        self.error = error
        self.status = answer.status if answer else None
        self.body = answer.body if answer else None
        self.charset = answer.charset if answer else 'utf-8'
        self.body_bytes = answer.body_bytes if answer else 0
        self.truncated = answer.truncated if answer else False

    def text(self):
        return (self.body or b'').decode(self.charset, 'replace')


def send(transport, check, clock=time.perf_counter):
    """Make one request of check, timed from sending to the last byte of the body; never raises
    for network or HTTP errors (the transport's send() is one try: retries are the check's)."""
    started = clock()
    try:
        answer = transport.send(check.method, check.url, data=check.data, headers=check.headers,
                                timeout=check.timeout, max_body_bytes=check.max_body_bytes)
    except TransportError as err:
        return Sample((clock() - started) * 1000.0, error=err.reason)
    return Sample((clock() - started) * 1000.0, answer=answer)


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


def run_check(check, transport, clock=time.perf_counter):
    """Make check.count requests, check.concurrency at a time, and assess them."""
    started = clock()

    def one(index):
        sample = send(transport, check, clock=clock)
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


def run_checks(checks, transport, retries=0, retry_delay=1.0, check_mode=False, sleep=time.sleep,
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
            result = run_check(check, transport, clock=clock)
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

def _merge_headers(*layers):
    """Merge header dicts, later ones winning, names compared case-insensitively."""
    merged = OrderedDict()
    for layer in layers:
        for key, value in (layer or {}).items():
            merged[str(key).lower()] = (str(key), '' if value is None else str(value))
    return dict(merged.values())


def hide_credentials(params, hide):
    """Register every credential of the params before anything can show them: secret headers,
    credential-named headers, secret query values, URL passwords and secret-looking query values."""
    def headers(plain, secret):
        for value in (secret or {}).values():
            hide(*header_secrets(value))
        for key, value in (plain or {}).items():
            if value and is_secret_name(key):
                hide(*header_secrets(value))

    if isinstance(params.get('base_url'), str):
        hide(*url_secrets_any(params['base_url']))
    headers(params.get('headers'), params.get('secret_headers'))
    for raw in params.get('checks') or []:
        headers(raw.get('headers'), raw.get('secret_headers'))
        for value in (raw.get('secret_query') or {}).values():
            if value not in (None, ''):
                hide(str(value), urllib.parse.quote_plus(str(value)))
        if isinstance(raw.get('url'), str):
            hide(*url_secrets_any(raw['url']))


def _base_url(params, problems):
    """base_url when it is usable, else None (and the problem noted)."""
    base_url = params.get('base_url')
    problem = url_problem('base_url', base_url) if base_url is not None else None
    if problem:
        problems.append(problem)
        return None
    return base_url


def _names_problems(raw_checks):
    if not raw_checks:
        return ['checks must list at least one check']
    seen, problems = set(), []
    for raw in raw_checks:
        if raw['name'] in seen:
            problems.append('check %r: duplicate name (names must be unique)' % raw['name'])
        seen.add(raw['name'])
    return problems


def _check_url(raw, params, base_url, where, problems):
    """The URL a check requests (its url, or base_url + path, secret_query added), or None."""
    url = raw.get('url')
    if url:
        problem = url_problem('url', url)
    elif base_url:
        url = join_url(base_url, raw.get('path') or '')
        problem = url_problem('path', url)
    elif params.get('base_url') is None:
        problem = 'needs url, or path together with base_url'
    else:
        return None   # base_url is named already
    if problem:
        problems.append(where + problem)
        return None
    return add_query(url, raw.get('secret_query'))


def _request_problems(raw, where):
    """What the SPEC cannot check of a request: its method, status codes and JSON path modifiers."""
    problems = []
    method = str(raw.get('method') or 'GET')
    if not METHOD_RE.match(method):
        problems.append('%smethod %r is not a valid HTTP method' % (where, method))
    bad = [s for s in raw.get('status') or [200] if not 100 <= s <= 599]
    if bad:
        problems.append('%sstatus codes must be between 100 and 599, got %s' % (where, bad))
    for field in raw.get('json_fields') or {}:
        modifier = split_field(str(field))[1]
        if modifier is not None and modifier not in MODIFIERS:
            problems.append('%sjson_fields key %r: unknown modifier %r (use %s)'
                            % (where, field, modifier, ', '.join(MODIFIERS)))
    return problems


def _request_body(raw, headers):
    """The bytes a check sends (its json or body), Content-Type set for JSON unless a header sets it."""
    if raw.get('json') is not None:
        if not any(k.lower() == 'content-type' for k in headers):
            headers['Content-Type'] = 'application/json'
        return json.dumps(raw['json']).encode('utf-8')
    if raw.get('body') is not None:
        return str(raw['body']).encode('utf-8')
    return None


def _or_default(raw, params, name):
    return raw[name] if raw.get(name) is not None else params[name]


def build_checks(params, hide):
    """The list of Check of the validated params; OpsError naming every problem at once.

    The SPEC has checked types, choices, ranges and which options go together; this checks the
    rest. hide(*values) is called with every credential before anything is requested.
    """
    hide_credentials(params, hide)
    problems = []
    base_url = _base_url(params, problems)
    raw_checks = params.get('checks') or []
    problems.extend(_names_problems(raw_checks))
    checks = []
    for raw in raw_checks:
        where = 'check %r: ' % raw['name']
        url = _check_url(raw, params, base_url, where, problems)
        problems.extend(_request_problems(raw, where))
        if problems:
            continue
        secret_query_keys = tuple(str(k) for k in raw.get('secret_query') or {})
        hide(*url_secrets(url, secret_query_keys))
        headers = _merge_headers({'User-Agent': USER_AGENT}, params['headers'], params['secret_headers'],
                                 raw.get('headers'), raw.get('secret_headers'))
        checks.append(Check(
            name=raw['name'], url=url, method=str(raw.get('method') or 'GET'), headers=headers,
            data=_request_body(raw, headers), status=raw.get('status') or [200], json_fields=raw.get('json_fields'),
            body_contains=raw.get('body_contains'), count=_or_default(raw, params, 'count'),
            concurrency=_or_default(raw, params, 'concurrency'),
            timeout=float(_or_default(raw, params, 'timeout')),
            max_latency_ms=_or_default(raw, params, 'max_latency_ms'),
            run_in_check_mode=bool(raw.get('run_in_check_mode')), max_body_bytes=params['max_body_bytes'],
            display_url=mask_url(url, secret_query_keys),
        ))
    if problems:
        raise OpsError('invalid input, nothing was requested: ' + '; '.join(problems))
    return checks


# --------------------------------------------------------------------------- entry point

def check_http(task, transport=None, sleep=time.sleep):
    """The module's work: run the checks of task.params and return the module result.

    Raises OpsError on invalid input (before any request), and when a check failed and
    fail_on_error is true (the result fields go with the error).
    """
    params = task.params
    checks = build_checks(params, task.hide)
    if transport is None:
        transport = Transport(validate_certs=params['validate_certs'], ca_path=params['ca_path'],
                              follow_redirects=params['follow_redirects'], use_proxy=params['use_proxy'],
                              user_agent=USER_AGENT, hide=task.hide)
    results = run_checks(checks, transport, retries=params['retries'], retry_delay=params['retry_delay'],
                         check_mode=task.check_mode, sleep=sleep)
    result = outcome(results)
    if result['failed_checks'] and params['fail_on_error']:
        raise OpsError(result.pop('msg'), **result)
    return result


def reported_version(results):
    """The version field of the first check whose JSON response has one (what the service says it runs)."""
    for check in results.values():
        answer = (check.get('response') or {}).get('json')
        if isinstance(answer, dict) and 'version' in answer:
            return answer['version']
    return None


def outcome(results):
    """The module result of the checks' results: passed, the lists of failed and skipped checks, msg."""
    failed = [name for name, r in results.items() if not r['passed']]
    skipped = [name for name, r in results.items() if r['skipped']]
    result = dict(
        changed=False,
        passed=not failed,
        checks=dict(results),
        summary=[summary_line(name, r) for name, r in results.items()],
        failed_checks=failed,
        skipped_checks=skipped,
        latency_ms=dict((name, r['latency_ms']) for name, r in results.items()),
        version=reported_version(results),
    )
    if failed:
        result['msg'] = '%d of %d checks failed: %s' % (
            len(failed), len(results),
            '; '.join('%s (%s)' % (name, (results[name]['errors'] or ['failed'])[0]) for name in failed))
    else:
        result['msg'] = '%d of %d checks passed' % (len(results) - len(skipped), len(results))
        if skipped:
            result['msg'] += ', %d skipped in check mode (%s)' % (len(skipped), ', '.join(skipped))
    return result
