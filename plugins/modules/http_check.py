#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: http_check
short_description: Run named HTTP checks (N requests, concurrency) and assert status, body, JSON and latency
version_added: 0.1.0
description:
  - Runs each check in O(checks) in order. A check sends O(checks[].count) requests,
    O(checks[].concurrency) at a time, and asserts on every response its status (O(checks[].status)),
    a text in its body (O(checks[].body_contains)) and fields of its JSON body (O(checks[].json_fields)).
    A check passes when every request passed and, when O(checks[].max_latency_ms) is set, the p95
    latency is not above it.
  - Latencies are measured from sending the request to reading the whole body, for every request
    that got a response (of any status); RV(checks.latency_ms) gives min, p50, p95, max (nearest-rank
    percentiles) and mean.
  - A non-2xx response is a response like any other (its status and body are assessed). A request
    that gets no response (connection refused, timeout, TLS or DNS failure) is a failed request
    with a plain error message.
  - With O(retries), failing checks are run again (all their requests) until they pass or the
    retries are used up, O(retry_delay) seconds apart; use this to let a just-rolled-back service settle.
  - Invalid input (a check without a URL, duplicate names, O(count) or O(concurrency) below 1, status
    codes out of range, ...) fails the task before any request is sent.
  - Credentials never appear in the result or in messages, even at high verbosity; the values of
    O(secret_headers), O(checks[].secret_headers), O(checks[].secret_query), of query-string parameters
    whose name looks secret (C(token), C(key), C(secret), C(password), C(auth), C(signature), ...),
    of URL passwords, and of plain headers with a credential-like name (C(Authorization), C(Cookie),
    C(X-Api-Key), ...) are hidden, and those query values are shown as C(********) in RV(checks.url).
  - Never reports changed. Uses only the Python standard library.
author:
  - hotelbot.ops maintainers (@hotelbot)
attributes:
  check_mode:
    support: full
    description:
      - GET, HEAD and OPTIONS requests are read only and are sent in check mode. Checks with another
        method are skipped (RV(checks.skipped), with RV(checks.skip_reason)) unless they set
        O(checks[].run_in_check_mode).
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
options:
  base_url:
    description:
      - URL that O(checks[].path) is appended to, for example V(https://bot.example.com).
      - A path in it is kept (V(https://host/prefix) + V(/api/health) = V(https://host/prefix/api/health)).
    type: str
  checks:
    description: The checks to run, in order.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name of the check; the key of the check in RV(checks). Must be unique.
        type: str
        required: true
      url:
        description:
          - Absolute http:// or https:// URL to request.
          - Mutually exclusive with O(checks[].path); one of them (or O(base_url)) is needed.
        type: str
      path:
        description:
          - Path (with an optional query string) appended to O(base_url).
          - Mutually exclusive with O(checks[].url).
        type: str
      method:
        description: HTTP method.
        type: str
        default: GET
      headers:
        description:
          - Request headers of this check, merged over O(headers) and O(secret_headers) (names compared case-insensitively).
          - Not secret; put credentials in O(checks[].secret_headers).
        type: dict
      secret_headers:
        description:
          - Headers with credentials for this check only (for example C(Authorization) with V(Bearer ...)),
            merged over every other header. Their values are never shown.
        type: dict
      secret_query:
        description:
          - Query-string parameters with credentials, appended to the URL (for example C(token)).
          - "Their values are never shown and are masked as C(********) in RV(checks.url)."
        type: dict
      json:
        description:
          - Data sent as the JSON request body; sets C(Content-Type) to V(application/json) unless a header sets it.
          - Mutually exclusive with O(checks[].body).
        type: raw
      body:
        description:
          - Text sent as the request body (UTF-8). Set C(Content-Type) in O(checks[].headers).
          - Mutually exclusive with O(checks[].json).
        type: str
      status:
        description: Accepted response status codes (100 to 599).
        type: list
        elements: int
        default: [200]
      json_fields:
        description:
          - "Assertions on the JSON response body, each C(path: expected value)."
          - The path is dotted, through object keys and array indexes (a negative index counts from the end),
            for example V(status), V(faqs.0.id), V(data.items.-1.name).
          - A path may end in a modifier. V(path|length) compares the length of an array, object or string,
            V(path|type) its JSON type (V(object), V(array), V(string), V(number), V(boolean), V(null)),
            and V(path|exists) whether the path exists (V(true) or V(false)); for example V(faqs.0|exists) is
            "at least one FAQ".
          - Values are compared for equality; a boolean only equals a boolean, and a string equals a
            number with the same text (V('2') matches V(2)).
          - A response that is not JSON fails every field.
        type: dict
      body_contains:
        description: Text the response body must contain.
        type: str
      count:
        description: Number of requests. Defaults to O(count).
        type: int
      concurrency:
        description: Number of requests in flight at a time. Defaults to O(concurrency).
        type: int
      timeout:
        description: Seconds to wait for the connection and for each read. Defaults to O(timeout).
        type: float
      max_latency_ms:
        description: Fail the check when the p95 latency (ms) is above this. Defaults to O(max_latency_ms).
        type: float
      run_in_check_mode:
        description:
          - Send this check's requests in check mode even though its method is not GET, HEAD or OPTIONS.
          - Only for requests known to change nothing.
        type: bool
        default: false
  count:
    description: Default number of requests per check, 1 to 100000.
    type: int
    default: 1
  concurrency:
    description: Default number of requests in flight at a time per check, 1 to 256.
    type: int
    default: 1
  timeout:
    description: Default seconds to wait for the connection and for each read of a request, at most 3600.
    type: float
    default: 10
  max_latency_ms:
    description: Default p95 latency limit (ms) of every check. No limit when not set.
    type: float
  validate_certs:
    description: Verify TLS certificates and host names.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA certificates to trust instead of the system ones.
      - A path that does not exist, or a file that is not PEM certificates, fails the task before any request.
    type: path
  headers:
    description:
      - Headers sent with every request. Not secret; put credentials in O(secret_headers).
    type: dict
    default: {}
  secret_headers:
    description:
      - Headers with credentials sent with every request (merged over O(headers)). Their values are never shown.
    type: dict
    default: {}
  retries:
    description: How many more times to run a failing check, 0 to 100.
    type: int
    default: 0
  retry_delay:
    description: Seconds to wait before running the failing checks again, at most 3600.
    type: float
    default: 1
  fail_on_error:
    description:
      - Fail the task when any check fails; RV(msg) names each failing check and its first error.
      - When V(false), read RV(passed).
    type: bool
    default: true
  follow_redirects:
    description: Follow redirects. When V(false), a 3xx response is assessed as it is.
    type: bool
    default: true
  use_proxy:
    description: Use the proxy of the C(http_proxy)/C(https_proxy) environment variables (and C(no_proxy)).
    type: bool
    default: true
  max_body_bytes:
    description:
      - How much of each response body is kept (1 to 67108864); the rest is read, counted in RV(checks.body_bytes)
        and discarded, so memory stays near O(concurrency) x O(max_body_bytes) whatever the server sends.
      - O(checks[].body_contains) looks at the first O(max_body_bytes) bytes only. A body longer than this
        fails every O(checks[].json_fields) assertion (the error says the response is longer than
        O(max_body_bytes) and was not checked as JSON); raise the limit for a larger JSON answer.
    type: int
    default: 1048576
notes:
  - The latency includes connecting (a new connection per request) and reading the body.
  - Paths in O(checks[].json_fields) cannot address keys that contain a dot or a C(|).
seealso:
  - module: ansible.builtin.uri
'''

EXAMPLES = r'''
- name: Post-rollback verification (health x10, FAQ, conversation)
  hotelbot.ops.http_check:
    base_url: https://bot.example.com
    retries: 5
    retry_delay: 5
    checks:
      - name: health
        path: /api/health
        count: 10
        max_latency_ms: 1000
        json_fields:
          status: healthy
          version: 1.4.2
      - name: faqs
        path: /api/faqs?language=en&limit=5
        json_fields:
          faqs.0|exists: true
      - name: conversation
        path: /api/conversations
        method: POST
        status: [200, 201]
        secret_headers:
          Authorization: "Bearer {{ api_token }}"
        json:
          phoneNumber: "1234567890"
          hotelInfo: {id: hotel-123, name: Test Hotel, location: Test City}
  register: verification

- name: WhatsApp webhook test message, token in the query string (masked in the result)
  hotelbot.ops.http_check:
    checks:
      - name: webhook
        url: https://bot.example.com/api/whatsapp/webhook
        method: POST
        secret_query:
          token: "{{ waha_webhook_token }}"
        json:
          from: "1234567890"
          to: "0987654321"
          body: Test message
          timestamp: "{{ now(utc=true, fmt='%Y-%m-%dT%H:%M:%SZ') }}"
          messageId: test-123
          type: text

- name: Load probe that reports instead of failing
  hotelbot.ops.http_check:
    base_url: http://127.0.0.1:8080
    count: 200
    concurrency: 20
    fail_on_error: false
    checks:
      - name: health
        path: /api/health
        body_contains: healthy
  register: probe

- name: Show the probe
  ansible.builtin.debug:
    msg: "{{ probe.summary }}"
'''

RETURN = r'''
passed:
  description: Whether every check passed (skipped checks count as passed).
  returned: always
  type: bool
  sample: true
checks:
  description: The result of each check, by name, in the order of O(checks).
  returned: always
  type: dict
  contains:
    passed:
      description: Every request passed and the p95 latency is within the limit (true for a skipped check).
      type: bool
      sample: true
    skipped:
      description: The check was not run (a non-read-only method in check mode).
      type: bool
      sample: false
    skip_reason:
      description: Why the check was skipped, or null.
      type: str
      sample: POST is not sent in check mode; set run_in_check_mode to send it
    url:
      description: The URL requested, with secret query values and URL passwords masked.
      type: str
      sample: https://bot.example.com/api/whatsapp/webhook?token=********
    method:
      description: The HTTP method.
      type: str
      sample: GET
    count:
      description: Number of requests of the (last) attempt.
      type: int
      sample: 10
    ok:
      description: Requests that passed every assertion.
      type: int
      sample: 10
    failed:
      description: Requests that failed an assertion or got no response.
      type: int
      sample: 0
    status_counts:
      description: Number of responses per status code (requests without a response are not counted).
      type: dict
      sample: {"200": 10}
    body_bytes:
      description: Bytes of response bodies received by the requests of the (last) attempt, counted in full.
      type: int
      sample: 420
    body_truncated:
      description: Responses of the (last) attempt whose body was longer than O(max_body_bytes) (only its beginning was kept).
      type: int
      sample: 0
    latency_ms:
      description:
        - Latency in milliseconds of the requests that got a response, C(min), C(p50), C(p95), C(max)
          (nearest-rank percentiles) and C(mean); all null when no request got a response.
      type: dict
      sample: {min: 3.1, p50: 4.2, p95: 9.8, max: 9.8, mean: 4.9}
    errors:
      description: Up to 5 distinct error messages of the last attempt.
      type: list
      elements: str
      sample: ["expected status [200], got 503", "json field status: expected 'healthy', got 'unhealthy'"]
    attempts:
      description: Number of times the check was run (0 when skipped).
      type: int
      sample: 1
    response:
      description:
        - The last response of the last attempt, C(status), C(body) (first 1024 characters), C(json)
          (the decoded body, or null when it is not JSON, above 64 KiB or longer than O(max_body_bytes)),
          C(body_bytes) (its full length) and C(truncated) (longer than O(max_body_bytes)); null when none was
          received.
      type: dict
      sample: {status: 200, body: '{"status": "healthy", "version": "1.4.2"}', json: {status: healthy, version: 1.4.2},
               body_bytes: 42, truncated: false}
    elapsed_s:
      description: Seconds the last attempt of the check took.
      type: float
      sample: 0.042
  sample:
    health:
      passed: true
      skipped: false
      skip_reason: null
      url: https://bot.example.com/api/health
      method: GET
      count: 10
      ok: 10
      failed: 0
      status_counts: {"200": 10}
      latency_ms: {min: 3.1, p50: 4.2, p95: 9.8, max: 9.8, mean: 4.9}
      errors: []
      attempts: 1
      body_bytes: 210
      body_truncated: 0
      response: {status: 200, body: '{"status": "healthy"}', json: {status: healthy}, body_bytes: 21, truncated: false}
      elapsed_s: 0.052
summary:
  description: One line per check.
  returned: always
  type: list
  elements: str
  sample:
    - "health: passed, 10/10 ok, p95 9.8 ms"
    - "faqs: FAILED, 0/1 ok, p95 2.1 ms, 3 attempts: expected status [200], got 503"
    - "webhook: skipped (POST is not sent in check mode; set run_in_check_mode to send it)"
failed_checks:
  description: Names of the checks that failed.
  returned: always
  type: list
  elements: str
  sample: [faqs]
skipped_checks:
  description: Names of the checks skipped in check mode.
  returned: always
  type: list
  elements: str
  sample: [webhook]
latency_ms:
  description: Per check, its latency figures (as C(checks.<name>.latency_ms)).
  returned: always
  type: dict
  sample: {health: {min: 2.1, p50: 2.4, p95: 3.0, max: 3.0}}
version:
  description:
    - The C(version) field of the first check whose JSON response has one (what the service says it runs), else null.
  returned: always
  type: raw
  sample: 1.2.0
msg:
  description: What happened; on failure, each failing check and its first error.
  returned: always
  type: str
  sample: "1 of 3 checks failed: faqs (expected status [200], got 503)"
elapsed_s:
  description: Seconds the module took.
  returned: always
  type: float
  sample: 0.31
'''

from ansible_collections.hotelbot.ops.plugins.module_utils.common import run
from ansible_collections.hotelbot.ops.plugins.module_utils.http import check_http

# Upper bounds: a typo (count: 100000000000, timeout: 36000000) would otherwise hang the play for days.
COUNT = dict(min=1, max=100000)
CONCURRENCY = dict(min=1, max=256)
TIMEOUT = dict(above=0, max=3600)
LATENCY = dict(above=0)

CHECK_OPTIONS = dict(
    name=dict(type='str', required=True),
    url=dict(type='str'),
    path=dict(type='str'),
    method=dict(type='str', default='GET'),
    headers=dict(type='dict'),
    secret_headers=dict(type='dict', no_log=True),
    secret_query=dict(type='dict', no_log=True),
    json=dict(type='raw'),
    body=dict(type='str'),
    status=dict(type='list', elements='int', default=[200]),
    json_fields=dict(type='dict'),
    body_contains=dict(type='str'),
    count=dict(type='int', context=COUNT),
    concurrency=dict(type='int', context=CONCURRENCY),
    timeout=dict(type='float', context=TIMEOUT),
    max_latency_ms=dict(type='float', context=LATENCY),
    run_in_check_mode=dict(type='bool', default=False),
)

ARGUMENT_SPEC = dict(
    base_url=dict(type='str'),
    checks=dict(type='list', elements='dict', required=True, options=CHECK_OPTIONS,
                mutually_exclusive=[('url', 'path'), ('json', 'body')]),
    count=dict(type='int', default=1, context=COUNT),
    concurrency=dict(type='int', default=1, context=CONCURRENCY),
    timeout=dict(type='float', default=10, context=TIMEOUT),
    max_latency_ms=dict(type='float', context=LATENCY),
    validate_certs=dict(type='bool', default=True),
    ca_path=dict(type='path'),
    headers=dict(type='dict', default={}),
    secret_headers=dict(type='dict', default={}, no_log=True),
    retries=dict(type='int', default=0, context=dict(min=0, max=100)),
    retry_delay=dict(type='float', default=1, context=dict(min=0, max=3600)),
    fail_on_error=dict(type='bool', default=True),
    follow_redirects=dict(type='bool', default=True),
    use_proxy=dict(type='bool', default=True),
    max_body_bytes=dict(type='int', default=1048576, context=dict(min=1, max=64 * 1024 * 1024)),
)

SPEC = dict(argument_spec=ARGUMENT_SPEC)


def main():
    run(SPEC, check_http)


if __name__ == '__main__':
    main()
