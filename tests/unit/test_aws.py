"""The shared AWS client: botocore's retries against a real local HTTP endpoint."""
import http.server
import json
import threading

import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import aws
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError
from ansible_collections.hotelbot.ops.plugins.module_utils.ecs import EcsService

SERVICE = {'serviceName': 'svc', 'serviceArn': 'arn:aws:ecs:us-east-1:1:service/c/svc', 'status': 'ACTIVE',
           'taskDefinition': 'arn:aws:ecs:us-east-1:1:task-definition/f:1', 'deployments': []}


class FlakyEcs(http.server.BaseHTTPRequestHandler):
    """Answers the first `failures` requests with `error`, then a DescribeServices result."""
    failures = 0
    error = (400, 'ThrottlingException', 'Rate exceeded')
    seen = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get('Content-Length', 0)))
        type(self).seen.append(self.headers.get('X-Amz-Target'))
        if len(type(self).seen) <= type(self).failures:
            status, code, message = type(self).error
            body = json.dumps({'__type': code, 'message': message}).encode()
        else:
            status, body = 200, json.dumps({'services': [SERVICE], 'failures': []}).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/x-amz-json-1.1')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class FakeModule:
    def __init__(self, **params):
        self.params = dict(region='us-east-1', endpoint_url=None, profile=None, access_key='AKIDEXAMPLE',
                           secret_key='not-a-secret', session_token=None, max_attempts=5,
                           connect_timeout=2.0, read_timeout=5.0)
        self.params.update(params)

    def fail_json(self, **kwargs):
        raise AssertionError(kwargs)


@pytest.fixture
def endpoint(monkeypatch):
    monkeypatch.delenv('HTTP_PROXY', raising=False)
    monkeypatch.delenv('http_proxy', raising=False)
    FlakyEcs.seen = []
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), FlakyEcs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield 'http://127.0.0.1:%d' % server.server_address[1]
    server.shutdown()


@pytest.mark.parametrize('error', [
    (400, 'ThrottlingException', 'Rate exceeded'),
    (503, 'ServiceUnavailableException', 'try later'),
    (500, 'ServerException', 'internal'),
])
def test_throttling_and_5xx_are_retried_until_success(endpoint, error):
    FlakyEcs.failures, FlakyEcs.error = 2, error
    client = aws.client(FakeModule(endpoint_url=endpoint), 'ecs')
    svc = EcsService(client, 'c', 'svc').describe()
    assert svc['serviceName'] == 'svc'
    assert len(FlakyEcs.seen) == 3


def test_retries_exhausted_is_a_plain_failure_not_success(endpoint):
    FlakyEcs.failures, FlakyEcs.error = 10, (400, 'ThrottlingException', 'Rate exceeded')
    client = aws.client(FakeModule(endpoint_url=endpoint, max_attempts=2), 'ecs')
    with pytest.raises(OpsError, match='DescribeServices for svc failed: ThrottlingException: Rate exceeded'):
        EcsService(client, 'c', 'svc').describe()
    assert len(FlakyEcs.seen) == 2


def test_client_errors_are_not_retried(endpoint):
    FlakyEcs.failures, FlakyEcs.error = 10, (400, 'AccessDeniedException', 'not allowed')
    client = aws.client(FakeModule(endpoint_url=endpoint), 'ecs')
    with pytest.raises(OpsError, match='AccessDeniedException: not allowed'):
        EcsService(client, 'c', 'svc').describe()
    assert len(FlakyEcs.seen) == 1


def test_unreachable_endpoint_and_missing_region_are_plain_messages():
    client = aws.client(FakeModule(endpoint_url='http://127.0.0.1:9', max_attempts=1), 'ecs')
    with pytest.raises(OpsError, match='AWS endpoint unreachable'):
        EcsService(client, 'c', 'svc').describe()
    with pytest.raises(OpsError, match='no AWS region'):
        aws.client(FakeModule(region=None, profile=None), 'ecs')
