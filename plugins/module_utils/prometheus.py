# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus health gate for hotelbot.ops.prometheus_gate: queries, the sustained rule, policies.

Standard library only, so the unit tests import it without Ansible. The entry point is
gate(params, hide): params are the module's parameters, hide(*values) registers values
that must never be shown; the return value is the module result. Input errors raise
OpsError before anything is requested.

The sustained rule (judge) is a pure function on [timestamp, value] samples:

* step is the query_range resolution; max_gap = 1.5 * step. Two consecutive samples further
  apart than max_gap have a gap between them. NaN samples (0/0: no requests in the rate
  window) count as missing.
* The breach run is the longest run of samples ending at the newest sample in which every
  value is above threshold (strictly: exactly the threshold is not above) and no two
  consecutive samples are more than max_gap apart. It counts only when the newest sample is
  at most max_gap older than the evaluation time T. breached_since is its first sample.
* unhealthy: the breach run starts at or before T - for (it covers the whole window).
* no data: no sample in the window [T - for, T]; decided by the no-data policy.
* inconclusive: not unhealthy, and the window is not covered: some two consecutive points of
  (T - for, the samples in the window, T) are more than max_gap apart.
* healthy: otherwise (the window is covered and some sample in it is at or below threshold).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import datetime
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError
from ansible_collections.hotelbot.ops.plugins.module_utils.http import (
    build_opener, describe_error, json_type, mask_url, read_body, url_problem, url_secrets_any)

USER_AGENT = 'hotelbot.ops-prometheus_gate/0.1'
HEALTHY = 'healthy'
UNHEALTHY = 'unhealthy'
INCONCLUSIVE = 'inconclusive'
SEVERITY = {HEALTHY: 0, INCONCLUSIVE: 1, UNHEALTHY: 2}
MAX_SAMPLES_RETURNED = 120
# Prometheus refuses range queries of more than 11000 points per series.
MAX_POINTS = 11000
GAP_FACTOR = 1.5
# A query_range answer is at most MAX_POINTS points per series; more than this is not one to judge.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# Each retry waits retry_delay: more than this many only delays the decision of a dead Prometheus.
MAX_RETRIES = 10

DEFAULTS = dict(
    url=None, job=None, selector=None, metric='http_requests_total', status_label='status',
    error_status_regex='5..', rate_window='1m', threshold=0.05, for_duration='10m', step='30s',
    latency_metric='http_request_duration_seconds', latency_p95_max=None, query=None, timeout=10.0,
    retries=3, retry_delay=2.0, validate_certs=True, ca_path=None, bearer_token=None,
    url_username=None, url_password=None, mode='evaluate', watch_for=None, poll_interval=None,
    on_no_data=INCONCLUSIVE, on_query_error=INCONCLUSIVE, fail_on_unhealthy=False, evaluate_at=None,
    use_proxy=True,
)


# --------------------------------------------------------------------------- durations and times

_DURATION_RE = re.compile(r'^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m(?!s))?((\d+)s)?((\d+)ms)?$')
_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def parse_duration(value, name='duration'):
    """Seconds (float) from a Prometheus duration (30s, 10m, 1h30m, 500ms) or a number of seconds.

    Raises ValueError with a message naming the option.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError('%s must be a duration like 30s, 10m, 1h or a number of seconds, got %r' % (name, value))
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            match = _DURATION_RE.match(text)
            if not text or not match:
                raise ValueError('%s must be a duration like 30s, 10m, 1h or a number of seconds, got %r'
                                 % (name, value))
            seconds = sum(int(match.group(2 * i + 2)) * unit for i, unit in enumerate(_UNITS)
                          if match.group(2 * i + 2))
    if math.isnan(seconds) or math.isinf(seconds) or seconds <= 0:
        raise ValueError('%s must be greater than 0, got %r' % (name, value))
    return seconds


def promql_duration(seconds):
    """A PromQL duration for seconds: 60 -> '1m', 90 -> '90s', 0.5 -> '500ms'."""
    millis = int(round(seconds * 1000))
    if millis % 1000:
        return '%dms' % millis
    secs = millis // 1000
    for unit, size in (('h', 3600), ('m', 60)):
        if secs % size == 0:
            return '%d%s' % (secs // size, unit)
    return '%ds' % secs


def iso(ts):
    """ISO 8601 UTC ('2026-11-22T22:40:00Z') for a unix timestamp, None for None."""
    if ts is None:
        return None
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    if moment.microsecond:
        return moment.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3] + 'Z'
    return moment.strftime('%Y-%m-%dT%H:%M:%SZ')


def parse_time(value, name='evaluate_at'):
    """A unix timestamp (float) from a number or an ISO 8601 / RFC 3339 string (UTC if no offset)."""
    if isinstance(value, bool):
        raise ValueError('%s must be a unix timestamp or an ISO 8601 time, got %r' % (name, value))
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    if text.endswith(('Z', 'z')):
        text = text[:-1] + '+00:00'
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError('%s must be a unix timestamp or an ISO 8601 time, got %r' % (name, value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _minutes(seconds):
    if seconds >= 120 and seconds % 60 == 0:
        return '%dm' % (seconds // 60)
    if seconds >= 120:
        return '%.1fm' % (seconds / 60.0)
    return '%gs' % round(seconds, 3)


# --------------------------------------------------------------------------- queries

_LABEL_RE = re.compile(r'^[a-zA-Z_][a-zA-Z0-9_]*$')
_METRIC_RE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*$')


def promql_string(value):
    """value as a double-quoted PromQL string literal."""
    return '"%s"' % str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def matchers(job=None, selector=None, extra=None):
    """The label matchers inside braces: job first, then selector, then extra; '' when none."""
    parts = []
    if job:
        parts.append('job=%s' % promql_string(job))
    if selector:
        parts.append(selector.strip().strip('{}').strip().rstrip(','))
    if extra:
        parts.append(extra)
    return ','.join(p for p in parts if p)


def build_queries(job=None, selector=None, metric='http_requests_total', status_label='status',
                  error_status_regex='5..', rate_window='1m', latency_metric='http_request_duration_seconds',
                  latency=False, query=None):
    """The PromQL expressions: dict(error_ratio=..., latency_p95=... or None).

    error_ratio is sum(rate(errors)) / sum(rate(all)); the errors side is `or vector(0)` so a
    service that never answered an error has a ratio of 0, not no data. No requests at all (in
    the rate window) give no sample (empty denominator) or NaN.
    """
    window = promql_duration(parse_duration(rate_window, 'rate_window'))
    base = matchers(job, selector)
    if query:
        ratio = query.strip()
    else:
        errors = matchers(job, selector, '%s=~%s' % (status_label, promql_string(error_status_regex)))
        ratio = '(sum(rate(%s{%s}[%s])) or vector(0)) / sum(rate(%s{%s}[%s]))' % (
            metric, errors, window, metric, base, window)
    latency_query = None
    if latency:
        latency_query = 'histogram_quantile(0.95, sum by (le) (rate(%s_bucket{%s}[%s])))' % (
            latency_metric, base, window)
    return dict(error_ratio=ratio, latency_p95=latency_query)


# --------------------------------------------------------------------------- the sustained rule

# Prometheus keeps timestamps in milliseconds: two times this close are the same instant.
TIME_TOLERANCE = 0.0005


def whole_ms(now):
    """now floored to whole milliseconds, so the query grid lands exactly on now - k * step."""
    return math.floor(now * 1000) / 1000.0


def _clean(samples, now):
    """Sorted (ts, value) floats at or before now, NaN dropped (it is missing data)."""
    cleaned = []
    for ts, value in samples:
        ts = float(ts)
        value = float(value)
        if ts <= now + TIME_TOLERANCE and not math.isnan(value):
            cleaned.append((ts, value))
    cleaned.sort()
    return cleaned


def judge(samples, threshold, for_s, step_s, now, on_no_data=INCONCLUSIVE, what='error ratio'):
    """Apply the sustained rule at time now (see the module docstring for the definition).

    samples are [timestamp, value] pairs (numbers or numeric strings). Returns a dict with
    decision, reason, breached (bool), breached_since, first_breach_at (first sample above
    threshold in the window), gap (None or [from, to]), no_data (bool), last and max values.
    """
    max_gap = GAP_FACTOR * step_s
    points = _clean(samples, now)
    start = now - for_s
    window = [(ts, v) for ts, v in points if ts >= start - TIME_TOLERANCE]
    above = [(ts, v) for ts, v in window if v > threshold]
    result = dict(
        decision=None, reason=None, breached=False, breached_since=None,
        first_breach_at=above[0][0] if above else None, gap=None, no_data=False,
        samples_in_window=len(window),
        last_value=window[-1][1] if window else None,
        max_value=max(v for _ts, v in window) if window else None,
    )

    # The breach run: above threshold, contiguous, ending at a fresh newest sample.
    run_start = None
    if points and now - points[-1][0] <= max_gap + TIME_TOLERANCE:
        index = len(points) - 1
        while index >= 0 and points[index][1] > threshold:
            if index < len(points) - 1 and points[index + 1][0] - points[index][0] > max_gap + TIME_TOLERANCE:
                break
            run_start = points[index][0]
            index -= 1
    result['breached_since'] = run_start
    if run_start is not None and run_start <= start + TIME_TOLERANCE:
        result.update(decision=UNHEALTHY, breached=True, reason=(
            '%s above %g for %s (since %s), at least the %s of the rule; last value %g'
            % (what, threshold, _minutes(now - run_start), iso(run_start), _minutes(for_s),
               points[-1][1])))
        return result

    if not window:
        result['no_data'] = True
        result['decision'] = on_no_data
        result['reason'] = 'no %s data in the %s window ending %s (no_data policy: %s)' % (
            what, _minutes(for_s), iso(now), on_no_data)
        return result

    edges = [start] + [ts for ts, _v in window] + [now]
    for before, after in zip(edges, edges[1:]):
        if after - before > max_gap + TIME_TOLERANCE:
            result['gap'] = [before, after]
            result['decision'] = INCONCLUSIVE
            result['reason'] = ('%s data has a gap of %s (from %s to %s) inside the %s window, so a sustained '
                                'breach can be neither proven nor ruled out'
                                % (what, _minutes(after - before), iso(before), iso(after), _minutes(for_s)))
            return result

    result['decision'] = HEALTHY
    if run_start is not None:
        result['reason'] = ('%s above %g for only %s (since %s), less than the %s of the rule; max %g'
                            % (what, threshold, _minutes(now - run_start), iso(run_start), _minutes(for_s),
                               result['max_value']))
    elif above:
        result['reason'] = ('%s went above %g but not for %s; now %g (max %g)'
                            % (what, threshold, _minutes(for_s), result['last_value'], result['max_value']))
    else:
        result['reason'] = '%s at or below %g throughout the last %s (max %g)' % (
            what, threshold, _minutes(for_s), result['max_value'])
    return result


def combine(verdicts):
    """The worst decision of several judge results (unhealthy > inconclusive > healthy)."""
    return max(verdicts, key=lambda v: SEVERITY[v['decision']])


# --------------------------------------------------------------------------- HTTP API

class QueryError(Exception):
    """A query that got no usable answer (after retries); the query-error policy decides."""


class Client:
    """A Prometheus HTTP API client with retries on connection errors and 5xx answers."""

    def __init__(self, url, opener, headers=None, timeout=10.0, retries=3, retry_delay=2.0,
                 sleep=time.sleep):
        self.url = url.rstrip('/')
        self.display_url = mask_url(self.url)
        self.opener = opener
        self.headers = dict(headers or {})
        self.headers.setdefault('User-Agent', USER_AGENT)
        self.headers.setdefault('Accept', 'application/json')
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self.sleep = sleep
        self.attempts = 0

    def _once(self, path, params):
        """(retryable, error message) on failure, or (None, data) on success."""
        body = urllib.parse.urlencode(params).encode('ascii')
        headers = dict(self.headers)
        headers['Content-Type'] = 'application/x-www-form-urlencoded'
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method='POST')
        status = None
        try:
            response = self.opener.open(request, timeout=self.timeout)
            try:
                status = response.status
                raw, size, cut = read_body(response, MAX_ANSWER_BYTES)
            finally:
                response.close()
        except urllib.error.HTTPError as err:
            status = err.code
            try:
                raw, size, cut = read_body(err, MAX_ANSWER_BYTES)
            except Exception:  # pylint: disable=broad-except
                raw, size, cut = b'', 0, False
            finally:
                err.close()
        except Exception as err:  # pylint: disable=broad-except
            return True, describe_error(err, self.timeout)
        if cut:
            return False, 'HTTP %s: the answer is %d bytes, more than the %d this gate reads; use a longer step' % (
                status, size, MAX_ANSWER_BYTES)
        try:
            answer = json.loads(raw.decode('utf-8', 'replace'))
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            answer = {}
        if status == 200 and answer.get('status') == 'success':
            return None, answer.get('data')
        detail = answer.get('error') or raw.decode('utf-8', 'replace').strip()[:200] or 'no body'
        kind = answer.get('errorType')
        text = 'HTTP %s%s: %s' % (status, ' (%s)' % kind if kind else '', detail)
        if status in (400, 422):
            # The expression itself is wrong (bad_data) or cannot be run (execution): input error.
            raise OpsError('Prometheus at %s rejected the query: %s' % (self.display_url, text))
        return status is None or status >= 500 or status == 429, text

    def call(self, path, params):
        """data of a successful API answer; QueryError after the retries are used up."""
        tries = 0
        while True:
            tries += 1
            self.attempts += 1
            retryable, data = self._once(path, params)
            if retryable is None:
                return data
            if not retryable or tries > self.retries:
                raise QueryError('%s (after %d attempt%s)' % (data, tries, '' if tries == 1 else 's'))
            if self.retry_delay > 0:
                self.sleep(self.retry_delay)

    def query_range(self, query, start, end, step):
        data = self.call('/api/v1/query_range', dict(query=query, start=repr(start), end=repr(end),
                                                     step=repr(step)))
        return parse_matrix(data)


def _number(value):
    """A sample's float: Prometheus writes values as strings ("0.05", "NaN", "+Inf"); None if unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def parse_matrix(data):
    """[{metric, values: [[ts, float], ...]}] from the data of a query_range answer.

    An answer that is not the API's matrix shape (data a list, result not a list, a sample that is
    not [time, number]) raises QueryError naming what is wrong: the query-error policy decides, the
    gate never guesses from it. A resultType other than matrix is the query's fault (OpsError).
    """
    def unusable(what):
        return QueryError('Prometheus answered unusable data: %s' % what)

    if not isinstance(data, dict):
        raise unusable('data is %s, not an object' % _json_kind(data))
    kind = data.get('resultType')
    if kind is None:
        raise unusable('data has no resultType')
    if kind != 'matrix':
        raise OpsError('query_range answered %r, not a matrix: the query must be an instant vector '
                       'expression' % (kind,))
    result = data.get('result')
    if not isinstance(result, list):
        raise unusable('data.result is %s, not a list' % _json_kind(result))
    series = []
    for index, item in enumerate(result):
        where = 'data.result[%d]' % index
        if not isinstance(item, dict):
            raise unusable('%s is %s, not an object' % (where, _json_kind(item)))
        metric = item.get('metric', {})
        values = item.get('values')
        if not isinstance(metric, dict):
            raise unusable('%s.metric is %s, not an object' % (where, _json_kind(metric)))
        if not isinstance(values, list):
            raise unusable('%s.values is %s, not a list' % (where, _json_kind(values)))
        samples = []
        for pos, pair in enumerate(values):
            if not isinstance(pair, list) or len(pair) != 2:
                raise unusable('%s.values[%d] is not a [time, value] pair' % (where, pos))
            ts, value = _number(pair[0]), _number(pair[1])
            if ts is None or math.isnan(ts) or math.isinf(ts):
                raise unusable('%s.values[%d] has the time %s, not a number' % (where, pos, _shown(pair[0])))
            if value is None:
                raise unusable('%s.values[%d] has the value %s, not a number' % (where, pos, _shown(pair[1])))
            samples.append([ts, value])
        series.append(dict(metric=metric, values=samples))
    return series


# How an answer's JSON type reads in a message (http.json_type names the type).
JSON_KIND_WORDS = dict(null='missing or null', boolean='a boolean', number='a number', string='a string',
                       array='a list', object='an object')


def _json_kind(value):
    return JSON_KIND_WORDS[json_type(value)]


def _shown(value):
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + '...'


def auth_headers(bearer_token=None, username=None, password=None):
    """Authorization header for a bearer token or basic auth (at most one of them)."""
    if bearer_token:
        return {'Authorization': 'Bearer %s' % bearer_token}
    if username is not None:
        pair = ('%s:%s' % (username, password or '')).encode('utf-8')
        return {'Authorization': 'Basic %s' % base64.b64encode(pair).decode('ascii')}
    return {}


# --------------------------------------------------------------------------- input

def threshold_problems(threshold, latency_p95_max=None):
    """Problems of the two limits: the error ratio is a share in (0, 1), the latency limit seconds above 0.

    threshold: 5 meant as 5% would judge a steady 50% error ratio healthy, so it is refused.
    """
    problems = []
    if threshold is None or math.isnan(threshold) or not 0 < threshold < 1:
        problems.append('threshold is a ratio between 0 and 1 (0.05 for 5%%), not %s'
                        % ('%g' % threshold if threshold is not None else 'empty'))
    if latency_p95_max is not None and (math.isnan(latency_p95_max) or math.isinf(latency_p95_max)
                                        or latency_p95_max <= 0):
        problems.append('latency_p95_max must be greater than 0 seconds (it is seconds, not a ratio), got %g'
                        % latency_p95_max)
    return problems


class Settings:
    """The validated parameters, durations in seconds."""

    def __init__(self, params, hide=None):
        hide = hide or (lambda *values: None)
        p = dict(DEFAULTS)
        p.update((k, v) for k, v in params.items() if v is not None or k not in DEFAULTS)
        if p.get('for') is not None and params.get('for_duration') is None:
            p['for_duration'] = p['for']
        self.params = p
        problems = []
        url = p.get('url') or ''
        hide(*url_secrets_any(url))
        if p['bearer_token']:
            hide(p['bearer_token'])
        if p['url_password']:
            hide(p['url_password'])
        headers = auth_headers(p['bearer_token'], p['url_username'], p['url_password'])
        if headers and not p['bearer_token']:
            hide(headers['Authorization'].split(' ', 1)[1])
        self.headers = headers

        problem = url_problem('url', url)
        if problem:
            problems.append(problem)
        if p['bearer_token'] and (p['url_username'] is not None or p['url_password']):
            problems.append('set bearer_token or url_username/url_password, not both')
        if p['url_password'] and p['url_username'] is None:
            problems.append('url_password needs url_username')

        def duration(name, value):
            try:
                return parse_duration(value, name)
            except ValueError as err:
                problems.append(str(err))
                return None

        self.rate_window = duration('rate_window', p['rate_window'])
        self.for_s = duration('for', p['for_duration'])
        self.step_s = duration('step', p['step'])
        self.watch_s = duration('watch_for', p['watch_for']) if p['watch_for'] is not None else None
        self.poll_s = duration('poll_interval', p['poll_interval']) if p['poll_interval'] is not None else None
        if self.for_s and self.step_s:
            if self.step_s > self.for_s:
                problems.append('step (%gs) must not be longer than for (%gs)' % (self.step_s, self.for_s))
            elif (self.for_s + 2 * self.step_s) / self.step_s > MAX_POINTS:
                problems.append('for / step is more than %d points; use a longer step' % MAX_POINTS)
        problems.extend(threshold_problems(p['threshold'], p['latency_p95_max']))
        if p['timeout'] is None or p['timeout'] <= 0 or math.isnan(p['timeout']):
            problems.append('timeout must be greater than 0, got %r' % (p['timeout'],))
        if p['retries'] is None or not 0 <= p['retries'] <= MAX_RETRIES:
            problems.append('retries must be between 0 and %d, got %r' % (MAX_RETRIES, p['retries']))
        if p['retry_delay'] is None or p['retry_delay'] < 0:
            problems.append('retry_delay must be at least 0, got %r' % (p['retry_delay'],))
        if p['on_no_data'] not in (INCONCLUSIVE, HEALTHY, UNHEALTHY):
            problems.append('on_no_data must be one of inconclusive, healthy, unhealthy, got %r' % p['on_no_data'])
        if p['on_query_error'] not in (INCONCLUSIVE, UNHEALTHY):
            problems.append('on_query_error must be inconclusive or unhealthy, got %r' % p['on_query_error'])
        if p['mode'] not in ('evaluate', 'watch'):
            problems.append('mode must be evaluate or watch, got %r' % p['mode'])
        if p['mode'] == 'watch':
            if self.watch_s is None and p['watch_for'] is None:
                problems.append('mode=watch needs watch_for')
            if p['evaluate_at'] is not None:
                problems.append('evaluate_at cannot be used with mode=watch (watch follows the clock)')
        elif p['watch_for'] is not None or p['poll_interval'] is not None:
            problems.append('watch_for and poll_interval need mode=watch')
        self.evaluate_at = None
        if p['evaluate_at'] is not None:
            try:
                self.evaluate_at = parse_time(p['evaluate_at'])
            except ValueError as err:
                problems.append(str(err))
        if not p['query'] and not p['job'] and not p['selector']:
            problems.append('set job and/or selector (or a full query) to say which service to judge')
        for name in ('metric', 'latency_metric'):
            if not _METRIC_RE.match(p[name] or ''):
                problems.append('%s must be a Prometheus metric name, got %r' % (name, p[name]))
        if not _LABEL_RE.match(p['status_label'] or ''):
            problems.append('status_label must be a Prometheus label name, got %r' % (p['status_label'],))
        try:
            re.compile(p['error_status_regex'] or '')
        except re.error as err:
            problems.append('error_status_regex is not a valid regular expression: %s' % err)
        if problems:
            raise OpsError('invalid input, nothing was queried: ' + '; '.join(problems))
        self.queries = build_queries(
            job=p['job'], selector=p['selector'], metric=p['metric'], status_label=p['status_label'],
            error_status_regex=p['error_status_regex'], rate_window=self.rate_window,
            latency_metric=p['latency_metric'], latency=p['latency_p95_max'] is not None, query=p['query'])


# --------------------------------------------------------------------------- evaluation

def _trim(samples, now):
    kept = [[float(ts), float(v)] for ts, v in samples if float(ts) <= now + TIME_TOLERANCE]
    kept = kept[-MAX_SAMPLES_RETURNED:]
    return [[ts, None if math.isnan(v) else v] for ts, v in kept]


def _judge_series(series, threshold, settings, now, what):
    """Judge every series a query returned; the worst one is the verdict (samples included)."""
    if not series:
        verdict = judge([], threshold, settings.for_s, settings.step_s, now,
                        on_no_data=settings.params['on_no_data'], what=what)
        verdict['samples'] = []
        verdict['labels'] = {}
        return verdict
    verdicts = []
    for item in series:
        verdict = judge(item['values'], threshold, settings.for_s, settings.step_s, now,
                        on_no_data=settings.params['on_no_data'], what=what)
        verdict['samples'] = _trim(item['values'], now)
        verdict['labels'] = item['metric']
        verdicts.append(verdict)
    return combine(verdicts)


def evaluate(client, settings, now):
    """One evaluation at time now: both rules, policies applied. Returns a dict (decision, reason, rules)."""
    step = settings.step_s
    now = whole_ms(now)
    # A grid that holds both now and now - for, plus two steps before to see what came first.
    points = int(math.ceil(settings.for_s / step)) + 2
    start = now - points * step
    rules = {}
    checks = [('error_ratio', 'error ratio', settings.params['threshold'])]
    if settings.queries['latency_p95']:
        checks.append(('latency_p95', 'p95 latency', settings.params['latency_p95_max']))
    for key, what, threshold in checks:
        try:
            series = client.query_range(settings.queries[key], start, now, step)
        except QueryError as err:
            policy = settings.params['on_query_error']
            rules[key] = dict(
                decision=policy, breached=False, breached_since=None, first_breach_at=None, gap=None,
                no_data=False, query_error=str(err), samples=[], labels={}, samples_in_window=0,
                last_value=None, max_value=None,
                reason='the %s query failed: %s (query_error policy: %s)' % (what, err, policy))
            continue
        verdict = _judge_series(series, threshold, settings, now, what)
        verdict['query_error'] = None
        rules[key] = verdict
    worst = combine(list(rules.values()))
    unhealthy = [r for r in rules.values() if r['decision'] == UNHEALTHY]
    inconclusive = [r for r in rules.values() if r['decision'] == INCONCLUSIVE]
    if unhealthy:
        reason = '; '.join(r['reason'] for r in unhealthy)
    elif inconclusive:
        reason = '; '.join(r['reason'] for r in inconclusive)
    else:
        reason = '; '.join(r['reason'] for r in rules.values())
    since = [r['breached_since'] for r in (unhealthy or rules.values()) if r['breached_since'] is not None]
    firsts = [r['first_breach_at'] for r in rules.values() if r['first_breach_at'] is not None]
    return dict(decision=worst['decision'], reason=reason, rules=rules, at=now,
                breached_since=min(since) if since else None,
                first_breach_at=min(firsts) if firsts else None)


def _rule_view(rule):
    view = dict(rule)
    for key in ('breached_since', 'first_breach_at'):
        view[key] = iso(view.get(key))
    if view.get('gap'):
        view['gap'] = [iso(t) for t in view['gap']]
    return view


def gate(task, opener=None, sleep=time.sleep, clock=time.time, monotonic=time.monotonic):
    """Run the gate described by the task's parameters and return the module result."""
    settings = Settings(task.params, hide=task.hide)
    p = settings.params
    if opener is None:
        opener = build_opener(validate_certs=p['validate_certs'], ca_path=p['ca_path'],
                              use_proxy=p['use_proxy'])
    client = Client(p['url'], opener, headers=settings.headers, timeout=p['timeout'], retries=p['retries'],
                    retry_delay=p['retry_delay'], sleep=sleep)
    evaluations = []
    first_breach = None
    if p['mode'] == 'watch':
        poll = settings.poll_s or settings.step_s
        began = monotonic()
        rounds = 0
        while True:
            rounds += 1
            current = evaluate(client, settings, clock())
            evaluations.append(current)
            if current['first_breach_at'] is not None and first_breach is None:
                first_breach = current['first_breach_at']
            if current['decision'] == UNHEALTHY:
                break
            elapsed = monotonic() - began
            left = settings.watch_s - elapsed
            if left <= 0:
                break
            # On a fixed cadence (began + k * poll): the time an evaluation takes does not
            # push the next one later and later.
            sleep(max(0.0, min(rounds * poll - elapsed, left)))
        final = evaluations[-1]
        decision = final['decision']
        reason = final['reason']
        inconclusive = sum(1 for e in evaluations if e['decision'] == INCONCLUSIVE)
        if decision == UNHEALTHY:
            reason = 'watch stopped after %s (%d evaluations): %s' % (
                _minutes(monotonic() - began), len(evaluations), reason)
        elif decision == HEALTHY:
            reason = 'no sustained breach in %d evaluations over %s%s; last: %s' % (
                len(evaluations), _minutes(settings.watch_s),
                ' (%d inconclusive on the way)' % inconclusive if inconclusive else '', reason)
        else:
            reason = 'watched %s (%d evaluations), the last was inconclusive: %s' % (
                _minutes(settings.watch_s), len(evaluations), reason)
    else:
        now = settings.evaluate_at if settings.evaluate_at is not None else clock()
        final = evaluate(client, settings, now)
        evaluations.append(final)
        first_breach = final['first_breach_at']
        decision = final['decision']
        reason = final['reason']

    rules = final['rules']
    ratio = rules['error_ratio']
    result = dict(
        changed=False,
        decision=decision,
        healthy=decision == HEALTHY,
        reason=reason[:1].upper() + reason[1:] + ('' if reason.endswith('.') else '.'),
        query=dict(settings.queries),
        samples=ratio.get('samples', []),
        latency_samples=rules['latency_p95'].get('samples', []) if 'latency_p95' in rules else None,
        breached_since=iso(final['breached_since']),
        first_breach_at=iso(first_breach),
        decided_at=iso(final['at']),
        evaluations=len(evaluations),
        decisions=[e['decision'] for e in evaluations],
        rules=dict((k, _rule_view(v)) for k, v in rules.items()),
        url=client.display_url,
        threshold=p['threshold'],
        for_seconds=settings.for_s,
        step_seconds=settings.step_s,
        mode=p['mode'],
        attempts=client.attempts,
    )
    for view in result['rules'].values():
        view.pop('samples', None)
    result['msg'] = result['reason']
    if decision == UNHEALTHY and p['fail_on_unhealthy']:
        raise OpsError(result.pop('msg'), **result)
    return result
