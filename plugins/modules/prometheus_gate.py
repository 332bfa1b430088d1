#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: prometheus_gate
short_description: Decide from Prometheus whether a service is healthy - sustained error ratio and p95 latency
version_added: 0.1.0
description:
  - Asks a Prometheus server (HTTP API C(/api/v1/query_range)) for the error ratio of a service, the rate
    of 5xx answers divided by the rate of all answers over O(rate_window), sampled every O(step), and applies a
    sustained rule, the runbook's "error rate above 5% for more than 10 minutes".
  - The service is V(unhealthy) only when the ratio stayed above O(threshold) (strictly; exactly the
    threshold is not above) at every sample for at least O(for_duration), without a gap in the data.
  - Optionally applies the same sustained rule to the p95 latency computed from a histogram
    (O(latency_p95_max)).
  - The answer is RV(decision) - V(healthy), V(unhealthy) or V(inconclusive) - with a one-sentence
    RV(reason). V(inconclusive) (no data, a gap in the data, a query that failed) is never V(healthy);
    O(on_no_data) and O(on_query_error) choose what those cases mean.
  - The rule at evaluation time T, with C(max_gap) = 1.5 x O(step). Samples that are NaN (no requests in
    the rate window) count as missing. The breach run is the run of samples ending at the newest sample
    in which every value is above O(threshold) and no two consecutive samples are more than C(max_gap)
    apart; it counts only if the newest sample is at most C(max_gap) before T. V(unhealthy) when the
    breach run began at or before T - O(for_duration). Otherwise, no sample in [T - O(for_duration), T]
    is "no data" (O(on_no_data)); two consecutive points of (T - O(for_duration), the samples in the
    window, T) more than C(max_gap) apart is a gap, V(inconclusive); else V(healthy).
  - O(mode=watch) re-evaluates every O(poll_interval) for O(watch_for) and returns as soon as a decision is
    V(unhealthy); V(healthy) only after the whole watch with no breach and a healthy last evaluation.
  - Read only; C(changed) is always false and check mode does exactly the same.
author:
  - hotelbot.ops maintainers (@hotelbot)
attributes:
  check_mode:
    support: full
    description: Only reads from Prometheus; check mode runs the same queries.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
options:
  url:
    description:
      - Base URL of the Prometheus server, for example V(http://prometheus:9090) (a path prefix is kept).
    type: str
    required: true
  job:
    description: Value of the C(job) label of the service's series, for example V(hotel-voice-bot).
    type: str
  selector:
    description:
      - Extra label matchers added to every selector, written as in PromQL without braces, for example
        V(service="hotel-voice-bot",env="prod").
      - O(job) and/or O(selector) is required unless O(query) is set.
    type: str
  metric:
    description: The request counter (with a status label).
    type: str
    default: http_requests_total
  status_label:
    description: The label of O(metric) holding the HTTP status code.
    type: str
    default: status
  error_status_regex:
    description: Regular expression (PromQL C(=~), anchored) for the statuses that are errors.
    type: str
    default: 5..
  rate_window:
    description: The range of C(rate()), a Prometheus duration (V(1m), V(5m)) or seconds.
    type: raw
    default: 1m
  threshold:
    description:
      - The error ratio the ratio must stay above to breach, a share strictly between 0 and 1 (V(0.05) is 5%).
      - A value outside (0, 1) is refused before any query, so V(5) written for "5%" cannot judge a 50% error
        ratio healthy. O(latency_p95_max) is in seconds and checked on its own.
    type: float
    default: 0.05
  for_duration:
    description:
      - How long the breach must last, a Prometheus duration (V(10m)) or seconds.
    type: raw
    default: 10m
    aliases: [for]
  step:
    description: Resolution of the range query (the distance between judged samples); a duration or seconds.
    type: raw
    default: 30s
  latency_metric:
    description: Name of the latency histogram (without C(_bucket)), used when O(latency_p95_max) is set.
    type: str
    default: http_request_duration_seconds
  latency_p95_max:
    description:
      - Seconds. When set, the service is also V(unhealthy) when the p95 latency stayed above this for
        O(for_duration). Disabled by default.
      - The p95 is C(histogram_quantile) of 0.95 over the C(rate) of the O(latency_metric) C(_bucket) series
        summed by C(le).
    type: float
  query:
    description:
      - A full PromQL expression for the error ratio, replacing the one built from O(metric),
        O(job), O(selector) and O(error_status_regex). It must return an instant vector; when it returns
        several series, each is judged and the worst decides.
    type: str
  timeout:
    description: Seconds to wait for each HTTP request.
    type: float
    default: 10
  retries:
    description:
      - Retries of a query after a connection error, a timeout or a 5xx/429 answer, 0 to 10. A 400 or 422
        answer (the query is invalid) fails the module at once.
    type: int
    default: 3
  retry_delay:
    description:
      - Seconds between retries. An answer with a C(Retry-After) header may lengthen the pause after it to what
        the server asks, at most 60 seconds.
    type: float
    default: 2
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA certificates to verify the server with.
      - A path that does not exist, or a file that is not PEM certificates, fails the task before any query.
    type: path
  use_proxy:
    description: Use the proxy from the C(https_proxy)/C(http_proxy) environment variables.
    type: bool
    default: true
  bearer_token:
    description: Bearer token sent in the C(Authorization) header. Never shown.
    type: str
  url_username:
    description: User name for HTTP basic authentication.
    type: str
  url_password:
    description: Password for HTTP basic authentication. Never shown.
    type: str
  mode:
    description:
      - V(evaluate) decides once, at O(evaluate_at) (default now).
      - V(watch) decides every O(poll_interval) for O(watch_for), returning as soon as a decision is
        V(unhealthy).
    type: str
    choices: [evaluate, watch]
    default: evaluate
  watch_for:
    description: How long to watch with O(mode=watch); a duration or seconds. Required for O(mode=watch).
    type: raw
  poll_interval:
    description: Time between evaluations with O(mode=watch); a duration or seconds. Defaults to O(step).
    type: raw
  on_no_data:
    description: The decision when the query returns no sample in the window (unknown service, no traffic).
    type: str
    choices: [inconclusive, healthy, unhealthy]
    default: inconclusive
  on_query_error:
    description:
      - The decision when Prometheus cannot be asked after the retries (down, unreachable, 5xx,
        authentication refused), or answers something that is not a usable API answer (C(data) not an object,
        C(result) not a list, a sample value that is not a number; RV(reason) names what was wrong). Never
        V(healthy). Sample values V(NaN) (counted as missing) and V(+Inf)/V(-Inf) are numbers.
    type: str
    choices: [inconclusive, unhealthy]
    default: inconclusive
  fail_on_unhealthy:
    description: Fail the task when the decision is V(unhealthy). With V(false), branch on RV(decision).
    type: bool
    default: false
  evaluate_at:
    description:
      - Evaluate at this time instead of now, a unix timestamp or an ISO 8601 time (UTC when it has no
        offset), for example to judge a past incident. Not with O(mode=watch).
    type: raw
notes:
  - A service that never answered an error has a ratio of 0, not no data (the error side of the ratio
    falls back to a constant 0 vector when there is no error series).
  - A service without requests in the rate window has no ratio (0/0); such samples are missing data.
  - Prometheus evaluates C(rate()) only with two raw samples in O(rate_window); keep it at least four
    scrape intervals.
seealso:
  - name: Prometheus HTTP API
    description: The range query API used.
    link: https://prometheus.io/docs/prometheus/latest/querying/api/#range-queries
'''

EXAMPLES = r'''
- name: Is the bot healthy now?
  hotelbot.ops.prometheus_gate:
    url: http://prometheus.internal:9090
    job: hotel-voice-bot
  register: gate

- name: Roll back when the error rate has been above 5% for 10 minutes
  ansible.builtin.include_tasks: rollback.yml
  when: gate.decision == 'unhealthy'

- name: Watch a release for 15 minutes, stop at the first sustained breach, also on p95 latency
  hotelbot.ops.prometheus_gate:
    url: https://prometheus.internal
    bearer_token: "{{ vault_prometheus_token }}"
    job: hotel-voice-bot
    selector: version="1.3.0"
    threshold: 0.05
    for: 10m
    step: 30s
    latency_p95_max: 0.8
    mode: watch
    watch_for: 15m
    fail_on_unhealthy: true

- name: Judge a past incident with a custom ratio, treating a Prometheus outage as unhealthy
  hotelbot.ops.prometheus_gate:
    url: http://prometheus.internal:9090
    query: sum(rate(nginx_http_requests_total{code=~"5.."}[2m])) / sum(rate(nginx_http_requests_total[2m]))
    evaluate_at: "2026-11-20T03:10:00Z"
    on_query_error: unhealthy
'''

RETURN = r'''
decision:
  description: V(healthy), V(unhealthy) or V(inconclusive).
  returned: always
  type: str
  sample: unhealthy
healthy:
  description: True only when RV(decision) is V(healthy).
  returned: always
  type: bool
reason:
  description: One sentence explaining the decision.
  returned: always
  type: str
  sample: Error ratio above 0.05 for 11m (since 2026-11-22T22:00:00Z), at least the 10m of the rule; last value 0.3.
msg:
  description: The same as RV(reason).
  returned: always
  type: str
query:
  description: The PromQL expressions run, C(error_ratio) and C(latency_p95) (null when not enabled).
  returned: always
  type: dict
  sample:
    error_ratio: >-
      (sum(rate(http_requests_total{job="hotel-voice-bot",status=~"5.."}[1m])) or vector(0))
      / sum(rate(http_requests_total{job="hotel-voice-bot"}[1m]))
    latency_p95: null
samples:
  description:
    - The error ratio samples judged, C([unix timestamp, value]) (value null for NaN), oldest first,
      at most the last 120. For several series, those of the series that decided.
  returned: always
  type: list
  elements: list
  sample: [[1795384800.0, 0.06], [1795384830.0, 0.061]]
latency_samples:
  description: The p95 latency samples judged, like RV(samples); null when O(latency_p95_max) is not set.
  returned: always
  type: list
  elements: list
breached_since:
  description:
    - When the current run above the threshold began (ISO 8601 UTC), also when it is still shorter than
      O(for_duration); null when the newest sample is not above the threshold (or is stale).
    - When the decision is V(unhealthy), the start of the breach that made it so.
  returned: always
  type: str
first_breach_at:
  description: The first sample above the threshold in the judged window(s) (ISO 8601 UTC), or null.
  returned: always
  type: str
decided_at:
  description: The evaluation time of the decision (ISO 8601 UTC).
  returned: always
  type: str
evaluations:
  description: How many evaluations ran (1 with O(mode=evaluate)).
  returned: always
  type: int
decisions:
  description: The decision of each evaluation, in order.
  returned: always
  type: list
  elements: str
rules:
  description:
    - Per rule (C(error_ratio), C(latency_p95)) the verdict of the last evaluation - C(decision), C(reason),
      C(breached), C(breached_since), C(first_breach_at), C(gap) (C([from, to]) or null), C(no_data),
      C(query_error), C(samples_in_window), C(last_value), C(max_value), C(labels).
  returned: always
  type: dict
url:
  description: The Prometheus URL, credentials masked.
  returned: always
  type: str
threshold:
  description: The error ratio threshold applied.
  returned: always
  type: float
for_seconds:
  description: O(for_duration) in seconds.
  returned: always
  type: float
step_seconds:
  description: O(step) in seconds.
  returned: always
  type: float
mode:
  description: O(mode).
  returned: always
  type: str
attempts:
  description: HTTP requests made, retries included.
  returned: always
  type: int
elapsed_s:
  description: Seconds the module took.
  returned: always
  type: float
'''

from ansible_collections.hotelbot.ops.plugins.module_utils.common import run
from ansible_collections.hotelbot.ops.plugins.module_utils.prometheus import HEALTHY, INCONCLUSIVE, UNHEALTHY, gate

ARGUMENT_SPEC = dict(
    url=dict(type='str', required=True),
    job=dict(type='str'),
    selector=dict(type='str'),
    metric=dict(type='str', default='http_requests_total'),
    status_label=dict(type='str', default='status'),
    error_status_regex=dict(type='str', default='5..'),
    rate_window=dict(type='raw', default='1m'),
    # threshold and latency_p95_max are checked by the work: their messages name the mistake (5 for 5%).
    threshold=dict(type='float', default=0.05),
    for_duration=dict(type='raw', default='10m', aliases=['for']),
    step=dict(type='raw', default='30s'),
    latency_metric=dict(type='str', default='http_request_duration_seconds'),
    latency_p95_max=dict(type='float'),
    query=dict(type='str'),
    timeout=dict(type='float', default=10.0, context=dict(above=0)),
    # Each retry waits retry_delay: more than 10 only delays the decision of a dead Prometheus.
    retries=dict(type='int', default=3, context=dict(min=0, max=10)),
    retry_delay=dict(type='float', default=2.0, context=dict(min=0)),
    validate_certs=dict(type='bool', default=True),
    ca_path=dict(type='path'),
    use_proxy=dict(type='bool', default=True),
    bearer_token=dict(type='str', no_log=True),
    url_username=dict(type='str'),
    url_password=dict(type='str', no_log=True),
    mode=dict(type='str', default='evaluate', choices=['evaluate', 'watch']),
    watch_for=dict(type='raw'),
    poll_interval=dict(type='raw'),
    on_no_data=dict(type='str', default=INCONCLUSIVE, choices=[INCONCLUSIVE, HEALTHY, UNHEALTHY]),
    on_query_error=dict(type='str', default=INCONCLUSIVE, choices=[INCONCLUSIVE, UNHEALTHY]),
    fail_on_unhealthy=dict(type='bool', default=False),
    evaluate_at=dict(type='raw'),
)

SPEC = dict(
    argument_spec=ARGUMENT_SPEC,
    mutually_exclusive=[('bearer_token', 'url_username'), ('bearer_token', 'url_password')],
    required_by=dict(url_password='url_username'),
    required_if=[('mode', 'watch', ('watch_for',))],
)


def main():
    run(SPEC, gate)


if __name__ == '__main__':
    main()
