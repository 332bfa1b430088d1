# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus health gate for hotelbot.ops.prometheus_gate: queries, the sustained rule, policies.

The entry point is gate(task), the module's work (common.Task: the params validated and completed
by the module's SPEC). What the SPEC cannot say (durations, the URL, PromQL names, a threshold
given as a percentage) is checked here before anything is requested. The queries go through the
collection's one HTTP transport (module_utils/transport.py) and its retry policy; the watch is
poll.poll on a fixed cadence.

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

import datetime
import json
import math
import re
import time
import urllib.parse

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError
from ansible_collections.hotelbot.ops.plugins.module_utils.duration import parse_duration, promql_duration
from ansible_collections.hotelbot.ops.plugins.module_utils.poll import Backoff, PollTimeout, poll
from ansible_collections.hotelbot.ops.plugins.module_utils.transport import (
    Transport, TransportError, auth_header, json_type)
from ansible_collections.hotelbot.ops.plugins.module_utils.url import mask_url, url_problem, url_secrets_any

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


# --------------------------------------------------------------------------- times

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
    window = promql_duration(parse_duration(rate_window, 'rate_window', positive=True))
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
    """The Prometheus HTTP API over a transport (whose retry policy covers 429, 5xx and no answer)."""

    def __init__(self, url, transport):
        self.url = url.rstrip('/')
        self.display_url = mask_url(self.url)
        self.transport = transport

    @property
    def attempts(self):
        return self.transport.attempts

    def call(self, path, params):
        """data of a successful API answer; QueryError when there is none after the retries,
        OpsError when Prometheus refuses the query itself (400, 422)."""
        body = urllib.parse.urlencode(params).encode('ascii')
        try:
            answer = self.transport.request('POST', self.url + path, data=body, headers=FORM_HEADERS,
                                            accept=lambda status: status == 200)
        except TransportError as err:
            if err.answer is None:
                raise QueryError(_after(err.reason, err.tries))
            if err.status in (400, 422):
                # The expression itself is wrong (bad_data) or cannot be run (execution): input error.
                raise OpsError('Prometheus at %s rejected the query: %s' % (self.display_url, _answer_text(err.answer)))
            raise QueryError(_after(_answer_text(err.answer), err.tries))
        if answer.truncated:
            raise QueryError(_after('HTTP %s: the answer is %d bytes, more than the %d this gate reads; use a longer '
                                    'step' % (answer.status, answer.body_bytes, MAX_ANSWER_BYTES), 1))
        decoded = _api_answer(answer)
        if decoded.get('status') != 'success':
            raise QueryError(_after(_answer_text(answer), 1))
        return decoded.get('data')

    def query_range(self, query, start, end, step):
        data = self.call('/api/v1/query_range', dict(query=query, start=repr(start), end=repr(end),
                                                     step=repr(step)))
        return parse_matrix(data)


FORM_HEADERS = {'Content-Type': 'application/x-www-form-urlencoded', 'Accept': 'application/json'}


def _after(text, tries):
    return '%s (after %d attempt%s)' % (text, tries, '' if tries == 1 else 's')


def _api_answer(answer):
    """The API's JSON object of an answer, {} when it is not one."""
    try:
        decoded = json.loads(answer.text())
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _answer_text(answer):
    """'HTTP 500 (internal): boom': the status, the API's errorType and error (or the body's start)."""
    decoded = _api_answer(answer)
    detail = decoded.get('error') or answer.text().strip()[:200] or 'no body'
    kind = decoded.get('errorType')
    return 'HTTP %s%s: %s' % (answer.status, ' (%s)' % kind if kind else '', detail)


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


# How an answer's JSON type reads in a message (transport.json_type names the type).
JSON_KIND_WORDS = dict(null='missing or null', boolean='a boolean', number='a number', string='a string',
                       array='a list', object='an object')


def _json_kind(value):
    return JSON_KIND_WORDS[json_type(value)]


def _shown(value):
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + '...'


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
    """The validated parameters, durations in seconds; OpsError naming every problem the SPEC
    cannot express (types, choices, ranges and which options go together are the SPEC's)."""

    def __init__(self, params, hide=None):
        hide = hide or (lambda *values: None)
        self.params = params
        self.headers = auth_header(params['bearer_token'], params['url_username'], params['url_password'])
        hide(*url_secrets_any(params['url'] or ''))
        hide(params['bearer_token'], params['url_password'])
        if params['url_username'] is not None:
            hide(self.headers['Authorization'].split(' ', 1)[1])
        problems = []
        problem = url_problem('url', params['url'])
        if problem:
            problems.append(problem)
        self._read_durations(problems)
        problems.extend(self._window_problems())
        problems.extend(threshold_problems(params['threshold'], params['latency_p95_max']))
        problems.extend(_mode_problems(params))
        self.evaluate_at = self._read_time(problems)
        problems.extend(_name_problems(params))
        if problems:
            raise OpsError('invalid input, nothing was queried: ' + '; '.join(problems))
        self.queries = build_queries(
            job=params['job'], selector=params['selector'], metric=params['metric'],
            status_label=params['status_label'], error_status_regex=params['error_status_regex'],
            rate_window=self.rate_window, latency_metric=params['latency_metric'],
            latency=params['latency_p95_max'] is not None, query=params['query'])

    def _read_durations(self, problems):
        def duration(name, value):
            if value is None:
                return None
            try:
                return parse_duration(value, name, positive=True)
            except ValueError as err:
                problems.append(str(err))
                return None

        p = self.params
        self.rate_window = duration('rate_window', p['rate_window'])
        self.for_s = duration('for', p['for_duration'])
        self.step_s = duration('step', p['step'])
        self.watch_s = duration('watch_for', p['watch_for'])
        self.poll_s = duration('poll_interval', p['poll_interval'])

    def _window_problems(self):
        if not (self.for_s and self.step_s):
            return []
        if self.step_s > self.for_s:
            return ['step (%gs) must not be longer than for (%gs)' % (self.step_s, self.for_s)]
        if (self.for_s + 2 * self.step_s) / self.step_s > MAX_POINTS:
            return ['for / step is more than %d points; use a longer step' % MAX_POINTS]
        return []

    def _read_time(self, problems):
        if self.params['evaluate_at'] is None:
            return None
        try:
            return parse_time(self.params['evaluate_at'])
        except ValueError as err:
            problems.append(str(err))
            return None


def _mode_problems(params):
    """What goes with which mode beyond the SPEC's required_if (mode=watch needs watch_for)."""
    if params['mode'] == 'watch':
        if params['evaluate_at'] is not None:
            return ['evaluate_at cannot be used with mode=watch (watch follows the clock)']
        return []
    if params['watch_for'] is not None or params['poll_interval'] is not None:
        return ['watch_for and poll_interval need mode=watch']
    return []


def _name_problems(params):
    """The service to judge and the PromQL names. An empty job counts as none (the SPEC's
    required_one_of would take `job: ""`, an unset inventory variable, as given and judge every job)."""
    problems = []
    if not params['query'] and not params['job'] and not params['selector']:
        problems.append('set job and/or selector (or a full query) to say which service to judge')
    for name in ('metric', 'latency_metric'):
        if not _METRIC_RE.match(params[name] or ''):
            problems.append('%s must be a Prometheus metric name, got %r' % (name, params[name]))
    if not _LABEL_RE.match(params['status_label'] or ''):
        problems.append('status_label must be a Prometheus label name, got %r' % (params['status_label'],))
    try:
        re.compile(params['error_status_regex'] or '')
    except re.error as err:
        problems.append('error_status_regex is not a valid regular expression: %s' % err)
    return problems


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


def gate(task, transport=None, sleep=time.sleep, clock=time.time, monotonic=time.monotonic):
    """The module's work: run the gate of task.params and return the module result."""
    settings = Settings(task.params, hide=task.hide)
    p = settings.params
    if transport is None:
        # retries are pauses of retry_delay, as documented; a Retry-After may stretch them.
        transport = Transport(validate_certs=p['validate_certs'], ca_path=p['ca_path'], use_proxy=p['use_proxy'],
                              timeout=p['timeout'], headers=settings.headers, max_body_bytes=MAX_ANSWER_BYTES,
                              tries=p['retries'] + 1, backoff=Backoff(p['retry_delay'], p['retry_delay'], 1.0),
                              user_agent=USER_AGENT, hide=task.hide, sleep=sleep)
    client = Client(p['url'], transport)
    if p['mode'] == 'watch':
        evaluations, first_breach, reason = watch(client, settings, task, sleep, clock, monotonic)
    else:
        now = settings.evaluate_at if settings.evaluate_at is not None else clock()
        evaluations = [evaluate(client, settings, now)]
        first_breach, reason = evaluations[0]['first_breach_at'], evaluations[0]['reason']
    result = _result(settings, client, evaluations, first_breach, reason)
    if result['decision'] == UNHEALTHY and p['fail_on_unhealthy']:
        raise OpsError(result.pop('msg'), **result)
    return result


def watch(client, settings, task, sleep, clock, monotonic):
    """Evaluate every poll_interval (default step) for watch_for, stopping at the first unhealthy
    decision. Returns (evaluations, the first breach seen, the reason of the watch)."""
    every = settings.poll_s or settings.step_s
    evaluations = []
    began = monotonic()

    def evaluation(_deadline):
        evaluations.append(evaluate(client, settings, clock()))
        return evaluations[-1] if evaluations[-1]['decision'] == UNHEALTHY else None

    def on_cadence(pause):
        # On a fixed cadence (began + k * every): the time an evaluation takes does not push the
        # next one later and later. pause is already cut to what the watch has left.
        sleep(max(0.0, min(pause, len(evaluations) * every - (monotonic() - began))))

    def progress(waited):
        task.progress('watched %s of %s, last decision %s'
                      % (_minutes(waited), _minutes(settings.watch_s), evaluations[-1]['decision']))

    try:
        poll(evaluation, settings.watch_s, Backoff(every, every, 1.0), progress=progress, progress_every=60.0,
             sleep=on_cadence, clock=monotonic)
    except PollTimeout:
        pass
    breaches = [e['first_breach_at'] for e in evaluations if e['first_breach_at'] is not None]
    return evaluations, breaches[0] if breaches else None, _watch_reason(evaluations, settings, monotonic() - began)


def _watch_reason(evaluations, settings, watched):
    final = evaluations[-1]
    if final['decision'] == UNHEALTHY:
        return 'watch stopped after %s (%d evaluations): %s' % (_minutes(watched), len(evaluations), final['reason'])
    if final['decision'] == HEALTHY:
        inconclusive = sum(1 for e in evaluations if e['decision'] == INCONCLUSIVE)
        return 'no sustained breach in %d evaluations over %s%s; last: %s' % (
            len(evaluations), _minutes(settings.watch_s),
            ' (%d inconclusive on the way)' % inconclusive if inconclusive else '', final['reason'])
    return 'watched %s (%d evaluations), the last was inconclusive: %s' % (
        _minutes(settings.watch_s), len(evaluations), final['reason'])


def _result(settings, client, evaluations, first_breach, reason):
    """The module result of the last evaluation."""
    final = evaluations[-1]
    rules = final['rules']
    result = dict(
        changed=False,
        decision=final['decision'],
        healthy=final['decision'] == HEALTHY,
        reason=reason[:1].upper() + reason[1:] + ('' if reason.endswith('.') else '.'),
        query=dict(settings.queries),
        samples=rules['error_ratio'].get('samples', []),
        latency_samples=rules['latency_p95'].get('samples', []) if 'latency_p95' in rules else None,
        breached_since=iso(final['breached_since']),
        first_breach_at=iso(first_breach),
        decided_at=iso(final['at']),
        evaluations=len(evaluations),
        decisions=[e['decision'] for e in evaluations],
        rules=dict((k, _rule_view(v)) for k, v in rules.items()),
        url=client.display_url,
        threshold=settings.params['threshold'],
        for_seconds=settings.for_s,
        step_seconds=settings.step_s,
        mode=settings.params['mode'],
        attempts=client.attempts,
    )
    for view in result['rules'].values():
        view.pop('samples', None)
    result['msg'] = result['reason']
    return result
