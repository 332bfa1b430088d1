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


HTML = b'<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head><body><h1>Welcome</h1></body></html>'


class FlakyEcs(http.server.BaseHTTPRequestHandler):
    """Answers the first `failures` requests with `error`, then a DescribeServices result
    (or, when `raw` is set, always raw: (status, content type, body))."""
    failures = 0
    error = (400, 'ThrottlingException', 'Rate exceeded')
    raw = None
    seen = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get('Content-Length', 0)))
        type(self).seen.append(self.headers.get('X-Amz-Target'))
        ctype = 'application/x-amz-json-1.1'
        if type(self).raw is not None:
            status, ctype, body = tuple(type(self).raw)
        elif len(type(self).seen) <= type(self).failures:
            status, code, message = type(self).error
            body = json.dumps({'__type': code, 'message': message}).encode()
        else:
            status, body = 200, json.dumps({'services': [SERVICE], 'failures': []}).encode()
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def params(**overrides):
    """A module's AWS options as validated (what aws.client reads)."""
    return dict(dict(region='us-east-1', endpoint_url=None, profile=None, access_key='AKIDEXAMPLE',
                     secret_key='not-a-secret', session_token=None, max_attempts=5,
                     connect_timeout=2.0, read_timeout=5.0), **overrides)


@pytest.fixture
def endpoint(monkeypatch):
    monkeypatch.delenv('HTTP_PROXY', raising=False)
    monkeypatch.delenv('http_proxy', raising=False)
    FlakyEcs.seen, FlakyEcs.raw = [], None
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
    client = aws.client(params(endpoint_url=endpoint), 'ecs')
    svc = EcsService(client, 'c', 'svc').describe()
    assert svc['serviceName'] == 'svc'
    assert len(FlakyEcs.seen) == 3


def test_retries_exhausted_is_a_plain_failure_not_success(endpoint):
    FlakyEcs.failures, FlakyEcs.error = 10, (400, 'ThrottlingException', 'Rate exceeded')
    client = aws.client(params(endpoint_url=endpoint, max_attempts=2), 'ecs')
    with pytest.raises(OpsError, match='DescribeServices for svc failed: ThrottlingException: Rate exceeded'):
        EcsService(client, 'c', 'svc').describe()
    assert len(FlakyEcs.seen) == 2


def test_client_errors_are_not_retried(endpoint):
    FlakyEcs.failures, FlakyEcs.error = 10, (400, 'AccessDeniedException', 'not allowed')
    client = aws.client(params(endpoint_url=endpoint), 'ecs')
    with pytest.raises(OpsError, match='AccessDeniedException: not allowed'):
        EcsService(client, 'c', 'svc').describe()
    assert len(FlakyEcs.seen) == 1


def test_unreachable_endpoint_and_missing_region_are_plain_messages():
    client = aws.client(params(endpoint_url='http://127.0.0.1:9', max_attempts=1), 'ecs')
    with pytest.raises(OpsError, match='AWS endpoint unreachable'):
        EcsService(client, 'c', 'svc').describe()
    with pytest.raises(OpsError, match='no AWS region'):
        aws.client(params(region=None, profile=None), 'ecs')


@pytest.mark.parametrize('raw', [
    (200, 'text/html', HTML),
    (404, 'text/html', HTML),
    (200, 'application/x-amz-json-1.1', b''),
    (200, 'application/x-amz-json-1.1', b'{"Message": "hello"'),
    (200, 'application/json', b'{"status": "ok"}'),
], ids=['html-200', 'html-404', 'empty-200', 'broken-json-200', 'other-json-200'])
def test_an_endpoint_that_is_not_aws_is_named_not_called_missing(endpoint, raw):
    FlakyEcs.raw = raw
    client = aws.client(params(endpoint_url=endpoint, max_attempts=1), 'ecs')
    with pytest.raises(OpsError) as err:
        EcsService(client, 'c', 'svc').describe()
    assert err.value.msg.startswith('the endpoint %s did not answer as AWS ECS does (DescribeServices for svc: ' % endpoint)
    assert err.value.msg.endswith('; check endpoint_url') and '\n' not in err.value.msg
    assert 'not found' not in err.value.msg and 'MISSING' not in err.value.msg and '<h1>' not in err.value.msg
    assert not err.value.transient and len(FlakyEcs.seen) == 1


def test_a_5xx_html_page_is_transient_and_short(endpoint):
    FlakyEcs.raw = (502, 'text/html', HTML * 20)
    client = aws.client(params(endpoint_url=endpoint, max_attempts=1), 'ecs')
    with pytest.raises(aws.AwsError) as err:
        EcsService(client, 'c', 'svc').describe()
    assert err.value.transient and len(err.value.msg) < 300


@pytest.mark.parametrize('url, message', [
    ('http://127.0.0.1:99999', 'endpoint_url is not a valid URL: port out of range'),
    ('http://127.0.0.1:http', 'endpoint_url is not a valid URL'),
    ('http://127.0.0.1:0', 'endpoint_url is not a valid URL: port 0'),
    ('ftp://127.0.0.1:21', "endpoint_url must be an http:// or https:// URL with a host, got 'ftp://127.0.0.1:21'"),
    ('127.0.0.1:8080', "endpoint_url must be an http:// or https:// URL with a host, got '127.0.0.1:8080'"),
    ('http://', "endpoint_url must be an http:// or https:// URL with a host, got 'http://'"),
    ('https://:443/', "endpoint_url must be an http:// or https:// URL with a host, got 'https://:443/'"),
    ('http://[::1', 'endpoint_url is not a valid URL'),
    ('http://admin:hunter2secret@127.0.0.1:99999', 'endpoint_url is not a valid URL'),
    # A password holding @: the userinfo ends at the last @, so no tail of it is shown.
    ('http://admin:hunter2@secret@127.0.0.1:99999', 'endpoint_url is not a valid URL'),
    ('ftp://admin:hunter2secret@127.0.0.1/', "endpoint_url must be an http:// or https:// URL with a host, got "
                                             "'ftp://admin:********@127.0.0.1/'"),
    ('http://admin:hunter2secret@[::1', 'endpoint_url is not a valid URL'),
])
def test_a_bad_endpoint_url_is_refused_before_any_call(endpoint, url, message):
    with pytest.raises(OpsError) as err:
        aws.client(params(endpoint_url=url), 'ecs')
    assert err.value.msg.startswith(message) and '\n' not in err.value.msg
    assert 'hunter2secret' not in err.value.msg and 'hunter2' not in err.value.msg
    assert FlakyEcs.seen == []


@pytest.mark.parametrize('error, transient', [
    ((500, 'ServerException', 'internal'), True),
    ((503, 'ServiceUnavailableException', 'later'), True),
    ((400, 'ThrottlingException', 'Rate exceeded'), True),
    ((429, 'TooManyRequests', 'slow down'), True),
    ((400, 'AccessDeniedException', 'no'), False),
    ((400, 'InvalidParameterException', 'bad'), False),
])
def test_what_is_transient_is_what_botocore_retries(endpoint, error, transient):
    FlakyEcs.failures, FlakyEcs.error = 10, error
    client = aws.client(params(endpoint_url=endpoint, max_attempts=2), 'ecs')
    with pytest.raises(aws.AwsError) as err:
        EcsService(client, 'c', 'svc').describe()
    assert err.value.transient is transient
    assert len(FlakyEcs.seen) == (2 if transient else 1)   # botocore's own retries agree


def test_an_unreachable_endpoint_is_transient():
    client = aws.client(params(endpoint_url='http://127.0.0.1:9', max_attempts=1), 'ecs')
    with pytest.raises(aws.AwsError) as err:
        EcsService(client, 'c', 'svc').describe()
    assert err.value.transient


# ---------------------------------------------------------------- sessions: one warm loader, credentials per client

def credentials_of(aws_client):
    return aws_client._request_signer._credentials.get_frozen_credentials()   # pylint: disable=protected-access


def test_preload_reads_the_service_data_once_for_every_later_client(monkeypatch):
    monkeypatch.setattr(aws, '_SHARED_SESSION', None)   # as in a new ansible-playbook
    aws.preload('ecs')
    loader = aws._shared_session().get_component('data_loader')   # pylint: disable=protected-access

    def no_disk(*args, **kwargs):
        raise AssertionError('read from disk after preload: %s' % (args,))
    monkeypatch.setattr(loader.file_loader, 'load_file', no_disk)
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', 'AKIDFROMENV')
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', 'env-secret')
    assert aws.client(params(), 'ecs').meta.service_model.service_name == 'ecs'
    assert aws.client(params(access_key=None, secret_key=None), 'ecs').meta.region_name == 'us-east-1'


def test_explicit_keys_stay_with_their_client():
    first = aws.client(params(access_key='AKIDFIRST', secret_key='first-secret'), 'ecs')
    second = aws.client(params(access_key='AKIDSECOND', secret_key='second-secret'), 'ecs')
    assert credentials_of(first).access_key == 'AKIDFIRST' and credentials_of(second).access_key == 'AKIDSECOND'


def test_the_credential_chain_is_asked_again_for_every_client(monkeypatch):
    # A session keeps what its chain resolved: were it the shared one, the second task
    # would sign with the first task's credentials.
    chain = params(access_key=None, secret_key=None)
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', 'AKIDHOSTONE')
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', 'host-one-secret')
    one = aws.client(chain, 'ecs')
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', 'AKIDHOSTTWO')
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', 'host-two-secret')
    two = aws.client(chain, 'ecs')
    assert credentials_of(one).access_key == 'AKIDHOSTONE' and credentials_of(two).access_key == 'AKIDHOSTTWO'
    assert aws._shared_session()._credentials is None   # pylint: disable=protected-access


def test_a_profile_gets_its_own_session(tmp_path, monkeypatch):
    (tmp_path / 'credentials').write_text('[blue]\naws_access_key_id = AKIDBLUE\naws_secret_access_key = blue-secret\n')
    monkeypatch.setenv('AWS_SHARED_CREDENTIALS_FILE', str(tmp_path / 'credentials'))
    monkeypatch.setenv('AWS_CONFIG_FILE', str(tmp_path / 'config'))
    blue = aws.client(params(profile='blue', access_key=None, secret_key=None), 'ecs')
    assert credentials_of(blue).access_key == 'AKIDBLUE'
    with pytest.raises(OpsError, match='AWS profile not found'):
        aws.client(params(profile='green', access_key=None, secret_key=None), 'ecs')
