"""The SPECs of http_check and prometheus_gate, checked without running a module: ansible-core's
ArgumentSpecValidator for types, choices and which options go together, common.spec_problems for
the ranges the SPECs declare in their context."""
import pytest

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.hotelbot.ops.plugins.module_utils.common import spec_problems
from ansible_collections.hotelbot.ops.plugins.modules import http_check, prometheus_gate

KEYS = ('argument_spec', 'mutually_exclusive', 'required_together', 'required_one_of', 'required_if', 'required_by')
HTTP_GOOD = dict(base_url='https://bot.example.com', checks=[dict(name='health', path='/api/health')])
GATE_GOOD = dict(url='http://prometheus:9090', job='hotel-voice-bot')


def validate(module, params):
    """(the validator's error messages, spec_problems of the validated params)."""
    spec = module.SPEC
    result = ArgumentSpecValidator(**dict((k, spec[k]) for k in KEYS if k in spec)).validate(params)
    return result.error_messages, spec_problems(spec, result.validated_parameters)


@pytest.mark.parametrize('module, params', [
    (http_check, HTTP_GOOD),
    (http_check, dict(HTTP_GOOD, count=100000, concurrency=256, timeout=3600, retries=100, retry_delay=0,
                      max_body_bytes=64 * 1024 * 1024, max_latency_ms=0.5)),
    (http_check, dict(checks=[dict(name='a', url='http://h/x', json={'a': 1}, count=1, concurrency=1, timeout=0.1),
                              dict(name='b', url='http://h/y', body='text', status=[200, 201])])),
    (prometheus_gate, GATE_GOOD),
    (prometheus_gate, dict(GATE_GOOD, retries=0, retry_delay=0, timeout=0.5, mode='watch', watch_for='15m')),
    (prometheus_gate, dict(GATE_GOOD, retries=10, url_username='ops', url_password='pw', **{'for': '5m'})),
    (prometheus_gate, dict(GATE_GOOD, bearer_token='tok', on_no_data='healthy', on_query_error='unhealthy')),
])
def test_good_arguments_validate(module, params):
    assert validate(module, params) == ([], [])


def test_http_check_defaults_come_from_the_spec():
    validated = ArgumentSpecValidator(**http_check.SPEC).validate(HTTP_GOOD).validated_parameters
    assert (validated['count'], validated['concurrency'], validated['timeout'], validated['retries']) == (1, 1, 10, 0)
    assert validated['max_body_bytes'] == 1048576 and validated['fail_on_error'] is True
    check = validated['checks'][0]
    assert check['method'] == 'GET' and check['status'] == [200] and check['run_in_check_mode'] is False
    assert check['count'] is None   # the top-level count applies


@pytest.mark.parametrize('params, option', [
    (dict(HTTP_GOOD, count='many'), 'count'),
    (dict(HTTP_GOOD, timeout='soon'), 'timeout'),
    (dict(HTTP_GOOD, validate_certs='perhaps'), 'validate_certs'),
    (dict(HTTP_GOOD, bogus=1), 'bogus'),
    (dict(base_url='https://h'), 'checks'),
    (dict(checks=[dict(path='/x')]), 'name'),
    (dict(checks=[dict(name='a', url='http://h/x', path='/x')]), 'url|path'),
    (dict(checks=[dict(name='a', url='http://h/x', json={}, body='x')]), 'json|body'),
    (dict(checks=[dict(name='a', url='http://h/x', status=['ok'])]), 'status'),
    (dict(checks=[dict(name='a', url='http://h/x', count='x')]), 'count'),
    (dict(GATE_GOOD, mode='sometimes'), 'mode'),
    (dict(GATE_GOOD, on_no_data='fine'), 'on_no_data'),
    (dict(GATE_GOOD, on_query_error='healthy'), 'on_query_error'),
    (dict(GATE_GOOD, retries='many'), 'retries'),
    (dict(GATE_GOOD, threshold='five percent'), 'threshold'),
    (dict(GATE_GOOD, bearer_token='tok', url_username='ops'), 'bearer_token|url_username'),
    (dict(GATE_GOOD, bearer_token='tok', url_password='pw'), 'bearer_token|url_password'),
    (dict(GATE_GOOD, url_password='pw'), 'url_username'),
    (dict(GATE_GOOD, mode='watch'), 'watch_for'),
    (dict(job='x'), 'url'),
])
def test_each_bad_argument_is_named_by_the_validator(params, option):
    module = prometheus_gate if 'url' in params or 'job' in params else http_check
    errors, _ranges = validate(module, params)
    assert errors and option in ' '.join(errors), errors


@pytest.mark.parametrize('module, params, message', [
    (http_check, dict(HTTP_GOOD, count=0), 'count must be between 1 and 100000, got 0'),
    (http_check, dict(HTTP_GOOD, count=100001), 'count must be between 1 and 100000, got 100001'),
    (http_check, dict(HTTP_GOOD, concurrency=257), 'concurrency must be between 1 and 256, got 257'),
    (http_check, dict(HTTP_GOOD, timeout=0), 'timeout must be in (0, 3600], got 0'),
    (http_check, dict(HTTP_GOOD, timeout=float('nan')), 'timeout must be in (0, 3600], got nan'),
    (http_check, dict(HTTP_GOOD, max_latency_ms=0), 'max_latency_ms must be greater than 0, got 0'),
    (http_check, dict(HTTP_GOOD, retries=101), 'retries must be between 0 and 100, got 101'),
    (http_check, dict(HTTP_GOOD, retry_delay=-1), 'retry_delay must be between 0 and 3600, got -1'),
    (http_check, dict(HTTP_GOOD, max_body_bytes=0), 'max_body_bytes must be between 1 and 67108864, got 0'),
    (http_check, dict(checks=[dict(name='a', url='http://h/x', concurrency=0)]),
     'checks[0].concurrency must be between 1 and 256, got 0'),
    (http_check, dict(checks=[dict(name='a', url='http://h/x'), dict(name='b', url='http://h/x', timeout=-1)]),
     'checks[1].timeout must be in (0, 3600], got -1'),
    (http_check, dict(checks=[dict(name='a', url='http://h/x', max_latency_ms=-5)]),
     'checks[0].max_latency_ms must be greater than 0, got -5'),
    (prometheus_gate, dict(GATE_GOOD, retries=11), 'retries must be between 0 and 10, got 11'),
    (prometheus_gate, dict(GATE_GOOD, retries=-1), 'retries must be between 0 and 10, got -1'),
    (prometheus_gate, dict(GATE_GOOD, timeout=0), 'timeout must be greater than 0, got 0'),
    (prometheus_gate, dict(GATE_GOOD, retry_delay=-0.5), 'retry_delay must be at least 0, got -0.5'),
    (prometheus_gate, dict(GATE_GOOD, url=''), 'url must not be empty'),
])
def test_each_out_of_range_argument_is_named_by_the_spec(module, params, message):
    errors, problems = validate(module, params)
    assert errors == [] and message in '; '.join(problems), problems
