"""release_lock with backend=fly (a Fly Machine lease on the app's oldest Machine) against the sandbox's Fly
double, through the module's own work function; every assertion on a lease is checked on the double's
Machine. Also: fly_release under that lease (lock_owner)."""
import json
import os
import time

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.hotelbot.ops.plugins.module_utils import release_lock as r
from ansible_collections.hotelbot.ops.plugins.module_utils import release_lock_fly
from ansible_collections.hotelbot.ops.plugins.module_utils.common import Task, execute
from ansible_collections.hotelbot.ops.plugins.module_utils.fly_roll import release as fly_release_work
from ansible_collections.hotelbot.ops.plugins.modules import fly_release
from ansible_collections.hotelbot.ops.plugins.modules.release_lock import SPEC
from tests.unit.fly_fixtures import double_fixtures

# no_proxy_env is an autouse fixture: importing it is what applies it here.
from tests.unit.module_runner import no_proxy_env  # noqa: F401  # pylint: disable=unused-import

TOKEN = 'FlyV1 fm2_lockcanary_51d04b8e7f3a'
APP = 'hotel-voice-bot'
LOCK_MACHINE = 'e2865013a3d768'   # the oldest Machine of the seed
GOOD = 'registry.fly.io/hotel-voice-bot:1.2.0'


server, fly_api = double_fixtures(TOKEN)


def params(server, **overrides):
    args = dict(backend='fly', api_token=TOKEN, api_url=server.url, name='fly/' + APP, owner='bob@ci/1', ttl='90s')
    args.update(overrides)
    validation = ArgumentSpecValidator(SPEC['argument_spec']).validate(args)
    assert not validation.error_messages, validation.error_messages
    return validation.validated_parameters


def lock(server, check_mode=False, **overrides):
    return execute(SPEC, r.release_lock_task, Task(params(server, **overrides), check_mode=check_mode))


def lease(server, machine_id=LOCK_MACHINE):
    with server.state.lock:
        return server.state.machines[APP][machine_id].active_lease(time.time())


def test_acquire_leases_the_oldest_machine_and_a_second_owner_is_refused_naming_the_holder(fly_api):
    taken = lock(fly_api, purpose='rollback INC-7')
    assert not taken.get('failed'), taken['msg']
    assert taken['acquired'] and taken['backend'] == 'fly'
    held = lease(fly_api)
    described = json.loads(held['description'])
    assert (described['owner'], described['purpose']) == ('bob@ci/1', 'rollback INC-7')
    assert 85 <= held['expires_at'] - time.time() <= 91
    other = lock(fly_api, owner='carol@ci/2')
    assert other['failed'] and 'bob@ci/1' in other['msg'] and 'rollback INC-7' in other['msg']
    assert lease(fly_api)['nonce'] == held['nonce']
    released = lock(fly_api, state='released')
    assert released['released'] and lease(fly_api) is None


def test_an_expired_lease_is_taken_over(fly_api):
    assert lock(fly_api, ttl=1)['acquired']
    time.sleep(1.2)
    taken = lock(fly_api, owner='carol@ci/2')
    assert taken['acquired'] and json.loads(lease(fly_api)['description'])['owner'] == 'carol@ci/2'


def test_heartbeat_renewal_moves_the_expiry_only_while_ours(fly_api):
    assert lock(fly_api, ttl=30)['acquired']
    first = lease(fly_api)['expires_at']
    time.sleep(1.1)
    settings = r.validate(params(fly_api, ttl=30))
    assert r.renew_lease(params(fly_api, ttl=30), settings) is True
    assert lease(fly_api)['expires_at'] > first + 1
    assert release_lock_fly.FlyLeases(params(fly_api), 'fly/' + APP).renew('fly/' + APP, 'carol@ci/2', 30) is False


def test_real_heartbeat_process_renews_the_lease(fly_api):
    task = Task(params(fly_api, ttl=3, _holder=r.holder_identity(os.getpid())))
    result = execute(SPEC, r.release_lock_task, task)
    assert result['heartbeat'] and result['heartbeat']['every_s'] == 1.0, result
    first = lease(fly_api)['expires_at']
    time.sleep(2.5)
    assert lease(fly_api)['expires_at'] > first + 1
    assert lock(fly_api, state='released')['released'] and lease(fly_api) is None


def test_break_owner_clears_that_lease_and_records_it(fly_api):
    assert lock(fly_api, owner='dead@ci/9')['acquired']
    refused = lock(fly_api, owner='carol@ci/2', break_owner='someone@else')
    assert refused['failed'] and lease(fly_api) is not None
    taken = lock(fly_api, owner='carol@ci/2', break_owner='dead@ci/9')
    assert not taken.get('failed'), taken['msg']
    assert taken['broken']['owner'] == 'dead@ci/9'
    assert json.loads(lease(fly_api)['description'])['owner'] == 'carol@ci/2'
    with fly_api.state.lock:
        record = json.loads(fly_api.state.machines[APP][LOCK_MACHINE].config['metadata'][release_lock_fly.META_LOCK_BROKEN])
    assert (record['owner'], record['broken_by']) == ('dead@ci/9', 'carol@ci/2')


def test_check_mode_takes_nothing(fly_api):
    planned = lock(fly_api, check_mode=True)
    assert planned['changed'] and lease(fly_api) is None


def test_a_name_that_is_not_fly_app_is_refused(fly_api):
    assert 'fly/<app>' in lock(fly_api, name='ecs/c/s')['msg']


def test_fly_release_works_under_the_locks_lease_and_leaves_it_held(fly_api):
    assert lock(fly_api)['acquired']
    nonce = lease(fly_api)['nonce']
    validation = ArgumentSpecValidator(fly_release.SPEC['argument_spec']).validate(dict(
        app=APP, api_token=TOKEN, api_url=fly_api.url, graphql_url=fly_api.url + '/graphql', release='previous',
        mark_stable=True, lock_owner='bob@ci/1'))
    result = execute(fly_release.SPEC, fly_release_work, Task(validation.validated_parameters))
    assert not result.get('failed'), result['msg']
    with fly_api.state.lock:
        assert [m.image for m in fly_api.state.all_machines(APP)] == [GOOD] * 3
    assert lease(fly_api)['nonce'] == nonce   # still the lock's, still held
    # Without lock_owner the lock's lease is another holder's: refused.
    plain = dict(validation.validated_parameters, lock_owner=None, release='5')
    refused = execute(fly_release.SPEC, fly_release_work, Task(plain))
    assert refused['failed'] and 'bob@ci/1' in refused['msg']
