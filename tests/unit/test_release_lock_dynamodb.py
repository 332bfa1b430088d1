"""release_lock with backend=dynamodb against moto's DynamoDB, served over HTTP (moto's server), through the
module's own work function. Every assertion on a lease is checked on the item in the table."""
import json
import threading
import time
import uuid

import botocore.session
import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from moto.dynamodb.models import DynamoDBBackend
from moto.server import ThreadedMotoServer

from ansible_collections.hotelbot.ops.plugins.module_utils import postgres
from ansible_collections.hotelbot.ops.plugins.module_utils import release_lock as r
from ansible_collections.hotelbot.ops.plugins.module_utils import release_lock_dynamodb as d
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, Task, execute
from ansible_collections.hotelbot.ops.plugins.modules.release_lock import SPEC

# no_proxy_env is an autouse fixture: importing it is what applies it here.
from tests.unit.module_runner import closed_port, no_proxy_env  # noqa: F401  # pylint: disable=unused-import

REGION = 'eu-central-1'


# DynamoDB applies a conditional write atomically; moto checks the condition and writes without a lock, so
# two of its server threads can both pass one condition. One lock around its writes makes the double faithful.
MOTO_WRITES = ('put_item', 'update_item', 'delete_item', 'transact_write_items')


def one_at_a_time(write, lock):
    def locked(*args, **kwargs):
        with lock:
            return write(*args, **kwargs)
    return locked


@pytest.fixture(scope='module')
def endpoint():
    lock = threading.RLock()  # re-entered: transact_write_items calls put_item
    with pytest.MonkeyPatch.context() as patch:
        for name in MOTO_WRITES:
            patch.setattr(DynamoDBBackend, name, one_at_a_time(getattr(DynamoDBBackend, name), lock))
        server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        yield 'http://%s:%d' % (host, port)
        server.stop()


def raw_client(endpoint):
    return botocore.session.Session().create_client('dynamodb', region_name=REGION, endpoint_url=endpoint,
                                                    aws_access_key_id='test', aws_secret_access_key='test')


@pytest.fixture
def table(endpoint):
    name = 'locks-%s' % uuid.uuid4().hex[:8]
    raw_client(endpoint).create_table(TableName=name, AttributeDefinitions=[dict(AttributeName='name', AttributeType='S')],
                                      KeySchema=[dict(AttributeName='name', KeyType='HASH')], BillingMode='PAY_PER_REQUEST')
    return name


def params(endpoint, table, **overrides):
    """The module's validated params, as its argument spec makes them."""
    args = dict(backend='dynamodb', table=table, region=REGION, endpoint_url=endpoint, access_key='test',
                secret_key='test', name='ecs/c/s', owner='bob@ci/1', ttl='90s')
    args.update(overrides)
    validation = ArgumentSpecValidator(SPEC['argument_spec']).validate(args)
    assert not validation.error_messages, validation.error_messages
    return validation.validated_parameters


def run(endpoint, table, check_mode=False, **overrides):
    """The module's work through common.execute (as the module and the action plugin run it), no heartbeat."""
    task = Task(params(endpoint, table, **overrides), check_mode=check_mode)
    return execute(SPEC, r.release_lock_task, task)


def item(endpoint, table, name='ecs/c/s'):
    return raw_client(endpoint).get_item(TableName=table, Key={'name': {'S': name}}, ConsistentRead=True).get('Item')


def events(endpoint, table):
    found = raw_client(endpoint).scan(TableName=table).get('Items', [])
    return [i for i in found if i['kind']['S'] == 'event']


def put_lease(endpoint, table, owner, expires_in, name='ecs/c/s'):
    now = time.time()
    raw_client(endpoint).put_item(TableName=table, Item={
        'name': {'S': name}, 'owner': {'S': owner}, 'purpose': {'S': 'hotpatch CHG-1'}, 'kind': {'S': 'lease'},
        'acquired_at': {'N': '%.3f' % (now - 10)}, 'renewed_at': {'N': '%.3f' % (now - 10)},
        'expires_at': {'N': '%.3f' % (now + expires_in)}})


def test_spec_takes_the_aws_options_and_the_backend():
    validator = ArgumentSpecValidator(SPEC['argument_spec'])
    ok = validator.validate(dict(name='n', backend='dynamodb', region=REGION, secret_key='s3cret-key'))
    assert not ok.error_messages and 's3cret-key' in ok._no_log_values
    assert ok.validated_parameters['connect_timeout'] == 10 and ok.validated_parameters['max_attempts'] == 5
    assert 'backend' in ' '.join(validator.validate(dict(name='n', database='d', backend='etcd')).error_messages)


def test_acquire_writes_the_item_and_a_second_owner_is_refused_naming_the_holder(endpoint, table, monkeypatch):
    monkeypatch.setattr(r, 'keep_alive', lambda *a, **k: (None, None))
    result = run(endpoint, table)
    assert result['changed'] is True and result['acquired'] is True and result['table'] == table, result
    stored = item(endpoint, table)
    assert stored['owner']['S'] == 'bob@ci/1' and 85 < float(stored['expires_at']['N']) - time.time() <= 90
    refused = run(endpoint, table, owner='carol@ci/2')
    assert refused['failed'] is True and refused['changed'] is False
    assert refused['msg'].startswith("release lock 'ecs/c/s' is held by bob@ci/1 since ")
    assert '-e release_break_lock=bob@ci/1' in refused['msg']
    assert item(endpoint, table)['owner']['S'] == 'bob@ci/1'


def test_same_owner_renews_keeping_since_and_renew_false_keeps(endpoint, table, monkeypatch):
    monkeypatch.setattr(r, 'keep_alive', lambda *a, **k: (None, None))
    put_lease(endpoint, table, 'bob@ci/1', 20)
    before = item(endpoint, table)
    kept = run(endpoint, table, renew=False)
    assert kept['changed'] is False and item(endpoint, table) == before
    renewed = run(endpoint, table)
    after = item(endpoint, table)
    assert renewed['renewed'] is True and after['acquired_at'] == before['acquired_at']
    assert float(after['expires_at']['N']) > float(before['expires_at']['N']) + 60


def test_expired_lease_is_taken_over(endpoint, table, monkeypatch):
    monkeypatch.setattr(r, 'keep_alive', lambda *a, **k: (None, None))
    put_lease(endpoint, table, 'alice@ci/0', -5)
    result = run(endpoint, table)
    assert result['took_over']['owner'] == 'alice@ci/0' and result['took_over']['expired'] is True
    assert item(endpoint, table)['owner']['S'] == 'bob@ci/1'


def test_wait_takes_the_lease_once_it_expires(endpoint, table, monkeypatch):
    monkeypatch.setattr(r, 'keep_alive', lambda *a, **k: (None, None))
    put_lease(endpoint, table, 'alice@ci/0', 2.0)
    result = run(endpoint, table, wait='20s')
    assert result['acquired'] is True and 0.5 <= result['waited_s'] < 15
    assert result['waited_for']['owner'] == 'alice@ci/0' and item(endpoint, table)['owner']['S'] == 'bob@ci/1'


def test_release_by_owner_deletes_and_by_another_is_refused(endpoint, table):
    put_lease(endpoint, table, 'bob@ci/1', 60)
    refused = run(endpoint, table, state='released', owner='carol@ci/2')
    assert refused['failed'] is True and 'not released' in refused['msg'] and item(endpoint, table) is not None
    released = run(endpoint, table, state='released')
    assert released['changed'] is True and released['released'] is True and item(endpoint, table) is None
    again = run(endpoint, table, state='released')
    assert again['changed'] is False and 'is not held' in again['msg']


def test_break_owner_deletes_that_lease_with_its_event_and_refuses_anyone_else(endpoint, table, monkeypatch):
    monkeypatch.setattr(r, 'keep_alive', lambda *a, **k: (None, None))
    put_lease(endpoint, table, 'alice@ci/0', 60)
    wrong = run(endpoint, table, state='released', break_owner='mallory@x/9')
    assert wrong['failed'] is True and 'not broken, nothing changed' in wrong['msg']
    assert item(endpoint, table)['owner']['S'] == 'alice@ci/0' and events(endpoint, table) == []
    result = run(endpoint, table, break_owner='alice@ci/0')  # state=acquired: break, then take
    assert result['broken']['owner'] == 'alice@ci/0' and result['broken']['broken_by'] == 'bob@ci/1'
    assert item(endpoint, table)['owner']['S'] == 'bob@ci/1'
    [event] = events(endpoint, table)
    assert event['event']['S'] == 'broken' and event['owner']['S'] == 'alice@ci/0'
    assert event['broken_by']['S'] == 'bob@ci/1' and event['name']['S'] == d.EVENT_PREFIX + result['broken']['event_id']


def test_check_mode_writes_nothing(endpoint, table):
    plan = run(endpoint, table, check_mode=True)
    assert plan['changed'] is True and plan['msg'].startswith("would acquire release lock 'ecs/c/s'")
    put_lease(endpoint, table, 'alice@ci/0', 60)
    before = item(endpoint, table)
    held = run(endpoint, table, check_mode=True)
    assert held['failed'] is True and held['msg'].startswith('check mode: ')
    assert run(endpoint, table, check_mode=True, state='released', break_owner='alice@ci/0')['released'] is True
    assert item(endpoint, table) == before and events(endpoint, table) == []


def test_of_concurrent_acquires_exactly_one_wins(endpoint, table, monkeypatch):
    monkeypatch.setattr(r, 'keep_alive', lambda *a, **k: (None, None))
    results, barrier = {}, threading.Barrier(6)

    def take(owner):
        barrier.wait()
        results[owner] = run(endpoint, table, owner=owner)

    threads = [threading.Thread(target=take, args=('run/%d' % i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [owner for owner, result in results.items() if result.get('acquired')]
    assert len(winners) == 1, results
    assert item(endpoint, table)['owner']['S'] == winners[0]
    assert all('is held by %s' % winners[0] in result['msg'] for owner, result in results.items() if owner not in winners)


def test_conditional_write_refuses_a_lease_that_changed_since_it_was_read(endpoint, table):
    store = d.DynamoDBLeases(params(endpoint, table), table)
    put_lease(endpoint, table, 'alice@ci/0', -5)
    seen = store.read('ecs/c/s')
    put_lease(endpoint, table, 'carol@ci/2', 60)  # someone else took it over in between
    lease = dict(name='ecs/c/s', owner='bob@ci/1', purpose='', acquired_at=1.0, renewed_at=1.0, expires_at=2.0)
    assert store.write(lease, seen) is False and store.delete(seen) is False
    assert store.break_lease(seen, dict(event='broken', broken_by='bob@ci/1')) is None
    assert item(endpoint, table)['owner']['S'] == 'carol@ci/2' and events(endpoint, table) == []


def test_heartbeat_renewal_moves_the_expiry_only_while_ours(endpoint, table):
    put_lease(endpoint, table, 'bob@ci/1', 5)
    settings = r.validate(params(endpoint, table))
    assert r.renew_lease(params(endpoint, table), settings) is True
    assert float(item(endpoint, table)['expires_at']['N']) - time.time() > 80
    put_lease(endpoint, table, 'carol@ci/2', 60)
    assert r.renew_lease(params(endpoint, table), settings) is False
    assert item(endpoint, table)['owner']['S'] == 'carol@ci/2'


def test_real_heartbeat_process_renews_the_item(endpoint, table):
    """The detached renewer (a double fork) renews the item while its holder (this process) lives."""
    task = Task(params(endpoint, table, ttl=3, _holder=r.holder_identity(__import__('os').getpid())))
    result = execute(SPEC, r.release_lock_task, task)
    assert result['heartbeat'] and result['heartbeat']['every_s'] == 1.0, result
    first = float(item(endpoint, table)['expires_at']['N'])
    time.sleep(2.5)
    assert float(item(endpoint, table)['expires_at']['N']) > first + 1
    assert r.run_optimistic(d.DynamoDBLeases(params(endpoint, table), table),
                            params(endpoint, table, state='released'))['released'] is True


def test_missing_table_says_how_to_create_it(endpoint):
    result = run(endpoint, 'no-such-table')
    assert result['failed'] is True
    assert result['msg'].startswith('DynamoDB table no-such-table not found (region eu-central-1')
    assert 'aws dynamodb create-table --table-name no-such-table' in result['msg']


def test_unreachable_endpoint_fails_in_one_line(table):
    result = run('http://127.0.0.1:%d' % closed_port(), table, max_attempts=1, connect_timeout=2)
    assert result['failed'] is True and 'AWS endpoint unreachable' in result['msg'] and '\n' not in result['msg']


def test_postgres_backend_without_psycopg_names_the_switch(monkeypatch):
    monkeypatch.setattr(postgres, 'HAS_PSYCOPG', False)
    result = execute(SPEC, r.release_lock_task, Task(dict(params('http://x', 't'), backend='postgres', database='db')))
    assert result['failed'] is True and 'psycopg' in result['msg']
    assert 'backend=dynamodb' in result['msg'] and 'hotelbot_lock_backend=dynamodb' in result['msg']


def test_names_reserved_for_events_are_refused(endpoint, table):
    with pytest.raises(OpsError) as err:
        r.validate(params(endpoint, table, name='#event/x'))
    assert err.value.msg.startswith('name must not start with')


def test_a_password_in_endpoint_url_is_hidden_everywhere(table):
    hidden = []
    url = 'http://user:pr0xy-s3cret@127.0.0.1:%d' % closed_port()
    task = Task(params(url, table, max_attempts=1, connect_timeout=2), hide=hidden.append)
    # What Ansible shows: the result with every hidden value removed (AnsibleModule and the action plugin alike).
    shown = json.dumps(remove_values(execute(SPEC, r.release_lock_task, task), set(hidden)))
    assert 'AWS endpoint unreachable' in shown and 'pr0xy-s3cret' in hidden and 'pr0xy-s3cret' not in shown


class Requests:
    """The DynamoDB operations the module's clients sent (made, in order), and request parameters to
    leave out (as a service that does not know them would ignore them)."""

    def __init__(self):
        self.made = []
        self.leave_out = []

    def count(self, model, **_kwargs):
        self.made.append(model.name)

    def drop(self, params, **_kwargs):
        for key in self.leave_out:
            params.pop(key, None)


@pytest.fixture
def requests(monkeypatch):
    """Requests seen by a botocore event hook on every client the module builds (no heartbeat)."""
    seen = Requests()
    real_client = d.client

    def hooked_client(params, service):
        built = real_client(params, service)
        built.meta.events.register('provide-client-params.dynamodb', seen.drop)
        built.meta.events.register('before-call.dynamodb', seen.count)
        return built

    monkeypatch.setattr(d, 'client', hooked_client)
    monkeypatch.setattr(r, 'keep_alive', lambda *a, **k: (None, None))
    return seen


def test_a_free_lease_is_taken_and_given_back_in_one_request_each(endpoint, table, requests):
    taken = run(endpoint, table)
    assert taken['acquired'] is True and requests.made == ['PutItem']
    assert item(endpoint, table)['owner']['S'] == 'bob@ci/1'
    released = run(endpoint, table, state='released')
    assert released['released'] is True and released['holder']['owner'] == 'bob@ci/1'
    assert requests.made == ['PutItem', 'DeleteItem'] and item(endpoint, table) is None
    again = run(endpoint, table, state='released')
    assert again['changed'] is False and again['holder'] is None and requests.made[2:] == ['DeleteItem']
    put_lease(endpoint, table, 'alice@ci/0', -5)
    took_over = run(endpoint, table)
    assert took_over['took_over']['owner'] == 'alice@ci/0' and requests.made[3:] == ['PutItem']
    assert item(endpoint, table)['owner']['S'] == 'bob@ci/1'


def test_a_refusal_names_the_holder_from_the_refused_write_alone(endpoint, table, requests):
    put_lease(endpoint, table, 'alice@ci/0', 60)
    before = item(endpoint, table)
    held = run(endpoint, table)
    assert held['failed'] is True and "is held by alice@ci/0 for 'hotpatch CHG-1'" in held['msg']
    assert requests.made == ['PutItem'] and item(endpoint, table) == before
    refused = run(endpoint, table, state='released')
    assert refused['failed'] is True and 'held by alice@ci/0' in refused['msg'] and 'not released' in refused['msg']
    assert requests.made == ['PutItem', 'DeleteItem'] and item(endpoint, table) == before


def test_where_a_refusal_does_not_return_the_lease_it_is_read(endpoint, table, requests):
    requests.leave_out.append('ReturnValuesOnConditionCheckFailure')
    put_lease(endpoint, table, 'alice@ci/0', 60)
    before = item(endpoint, table)
    held = run(endpoint, table)
    assert held['failed'] is True and 'is held by alice@ci/0' in held['msg']
    refused = run(endpoint, table, state='released')
    assert refused['failed'] is True and 'held by alice@ci/0' in refused['msg']
    assert requests.made == ['PutItem', 'GetItem', 'DeleteItem', 'GetItem'] and item(endpoint, table) == before


def test_a_claim_never_replaces_a_live_lease_nor_gives_back_another_owners(endpoint, table):
    store = d.DynamoDBLeases(params(endpoint, table), table)
    put_lease(endpoint, table, 'carol@ci/2', 60)
    now = time.time()
    lease = dict(name='ecs/c/s', owner='bob@ci/1', purpose='', acquired_at=now, renewed_at=now, expires_at=now + 90)
    claimed, in_the_way = store.claim(lease, now)
    assert claimed is False and in_the_way['owner'] == 'carol@ci/2'
    given_back, in_the_way = store.give_back('ecs/c/s', 'bob@ci/1')
    assert given_back is False and in_the_way['owner'] == 'carol@ci/2'
    assert item(endpoint, table)['owner']['S'] == 'carol@ci/2'
