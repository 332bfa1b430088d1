"""fly_release_info and fly_release (their work functions, through common.execute and the real transport)
against the sandbox's Fly double (sandbox/fly_double.py), validating every request and response against
Fly's specs. Every assertion is on the double's state: Machines, images, instances, leases, metadata."""
import copy
import json
import time

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.hotelbot.ops.plugins.module_utils import fly, fly_roll
from ansible_collections.hotelbot.ops.plugins.module_utils.common import Task, execute
from ansible_collections.hotelbot.ops.plugins.modules import fly_release, fly_release_info
from tests.unit.fly_fixtures import double_fixtures

# no_proxy_env is an autouse fixture: importing it is what applies it here.
from tests.unit.module_runner import no_proxy_env  # noqa: F401  # pylint: disable=unused-import

TOKEN = 'FlyV1 fm2_canary_7f3a9c2e51d04b8e'
APP = 'hotel-voice-bot'
REPO = 'registry.fly.io/hotel-voice-bot'
GOOD, CRASH, BAD = REPO + ':1.2.0', REPO + ':1.3.0-crash', REPO + ':1.3.0-bad'
IDS = ['e2865013a3d768', '3d8d9e3eb1e938', '9185d1eb2e5e83']


server, fly_api = double_fixtures(TOKEN)


def params(server, spec, **given):
    args = dict(api_token=TOKEN, api_url=server.url, graphql_url=server.url + '/graphql', app=APP)
    args.update(given)
    validation = ArgumentSpecValidator(spec['argument_spec'], mutually_exclusive=spec['mutually_exclusive']).validate(args)
    assert not validation.error_messages, validation.error_messages
    return validation.validated_parameters


def info(server, **given):
    return execute(fly_release_info.SPEC, fly.release_info, Task(params(server, fly_release_info.SPEC, **given)))


def roll(server, check_mode=False, **given):
    task = Task(params(server, fly_release.SPEC, **given), check_mode=check_mode, diff=True)
    return execute(fly_release.SPEC, fly_roll.release, task)


def machines(server, app=APP):
    with server.state.lock:
        return dict((m.id, m) for m in server.state.all_machines(app))


def images(server):
    return dict((mid, m.image) for mid, m in machines(server).items())


def instances(server):
    return dict((mid, m.instance_id) for mid, m in machines(server).items())


def leases(server):
    now = time.time()
    return dict((mid, m.active_lease(now)) for mid, m in machines(server).items() if m.active_lease(now))


def ours(metadata):
    return dict((k, v) for k, v in metadata.items() if k.startswith('hotelbot.ops/'))


def updates(server, machine_id):
    return [e for e in machines(server)[machine_id].events if e['type'] == 'update' and e['source'] == 'user'
            and (e.get('request') or {}).get('image_to')]


def test_info_names_current_previous_last_stable_and_the_target(fly_api):
    result = info(fly_api)
    assert not result.get('failed'), result['msg']
    assert [r['version'] for r in result['releases']] == [5, 4, 3, 2, 1]
    assert (result['current']['label'], result['current']['version']) == ('v5', '1.3.0-bad')
    assert result['previous']['id'] == 3 and result['target']['id'] == 3 and result['last_stable']['id'] == 3
    assert result['changes'] and not result['mixed'] and result['lock_name'] == 'fly/hotel-voice-bot'
    assert sorted(m['id'] for m in result['machines']) == sorted(IDS)
    assert all(m['checks'] and m['process_group'] == 'app' for m in result['machines'])
    defined = result['environment']['defined']
    assert {'DATABASE_URL', 'OPENAI_API_KEY'} <= set(defined) and result['environment']['release'] == 'v5'
    with fly_api.state.lock:
        env = fly_api.state.machines[APP][IDS[0]].config['env']
    assert set(name for name, value in env.items() if value) <= set(defined)


def test_info_says_which_machine_runs_what_after_a_half_finished_deploy(fly_api):
    with fly_api.state.lock:
        fly_api.state.machines[APP][IDS[2]].config['image'] = GOOD
    warnings = []
    result = execute(fly_release_info.SPEC, fly.release_info,
                     Task(params(fly_api, fly_release_info.SPEC), warn=warnings.append))
    assert result['mixed'] and result['images_running'] == {BAD: IDS[:2], GOOD: IDS[2:]}
    assert result['current']['id'] == 5 and IDS[2] in warnings[0]


def test_rollback_to_previous_changes_only_the_image_and_marks_stable(fly_api):
    before = dict((mid, copy.deepcopy(m.config)) for mid, m in machines(fly_api).items())
    result = roll(fly_api, release='previous', mark_stable=True, expected_current=5)
    assert not result.get('failed'), result['msg']
    assert images(fly_api) == dict.fromkeys(IDS, GOOD)
    for mid, machine in machines(fly_api).items():
        after = copy.deepcopy(machine.config)
        assert after.pop('image') == GOOD
        marks = ours(after['metadata'])
        for key in marks:
            del after['metadata'][key]
        expected = copy.deepcopy(before[mid])
        del expected['image']
        assert after == expected                      # services, checks, env, guest, restart, metadata
        assert json.loads(marks[fly.META_LAST_STABLE])['release'] == 3
        assert json.loads(marks[fly.META_ROLLED_BACK])['to_image'] == GOOD
        assert marks[fly.META_ROLLOUT] == result['deployment_id']
        assert machine.state == 'started' and machine.check_status(time.time()) == 'passing'
    assert leases(fly_api) == {}
    assert result['rollout_state'] == 'COMPLETED' and sorted(result['updated']) == sorted(IDS)
    assert (result['from'], result['to'], result['to_id'], result['marked_stable']) == ('v5', 'v3', 3, True)
    # A second identical run changes nothing, and previous does not walk further back.
    seen = instances(fly_api)
    again = roll(fly_api, release='previous', mark_stable=True)
    assert not again.get('failed') and not again['changed'] and instances(fly_api) == seen
    assert info(fly_api)['target']['id'] == 3


def test_another_holders_lease_refuses_before_any_machine_changes(fly_api):
    with fly_api.state.lock:
        fly_api.state.take_lease(fly_api.state.machines[APP][IDS[1]], None, 120, 'manual hotfix by alice',
                                 owner='alice@hotelbot.example')
    seen, metadata = instances(fly_api), dict((mid, dict(m.config['metadata'])) for mid, m in machines(fly_api).items())
    result = roll(fly_api, release='previous')
    assert result['failed'] and not result['changed']
    assert 'alice@hotelbot.example' in result['msg'] and 'manual hotfix by alice' in result['msg']
    assert instances(fly_api) == seen and images(fly_api) == dict.fromkeys(IDS, BAD)
    assert dict((mid, dict(m.config['metadata'])) for mid, m in machines(fly_api).items()) == metadata
    assert list(leases(fly_api)) == [IDS[1]]


@pytest.mark.parametrize('on_failure', ['revert', 'stop'])
def test_a_machine_that_never_starts_stops_the_roll(fly_api, on_failure):
    seen = instances(fly_api)
    result = roll(fly_api, release='4', on_failure=on_failure, mark_stable=True, wait_timeout=20)
    assert result['failed'] and 'stopped' in result['msg']
    first = result['updated'][0]
    untouched = [mid for mid in IDS if mid != first]
    assert result['updated'] == [first]
    assert dict((mid, instances(fly_api)[mid]) for mid in untouched) == dict((mid, seen[mid]) for mid in untouched)
    assert dict((mid, images(fly_api)[mid]) for mid in untouched) == dict.fromkeys(untouched, BAD)
    assert images(fly_api)[first] == (BAD if on_failure == 'revert' else CRASH)
    assert result['rollout_state'] == ('REVERTED' if on_failure == 'revert' else 'FAILED')
    assert not any(fly.META_LAST_STABLE in m.config['metadata'] for m in machines(fly_api).values())
    assert leases(fly_api) == {}
    assert all(key in result for key in ('machines', 'events', 'deployment_id', 'waited_s', 'diff', 'to', 'from'))


def test_429_and_503_bursts_are_retried_and_the_roll_completes(fly_api):
    fly_api.state.faults['status_burst'] = dict(status=429, count=2, retry_after=1)
    result = roll(fly_api, image=GOOD)
    assert not result.get('failed'), result['msg']
    fly_api.state.faults['status_burst'] = dict(status=503, count=2, retry_after=1)
    second = roll(fly_api, release='3', force=True, max_unavailable='1.0')
    assert not second.get('failed'), second['msg']
    assert images(fly_api) == dict.fromkeys(IDS, GOOD) and leases(fly_api) == {}


def test_api_down_mid_roll_then_a_rerun_converges_updating_each_machine_once(fly_api):
    fly_api.state.faults['down_after'] = 22
    started = time.time()
    result = roll(fly_api, image=GOOD, lease_ttl=5)
    assert result['failed'] and result['rollout_state'] == 'STOPPED' and 're-run' in result['msg']
    assert 1 <= sum(image == GOOD for image in images(fly_api).values()) < 3
    for lease in leases(fly_api).values():   # released, or lapsing within lease_ttl
        assert lease['expires_at'] <= started + 5 + 30
    fly_api.state.faults.update(down=False, down_after=None)
    time.sleep(max(0.0, max([lease['expires_at'] for lease in leases(fly_api).values()] or [0]) - time.time()))
    again = roll(fly_api, image=GOOD)
    assert not again.get('failed'), again['msg']
    assert images(fly_api) == dict.fromkeys(IDS, GOOD)
    assert [len(updates(fly_api, mid)) for mid in IDS] == [1, 1, 1]


def test_check_mode_and_bad_input_leave_every_machine_as_it_was(fly_api):
    seen = instances(fly_api)
    planned = roll(fly_api, check_mode=True, release='previous')
    assert planned['changed'] and planned['diff']['after']['machines'] == dict.fromkeys(IDS, GOOD)
    assert planned['diff']['before']['machines'] == dict.fromkeys(IDS, BAD)
    for given in (dict(app='no-such-app', release='previous'), dict(release='9'), dict(release='3', max_unavailable=1.5)):
        failed = roll(fly_api, **given)
        assert failed['failed'] and not failed['changed'], given
    assert 'v9 does not exist' in roll(fly_api, release='9')['msg']
    assert instances(fly_api) == seen and leases(fly_api) == {}
    assert not any(ours(m.config['metadata']) for m in machines(fly_api).values())


def test_scale_stop_then_restore(fly_api):
    stopped = roll(fly_api, scale='stop')
    assert not stopped.get('failed'), stopped['msg']
    assert [m.state for m in machines(fly_api).values()] == ['stopped'] * 3
    assert all(fly.META_STOPPED_BY_SCALE in m.config['metadata'] for m in machines(fly_api).values())
    assert not roll(fly_api, scale='stop')['changed']
    restored = roll(fly_api, scale='restore')
    assert not restored.get('failed'), restored['msg']
    assert [m.state for m in machines(fly_api).values()] == ['started'] * 3
    assert not any(fly.META_STOPPED_BY_SCALE in m.config['metadata'] for m in machines(fly_api).values())


def test_a_plain_bearer_token_works_and_the_token_is_never_in_the_result(fly_api):
    result = roll(fly_api, api_token=TOKEN[len('FlyV1 '):], release='previous')
    assert not result.get('failed'), result['msg']
    assert TOKEN[len('FlyV1 '):] not in json.dumps(result)


def test_a_slow_machine_keeps_its_lease_while_the_run_waits(fly_api):
    """lease_ttl shorter than the start: the run refreshes its lease (with the nonce) while it waits."""
    fly_api.state.start_seconds, fly_api.state.check_seconds = 4.0, 0.5
    samples = []

    def sample(operation, found, body):
        if operation in ('Machines_show', 'Machines_wait') and found.get('id') == IDS[0]:
            machine = fly_api.state.machines[APP][IDS[0]]
            if machine.image == GOOD:
                samples.append(machine.active_lease(time.time()) is not None)
        return body

    fly_api.state.response_hook = sample
    try:
        result = roll(fly_api, image=GOOD, lease_ttl=3, max_unavailable=1)
    finally:
        fly_api.state.response_hook = None
    assert not result.get('failed'), result['msg']
    assert len(samples) >= 3 and all(samples), samples
    assert leases(fly_api) == {}
