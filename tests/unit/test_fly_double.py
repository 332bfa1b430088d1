"""The Fly double (sandbox/fly_double.py), driven over real HTTP with spec validation on: every
request and answer below is checked against Fly's OpenAPI spec (+ sandbox/fly_spec.py's overlay)
by openapi-core, and every GraphQL query against Fly's schema. Assertions read the double's
model (server.state), not printed text."""
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openapi_spec_validator
import pytest

from sandbox import fly_double, fly_spec
from tests.unit.fly_fixtures import double_fixtures

TOKEN = 'FlyV1 fm2_sandboxtoken'
APP = 'hotel-voice-bot'
STAGING = 'hotel-voice-bot-staging'
IMAGE = 'registry.fly.io/hotel-voice-bot:%s'
RELEASES_QUERY = '''query($appName: String!, $limit: Int!) {
  app(name: $appName) {
    releases: releasesUnprocessed(first: $limit) {
      nodes { id version description reason status imageRef stable user { email } createdAt }
    }
  }
}'''
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# Only the server: this module's own fixture below adds a client and the spec-error opt-out.
server = double_fixtures(TOKEN, start_seconds=0.4)[0]


@pytest.fixture
def expect_spec_errors():
    """Asked for by a test that makes the double find spec errors on purpose."""


@pytest.fixture
def fly(server, request):
    """The double, back at its seed; after the test, no request or answer broke the spec
    (unless the test is about that)."""
    server.state.reset()
    server.state.response_hook = None
    yield Client(server)
    server.state.response_hook = None
    if 'expect_spec_errors' not in request.fixturenames:
        assert server.state.spec_errors == []


class Client:
    def __init__(self, server):
        self.server, self.url, self.state = server, server.url, server.state

    def call(self, method, path, body=None, nonce=None, auth=TOKEN):
        headers = {'Authorization': auth} if auth else {}
        if nonce:
            headers['fly-machine-lease-nonce'] = nonce
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers['Content-Type'] = 'application/json'
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=70) as answer:
                raw, status, got = answer.read(), answer.status, answer.headers
        except urllib.error.HTTPError as err:
            raw, status, got = err.read(), err.code, err.headers
        return status, (json.loads(raw) if raw else None), got

    def machines_path(self, app=APP, machine_id=None, tail=''):
        return '/v1/apps/%s/machines' % app + ('/' + machine_id if machine_id else '') + tail

    def machine(self, machine_id, app=APP):
        return self.state.machines[app][machine_id]

    def first_id(self, app=APP):
        return min(self.state.machines[app].values(), key=lambda m: m.created_at).id

    def update_image(self, machine_id, tag, nonce=None, app=APP):
        status, shown, _headers = self.call('GET', self.machines_path(app, machine_id))
        assert status == 200
        config = dict(shown['config'], image=IMAGE % tag)
        return self.call('POST', self.machines_path(app, machine_id), {'config': config}, nonce=nonce)

    def wait(self, machine_id, query):
        return self.call('GET', self.machines_path(APP, machine_id, '/wait?' + query))

    def graphql(self, query, variables=None, auth=TOKEN):
        return self.call('POST', '/graphql', {'query': query, 'variables': variables or {}}, auth=auth)

    def control(self, method, name, body=None):
        return self.call(method, '/sandbox/fly/' + name, body, auth=None)


def test_seed_shape(fly):
    status, machines, _headers = fly.call('GET', fly.machines_path())
    assert status == 200 and len(machines) == 3
    regions = sorted(m['region'] for m in machines)
    assert regions == ['ams', 'ams', 'fra']
    for machine in machines:
        assert machine['state'] == 'started'
        assert machine['config']['image'] == IMAGE % '1.3.0-bad'
        assert machine['image_ref']['tag'] == '1.3.0-bad'
        assert machine['config']['metadata']['fly_process_group'] == 'app'
        assert machine['config']['checks']['health']['type'] == 'http'
        assert machine['config']['services'] and machine['config']['env'] and machine['config']['guest']
        assert machine['config']['restart']['policy'] == 'on-failure' and machine['config']['mounts'] == []
        assert machine['version'] == machine['instance_id'] and len(machine['instance_id']) == 26
    assert len(fly.state.machines[STAGING]) == 1

    for app in (APP, STAGING):
        status, answer, _headers = fly.graphql(RELEASES_QUERY, {'appName': app, 'limit': 25})
        assert status == 200 and 'errors' not in answer
        nodes = answer['data']['app']['releases']['nodes']
        assert [n['version'] for n in nodes] == [5, 4, 3, 2, 1]
        by_version = {n['version']: n for n in nodes}
        assert by_version[5]['status'] == 'complete' and by_version[5]['imageRef'] == IMAGE % '1.3.0-bad'
        assert by_version[4]['status'] == 'failed' and by_version[4]['imageRef'] == IMAGE % '1.3.0-crash'
        assert by_version[3]['stable'] and by_version[3]['imageRef'] == IMAGE % '1.2.0'
        assert not by_version[5]['stable'] and not by_version[4]['stable']
        assert all(n['user']['email'] for n in nodes)
    status, answer, _headers = fly.graphql('query { app(name: "%s") { name currentRelease { version imageRef } } }' % APP)
    assert answer['data']['app'] == {'name': APP, 'currentRelease': {'version': 5, 'imageRef': IMAGE % '1.3.0-bad'}}


def test_releases_first_limits(fly):
    _status, answer, _headers = fly.graphql(RELEASES_QUERY, {'appName': APP, 'limit': 2})
    assert [n['version'] for n in answer['data']['app']['releases']['nodes']] == [5, 4]


def test_update_changes_only_what_was_sent(fly):
    machine_id = fly.first_id()
    before = fly.machine(machine_id)
    old_config, old_instance = json.loads(json.dumps(before.config)), before.instance_id
    status, shown, _headers = fly.update_image(machine_id, '1.2.0')
    assert status == 200 and shown['state'] == 'replacing'
    after = fly.machine(machine_id)
    assert after.config == dict(old_config, image=IMAGE % '1.2.0')
    assert after.instance_id != old_instance and shown['instance_id'] == after.instance_id
    assert (after.region, after.name) == ('ams', before.name)
    others = [m for m in fly.state.machines[APP].values() if m.id != machine_id]
    assert all(m.image == IMAGE % '1.3.0-bad' for m in others)
    assert any(e['type'] == 'update' for e in after.events)


def test_start_takes_start_seconds(fly):
    fly.control('POST', 'settings', {'start_seconds': 1.0})
    machine_id = fly.first_id()
    began = time.monotonic()
    status, shown, _headers = fly.update_image(machine_id, '1.2.0')
    assert status == 200
    assert fly.machine(machine_id).state in ('replacing', 'starting')
    status, answer, _headers = fly.wait(machine_id, 'state=started&timeout=10&version=' + shown['instance_id'])
    took = time.monotonic() - began
    assert status == 200 and answer['ok'] is True and answer['state'] == 'started'
    assert 0.9 <= took < 6.0   # the upper bound only catches 'never waited for the start'
    assert fly.machine(machine_id).state == 'started'


def test_crash_image_never_starts(fly):
    machine_id = fly.first_id()
    status, shown, _headers = fly.update_image(machine_id, '1.3.0-crash')
    assert status == 200
    status, answer, _headers = fly.wait(machine_id, 'state=started&timeout=2&instance_id=' + shown['instance_id'])
    assert status == 408 and 'error' in answer
    machine = fly.machine(machine_id)
    assert machine.state == 'stopped'
    exits = [e for e in machine.events if e['type'] == 'exit']
    assert exits and exits[-1]['request']['exit_event']['exit_code'] == 1
    _status, serving, _headers = fly.control('GET', 'serving?app=' + APP)
    assert serving['started'] == 2 and serving['image'] == IMAGE % '1.3.0-bad'


def test_checks_follow_the_image(fly):
    fly.control('POST', 'settings', {'start_seconds': 0.3, 'check_seconds': 0.3})
    machine_id = fly.first_id()
    _status, shown, _headers = fly.call('GET', fly.machines_path(APP, machine_id))
    assert [c['status'] for c in shown['checks']] == ['critical']   # the seed's -bad image
    _status, shown, _headers = fly.update_image(machine_id, '1.2.0')
    assert [c['status'] for c in shown['checks']] == ['warning']    # while starting
    status, _body, _headers = fly.wait(machine_id, 'state=started&timeout=5')
    assert status == 200
    time.sleep(0.4)
    _status, shown, _headers = fly.call('GET', fly.machines_path(APP, machine_id))
    assert [c['status'] for c in shown['checks']] == ['passing']
    assert fly.machine(machine_id).check_status(time.time()) == 'passing'
    fly.update_image(machine_id, '1.3.1-bad')
    fly.wait(machine_id, 'state=started&timeout=5')
    time.sleep(0.4)
    assert fly.machine(machine_id).check_status(time.time()) == 'critical'


def test_lease_held_by_someone_else(fly):
    machine_id = fly.first_id()
    someone_else = {'app': APP, 'machine_id': machine_id, 'owner': 'alice@example.com',
                    'description': 'manual fix', 'ttl': 60}
    status, _body, _headers = fly.control('POST', 'lease', someone_else)
    assert status == 200
    status, lease, _headers = fly.call('GET', fly.machines_path(APP, machine_id, '/lease'))
    assert status == 200 and lease['status'] == 'success'
    assert lease['data']['owner'] == 'alice@example.com' and lease['data']['description'] == 'manual fix'
    status, answer, _headers = fly.call('POST', fly.machines_path(APP, machine_id, '/lease'), {'ttl': 30})
    assert status == 409 and 'alice@example.com' in answer['error']
    instance = fly.machine(machine_id).instance_id
    status, answer, _headers = fly.update_image(machine_id, '1.2.0')
    assert status == 409 and answer['error']
    status, _body, _headers = fly.update_image(machine_id, '1.2.0', nonce='0000wrong')
    assert status == 409
    assert fly.machine(machine_id).instance_id == instance and fly.machine(machine_id).image == IMAGE % '1.3.0-bad'
    status, _body, _headers = fly.call('POST', fly.machines_path(APP, machine_id, '/metadata/k'), {'value': 'v'})
    assert status == 409 and 'k' not in fly.machine(machine_id).config['metadata']
    # with the holder's nonce (what GET lease gives), the change goes through
    status, _body, _headers = fly.update_image(machine_id, '1.2.0', nonce=lease['data']['nonce'])
    assert status == 200 and fly.machine(machine_id).image == IMAGE % '1.2.0'


def test_lease_create_refresh_release(fly):
    machine_id = fly.first_id()
    path = fly.machines_path(APP, machine_id, '/lease')
    status, lease, _headers = fly.call('POST', path + '?ttl=5')     # flaps' form: ttl in the query, no body
    assert status == 201 and lease['data']['owner'] == fly_double.SANDBOX_OWNER
    nonce = lease['data']['nonce']
    assert lease['data']['version'] == fly.machine(machine_id).instance_id
    status, refreshed, _headers = fly.call('POST', path, {'ttl': 120}, nonce=nonce)
    assert status == 201 and refreshed['data']['nonce'] == nonce
    assert fly.machine(machine_id).lease['expires_at'] > time.time() + 100
    status, _body, _headers = fly.call('DELETE', path, nonce='0000wrong')
    assert status == 409 and fly.machine(machine_id).lease is not None
    status, _body, _headers = fly.call('DELETE', path, nonce=nonce)
    assert status == 200 and fly.machine(machine_id).lease is None
    status, answer, _headers = fly.call('GET', path)
    assert status == 404 and answer['error'] == 'lease not found'


def test_lease_expires(fly):
    machine_id = fly.first_id()
    path = fly.machines_path(APP, machine_id, '/lease')
    status, _body, _headers = fly.call('POST', path, {'ttl': 1, 'description': 'short'})
    assert status == 201
    status, _body, _headers = fly.update_image(machine_id, '1.2.0')
    assert status == 409
    time.sleep(1.3)
    status, _body, _headers = fly.call('GET', path)
    assert status == 404
    status, _body, _headers = fly.update_image(machine_id, '1.2.0')
    assert status == 200 and fly.machine(machine_id).image == IMAGE % '1.2.0'


def test_wait_answers(fly):
    machine_id = fly.first_id()
    status, answer, _headers = fly.wait(machine_id, 'state=started&timeout=2')
    assert status == 200 and answer['ok'] is True
    began = time.monotonic()
    status, answer, _headers = fly.wait(machine_id, 'state=stopped&timeout=1')
    assert status == 408 and 0.9 <= time.monotonic() - began < 6.0
    status, answer, _headers = fly.wait(machine_id, 'state=started&timeout=61')
    assert status == 400 and '60' in answer['error']
    status, _body, _headers = fly.wait(machine_id, 'state=settled&timeout=2')
    assert status == 200


def test_stop_and_start(fly):
    machine_id = fly.first_id()
    status, _body, _headers = fly.call('POST', fly.machines_path(APP, machine_id, '/stop'))
    assert status == 200
    status, _body, _headers = fly.wait(machine_id, 'state=stopped&timeout=5')
    assert status == 200 and fly.machine(machine_id).state == 'stopped'
    _status, serving, _headers = fly.control('GET', 'serving?app=' + APP)
    assert serving['started'] == 2
    status, answer, _headers = fly.call('POST', fly.machines_path(APP, machine_id, '/start'))
    assert status == 200 and answer['previous_state'] == 'stopped'
    status, _body, _headers = fly.wait(machine_id, 'state=started&timeout=5')
    assert status == 200 and fly.machine(machine_id).state == 'started'


def test_metadata_round_trip(fly):
    machine_id = fly.first_id()
    path = fly.machines_path(APP, machine_id, '/metadata')
    value = json.dumps({'image': IMAGE % '1.2.0', 'release': 3, 'at': '2026-12-01T12:00:00Z'})
    status, answer, _headers = fly.call('POST', path + '/hotelbot.ops%2Flast-stable', {'value': value})
    assert status == 204 and answer is None
    assert fly.machine(machine_id).config['metadata']['hotelbot.ops/last-stable'] == value
    status, answer, _headers = fly.call('GET', path + '/hotelbot.ops%2Flast-stable')
    assert status == 200 and answer == {'value': value}
    status, answer, _headers = fly.call('GET', path)
    assert answer['hotelbot.ops/last-stable'] == value and answer['fly_process_group'] == 'app'
    status, _body, _headers = fly.call('DELETE', path + '/hotelbot.ops%2Flast-stable')
    assert status == 204 and 'hotelbot.ops/last-stable' not in fly.machine(machine_id).config['metadata']
    status, answer, _headers = fly.call('GET', path + '/hotelbot.ops%2Flast-stable')
    assert status == 404 and answer['error']
    status, _body, _headers = fly.call('PUT', path, {'metadata': {'a': '1', 'fly_flyctl_version': ''}})
    assert status == 204
    metadata = fly.machine(machine_id).config['metadata']
    assert metadata['a'] == '1' and 'fly_flyctl_version' not in metadata


def test_list_filters(fly):
    _status, machines, _headers = fly.call('GET', fly.machines_path() + '?region=fra')
    assert [m['region'] for m in machines] == ['fra']
    _status, machines, _headers = fly.call('GET', fly.machines_path() + '?metadata.fly_process_group=app')
    assert len(machines) == 3
    _status, machines, _headers = fly.call('GET', fly.machines_path() + '?metadata.fly_process_group=worker')
    assert machines == []


def test_unknown_app_and_machine(fly):
    status, answer, _headers = fly.call('GET', fly.machines_path('no-such-app'))
    assert status == 404 and answer == {'error': 'app not found'}
    status, answer, _headers = fly.call('GET', fly.machines_path(APP, '000000000000aa'))
    assert status == 404 and answer == {'error': 'machine not found'}
    status, answer, _headers = fly.graphql('query { app(name: "no-such-app") { name } }')
    assert answer['data'] == {'app': None} and answer['errors'][0]['message'] == 'Could not find App'


def test_graphql_query_outside_the_schema(fly, expect_spec_errors):
    query = 'query { app(name: "%s") { name releasesUnprocessed(first: 1) { nodes { version imageReference } } } }'
    status, answer, _headers = fly.graphql(query % APP)
    assert status == 200 and 'data' not in answer
    assert "Cannot query field 'imageReference'" in answer['errors'][0]['message']
    assert [e['kind'] for e in fly.state.spec_errors] == ['graphql']


def test_auth(fly):
    for wrong in ('FlyV1 fm2_other', 'Bearer fm2_other', 'fm2_sandboxtoken', None):
        status, answer, _headers = fly.call('GET', fly.machines_path(), auth=wrong)
        assert status == 401 and answer == {'error': 'unauthorized'}
    for right in (TOKEN, 'Bearer fm2_sandboxtoken'):
        status, _body, _headers = fly.call('GET', fly.machines_path(), auth=right)
        assert status == 200
    status, answer, _headers = fly.graphql(RELEASES_QUERY, {'appName': APP, 'limit': 1}, auth='Bearer nope')
    assert answer['errors'][0]['extensions']['code'] == 'UNAUTHORIZED' and answer['data'] is None
    status, answer, _headers = fly.graphql(RELEASES_QUERY, {'appName': APP, 'limit': 1}, auth='Bearer fm2_sandboxtoken')
    assert answer['data']['app']['releases']['nodes'][0]['version'] == 5


def test_fault_down_closes_connections(fly):
    fly.control('POST', 'faults', {'down': True})
    for path in (fly.machines_path(), '/graphql'):
        with pytest.raises((ConnectionError, http.client.HTTPException, urllib.error.URLError)):
            fly.call('GET' if path != '/graphql' else 'POST', path, None if path != '/graphql' else {'query': '{ viewer { id } }'})
    assert fly.state.faults['down'] is True
    status, _body, _headers = fly.control('GET', 'state')   # the control endpoints keep answering
    assert status == 200
    fly.control('POST', 'faults', {'down': False})
    status, _body, _headers = fly.call('GET', fly.machines_path())
    assert status == 200


def test_fault_status_burst(fly):
    fly.control('POST', 'faults', {'status_burst': {'status': 503, 'count': 2, 'retry_after': 7}})
    for _attempt in range(2):
        status, answer, headers = fly.call('GET', fly.machines_path())
        assert status == 503 and headers['Retry-After'] == '7' and answer['error']
    status, _body, _headers = fly.call('GET', fly.machines_path())
    assert status == 200 and fly.state.faults['status_burst'] is None
    fly.control('POST', 'faults', {'status_burst': {'status': 429, 'count': 1, 'retry_after': 2}})
    status, _body, headers = fly.call('POST', fly.machines_path(APP, fly.first_id(), '/lease'), {'ttl': 5})
    assert status == 429 and headers['Retry-After'] == '2'
    assert fly.machine(fly.first_id()).lease is None   # refused before it was done


def test_fault_down_after(fly):
    fly.control('POST', 'faults', {'down_after': 2})
    for _attempt in range(2):
        status, _body, _headers = fly.call('GET', fly.machines_path())
        assert status == 200
    with pytest.raises((ConnectionError, http.client.HTTPException, urllib.error.URLError)):
        fly.call('GET', fly.machines_path())
    assert fly.state.faults['down'] is True


def test_calls_are_counted(fly):
    fly.call('GET', fly.machines_path())
    fly.call('GET', fly.machines_path())
    fly.graphql(RELEASES_QUERY, {'appName': APP, 'limit': 5})
    _status, calls, _headers = fly.control('GET', 'calls')
    assert calls['Machines_list'] == 2 and sum(v for k, v in calls.items() if k.startswith('graphql:')) == 1


def test_reset(fly):
    machine_id = fly.first_id()
    fly.update_image(machine_id, '1.2.0')
    fly.control('POST', 'lease', {'app': APP, 'machine_id': machine_id, 'owner': 'x@example.com'})
    fly.control('POST', 'faults', {'status_burst': {'status': 429, 'count': 5, 'retry_after': 1}})
    status, _body, _headers = fly.control('POST', 'reset')
    assert status == 200
    machine = fly.machine(machine_id)
    assert machine.image == IMAGE % '1.3.0-bad' and machine.lease is None
    assert fly.state.faults['status_burst'] is None and dict(fly.state.calls) == {}
    _status, snapshot, _headers = fly.control('GET', 'state')
    assert sorted(snapshot['apps']) == [APP, STAGING] and snapshot['spec_errors'] == []


def test_reset_with_more_machines(fly):
    status, _body, _headers = fly.control('POST', 'reset', {'machines': 10})
    assert status == 200
    machines = fly.state.machines[APP]
    assert len(machines) == 10 and {m.region for m in machines.values()} == {'ams', 'fra'}
    assert fly.first_id() == 'e2865013a3d768'   # the seed's oldest stays the oldest (the lock Machine)
    assert len(fly.state.machines[STAGING]) == 1
    fly.control('POST', 'reset')
    assert len(fly.state.machines[APP]) == 3


def test_serving_follows_started_machines(fly):
    fly.control('POST', 'settings', {'start_seconds': 1.0})
    updated = list(fly.state.machines[APP])[:2]
    for machine_id in updated:
        fly.update_image(machine_id, '1.2.0')
    _status, serving, _headers = fly.control('GET', 'serving?app=' + APP)
    assert serving['image'] == IMAGE % '1.3.0-bad' and serving['started'] == 1   # two still starting
    for machine_id in updated:
        assert fly.wait(machine_id, 'state=started&timeout=10')[0] == 200
    _status, serving, _headers = fly.control('GET', 'serving?app=' + APP)
    assert (serving['image'], serving['version'], serving['started']) == (IMAGE % '1.2.0', '1.2.0', 3)
    _status, staging, _headers = fly.control('GET', 'serving?app=' + STAGING)
    assert staging['version'] == '1.3.0-bad' and len(staging['machines']) == 1


def test_validation_catches_a_bad_answer(fly, expect_spec_errors):
    def state_is_a_number(operation, params, body):
        return dict(body, state=5) if operation == 'Machines_show' else body
    fly.state.response_hook = state_is_a_number
    status, answer, _headers = fly.call('GET', fly.machines_path(APP, fly.first_id()))
    assert status == 500 and answer['error'].startswith('spec:')
    assert [(e['kind'], e['path']) for e in fly.state.spec_errors] == [
        ('response', fly.machines_path(APP, fly.first_id()))]
    assert any('state' in p for p in fly.state.spec_errors[0]['problems'])


def test_validation_catches_a_bad_request(fly, expect_spec_errors):
    machine_id = fly.first_id()
    status, answer, _headers = fly.call('POST', fly.machines_path(APP, machine_id), {'config': {'image': 7}})
    assert status == 500 and answer['error'].startswith('spec:')
    assert fly.state.spec_errors[0]['kind'] == 'request'
    assert fly.machine(machine_id).image == IMAGE % '1.3.0-bad'   # nothing was done


def test_spec_with_overlay_is_valid_openapi():
    openapi_spec_validator.validate(fly_spec.spec_with_overlay())


def test_spec_functions_directly():
    url = 'http://127.0.0.1:1/v1/apps/a/machines/m/lease'
    assert fly_spec.validate_response('GET', url, 200, {}, {'status': 'success', 'data': {'nonce': 'n'}}) == []
    assert fly_spec.validate_response('GET', url, 200, {}, {'nonce': 'n'})   # the spec's flat Lease is not what Fly sends
    assert fly_spec.validate_response('GET', url, 418, {}, {})
    assert fly_spec.validate_graphql(RELEASES_QUERY, {'appName': APP, 'limit': 3}) == []
    assert fly_spec.validate_graphql(RELEASES_QUERY, {'appName': APP, 'limit': 'three'})
    assert all(source for _where, _what, source in fly_spec.OVERLAY)


def test_cli_serves_and_exits_on_sigterm(tmp_path):
    token_file = tmp_path / 'token'
    token_file.write_text(TOKEN + '\n')
    process = subprocess.Popen(
        [sys.executable, '-m', 'sandbox.fly_double', '--host', '127.0.0.1', '--port', '0',
         '--token-file', str(token_file), '--start-seconds', '0.2'],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = json.loads(process.stdout.readline())['url']
        request = urllib.request.Request(url + '/v1/apps/%s/machines' % APP, headers={'Authorization': TOKEN})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert len(json.loads(answer.read())) == 3
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        assert time.monotonic() - began < 3.0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_secrets_list_names_the_apps_secrets_and_never_their_values(fly):
    status, body, _headers = fly.call('GET', '/v1/apps/%s/secrets' % APP)
    assert status == 200
    assert sorted(s['name'] for s in body['secrets']) == ['DATABASE_URL', 'OPENAI_API_KEY', 'WAHA_API_KEY']
    assert all('value' not in s for s in body['secrets'])


@pytest.mark.parametrize('name', ['fly-machines-openapi.json', 'fly-graphql-schema.graphql'])
def test_the_specs_in_the_repository_are_the_projects_own(name):
    """sandbox/specs/ holds the specs a clean clone validates against; where the project's shared/specs/
    is at hand (beside the repository), they must be the same bytes."""
    shared = os.path.join(os.path.dirname(fly_spec.__file__), '..', '..', 'shared', 'specs', name)
    if not os.path.exists(shared):
        pytest.skip('no ../shared/specs beside this clone')
    with open(shared, encoding='utf-8') as theirs:
        assert fly_spec.read_spec(os.path.join(fly_spec.SPECS_DIR, name)) == theirs.read()
