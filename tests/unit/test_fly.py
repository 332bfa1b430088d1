"""Unit tests of module_utils.fly / fly_roll: resolution (pure), the specs, and the roll against a small
in-memory stand-in of the Machines API (FakeMachines below). The real double is in test_fly_double.py."""
import copy
import json

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.hotelbot.ops.plugins.module_utils import fly, fly_roll
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, Task, execute
from ansible_collections.hotelbot.ops.plugins.modules import fly_release, fly_release_info

REPO = 'registry.fly.io/hotel-voice-bot'
GOOD, CRASH, BAD = REPO + ':1.2.0', REPO + ':1.3.0-crash', REPO + ':1.3.0-bad'


def release_node(version, status, image, stable=False):
    return dict(version=version, status=status, image_ref=image, description='deploy', reason='deploy',
                created_at='2026-11-%02dT10:00:00Z' % version, user='ops@example.com', stable=stable, id='r%d' % version)


RELEASES = [release_node(5, 'complete', BAD), release_node(4, 'failed', CRASH), release_node(3, 'complete', GOOD, True),
            release_node(2, 'complete', REPO + ':1.1.0'), release_node(1, 'complete', REPO + ':1.0.0')]


class FakeGraphQL:
    def __init__(self, releases=None):
        self._releases = copy.deepcopy(RELEASES if releases is None else releases)

    def releases(self, app, limit):
        if app != 'hotel-voice-bot':
            raise OpsError('Fly app %s not found' % app)
        return self._releases[:limit]


class FakeMachines:
    """Machines that start at once, unless their image says -crash (stopped) or -bad (check critical)."""

    def __init__(self, images=(BAD, BAD, BAD)):
        self.vms = {}
        self.leases = {}
        self.updates = []
        self.fail_after = None
        for index, image in enumerate(images):
            mid = 'm%d' % index
            self.vms[mid] = dict(
                id=mid, name='vm-%d' % index, region='ams' if index < 2 else 'fra', state='started',
                instance_id='i%d-0' % index, created_at='2026-11-0%dT00:00:00Z' % (index + 1),
                config=dict(image=image, env=dict(PORT='8080'), guest=dict(cpus=1, memory_mb=512),
                            services=[dict(internal_port=8080, ports=[dict(port=443)])],
                            checks=dict(http=dict(type='http', port=8080, path='/api/health')),
                            restart=dict(policy='always'), mounts=[],
                            metadata={'fly_process_group': 'app', 'team': 'bots'}),
                checks=[dict(name='http', status='passing')])

    def _tick(self):
        if self.fail_after is not None:
            if self.fail_after <= 0:
                raise OpsError('Fly Machines API error: connection refused')
            self.fail_after -= 1

    def machines_list(self):
        return [copy.deepcopy(m) for m in self.vms.values()]

    def machines(self):
        self._tick()
        return self.machines_list()

    def machine(self, machine_id):
        self._tick()
        return copy.deepcopy(self.vms[machine_id])

    def _held_by_other(self, machine_id, nonce):
        lease = self.leases.get(machine_id)
        return lease is not None and lease['nonce'] != nonce

    def update(self, machine_id, config, nonce):
        self._tick()
        if self._held_by_other(machine_id, nonce):
            raise fly.LeaseHeld(machine_id, self.leases[machine_id])
        machine = self.vms[machine_id]
        self.updates.append((machine_id, config['image']))
        machine['config'] = copy.deepcopy(config)
        machine['instance_id'] = '%s-%d' % (machine_id, len(self.updates))
        crash, bad = '-crash' in config['image'], '-bad' in config['image']
        machine['state'] = 'stopped' if crash else 'started'
        machine['checks'] = [dict(name='http', status='critical' if bad else 'passing')]
        return copy.deepcopy(machine)

    def wait(self, machine_id, instance_id, state, timeout):
        self._tick()
        return self.vms[machine_id]['state'] == state

    def start(self, machine_id, nonce=None):
        self.vms[machine_id]['state'] = 'started'

    def stop(self, machine_id, nonce=None):
        self.vms[machine_id]['state'] = 'stopped'

    def events(self, machine_id):
        return [dict(type='exit', status='failed', request=dict(exit_event=dict(exit_code=1)))]

    def lease(self, machine_id):
        self._tick()
        return copy.deepcopy(self.leases.get(machine_id))

    def acquire_lease(self, machine_id, ttl, description, nonce=None):
        self._tick()
        if self._held_by_other(machine_id, nonce):
            raise fly.LeaseHeld(machine_id, self.leases[machine_id])
        self.leases[machine_id] = dict(nonce='n-' + machine_id, owner='ops@example.com', description=description,
                                       expires_at=4102444800)
        return copy.deepcopy(self.leases[machine_id])

    def release_lease(self, machine_id, nonce):
        self._tick()
        self.leases.pop(machine_id, None)
        return True

    def set_metadata(self, machine_id, key, value, nonce=None):
        self._tick()
        self.vms[machine_id]['config']['metadata'][key] = value

    def delete_metadata(self, machine_id, key, nonce=None):
        self.vms[machine_id]['config']['metadata'].pop(key, None)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(seconds, 0.01)


def params(**given):
    validation = ArgumentSpecValidator(fly_release.SPEC['argument_spec'],
                                       mutually_exclusive=fly_release.SPEC['mutually_exclusive'])
    result = validation.validate(dict(dict(app='hotel-voice-bot', api_token='FlyV1 fm2_secret'), **given))
    assert not result.error_messages, result.error_messages
    return result.validated_parameters


def roll(api, graphql=None, check_mode=False, **given):
    clock = Clock()
    task = Task(params(**given), check_mode=check_mode, diff=True)
    return execute(fly_release.SPEC, lambda t: fly_roll.release(t, (api, graphql or FakeGraphQL()), clock.sleep, clock),
                   task)


def images(api):
    return dict((mid, m['config']['image']) for mid, m in api.vms.items())


# --------------------------------------------------------------------------- resolution (pure)

def current_of(images_running):
    return fly.view(fly.current_image(RELEASES, images_running), RELEASES)


def test_previous_is_newest_complete_older_release_with_another_image():
    current = current_of({BAD: ['m0']})
    target, reason = fly.resolve('previous', None, RELEASES, current, None, None)
    assert (target['release'], target['image_ref'], target['label'], target['version']) == (3, GOOD, 'v3', '1.2.0')
    assert 'older than v5' in reason


def test_previous_after_a_rollback_stays_put():
    current = current_of({GOOD: ['m0']})
    marker = dict(from_image=BAD, to_image=GOOD, at='2026-12-01T00:00:00Z')
    target, reason = fly.resolve('previous', None, RELEASES, current, None, marker)
    assert target['image_ref'] == GOOD and 'already rolled back' in reason
    # Without the marker it would walk back once more (v2).
    assert fly.resolve('previous', None, RELEASES, current, None, None)[0]['release'] == 2


def test_mixed_machines_count_as_the_newest_release_among_them():
    assert current_of({GOOD: ['m0', 'm1'], BAD: ['m2']})['release'] == 5


def test_last_stable_from_the_ledger_then_from_fly_flag():
    current = current_of({BAD: ['m0']})
    ledger = dict(image=REPO + ':1.1.0', release=2, at='2026-12-01T00:00:00Z')
    assert fly.resolve('last_stable', None, RELEASES, current, ledger, None)[0]['release'] == 2
    assert fly.resolve('last_stable', None, RELEASES, current, None, None)[0]['release'] == 3
    unflagged = [dict(r, stable=False) for r in RELEASES]
    with pytest.raises(OpsError, match='no release of this app is marked stable'):
        fly.resolve('last_stable', None, unflagged, current, None, None)


def test_named_versions_and_images():
    current = current_of({BAD: ['m0']})
    assert fly.resolve('v2', None, RELEASES, current, None, None)[0]['release'] == 2
    assert fly.resolve(3, None, RELEASES, current, None, None)[0]['image_ref'] == GOOD
    with pytest.raises(OpsError, match='release v9 does not exist'):
        fly.resolve('9', None, RELEASES, current, None, None)
    patch = fly.resolve(None, None, RELEASES, current, None, None) and fly.resolve('x', REPO + ':1.2.1', RELEASES,
                                                                                   current, None, None)[0]
    assert (patch['id'], patch['label'], patch['release'], patch['version']) == (REPO + ':1.2.1', REPO + ':1.2.1', None, '1.2.1')


def test_token_forms():
    assert fly.authorization('FlyV1 fm2_abc') == 'FlyV1 fm2_abc'
    assert fly.authorization('plain123') == 'Bearer plain123'
    assert fly.token_of({}, environ={'FLY_API_TOKEN': 'fromenv'}) == 'fromenv'
    with pytest.raises(OpsError, match='no Fly API token'):
        fly.token_of({}, environ={})


def test_max_unavailable():
    assert fly_roll.unavailable_count(2, 3) == 2
    assert fly_roll.unavailable_count('0.5', 4) == 2
    assert fly_roll.unavailable_count(0.2, 3) == 1
    assert fly_roll.unavailable_count(1.0, 3) == 3
    for bad in (0, 1.5, -1, 'x', True):
        with pytest.raises(OpsError, match='max_unavailable'):
            fly_roll.unavailable_count(bad, 3)


def test_specs_refuse_image_with_release():
    for spec in (fly_release.SPEC, fly_release_info.SPEC):
        validator = ArgumentSpecValidator(spec['argument_spec'], mutually_exclusive=spec['mutually_exclusive'])
        result = validator.validate(dict(app='a', release='previous', image='x:1'))
        assert result.error_messages and 'mutually exclusive' in result.error_messages[0]
        assert spec['argument_spec']['api_token']['no_log'] is True


# --------------------------------------------------------------------------- the roll (FakeMachines)

def test_roll_back_updates_every_machine_with_only_the_image_changed():
    api = FakeMachines()
    before = api.machines_list()
    result = roll(api, release='previous', mark_stable=True)
    assert not result.get('failed'), result['msg']
    assert images(api) == dict(m0=GOOD, m1=GOOD, m2=GOOD)
    for old in before:
        new = api.vms[old['id']]['config']
        expected = copy.deepcopy(old['config'])
        expected['image'] = GOOD
        for key in list(new['metadata']):
            if key.startswith('hotelbot.ops/'):
                new = copy.deepcopy(new)
                del new['metadata'][key]
        assert new == expected
    assert api.leases == {}
    stable = json.loads(api.vms['m0']['config']['metadata'][fly.META_LAST_STABLE])
    assert (stable['image'], stable['release']) == (GOOD, 3)
    marker = json.loads(api.vms['m2']['config']['metadata'][fly.META_ROLLED_BACK])
    assert (marker['from_image'], marker['to_image']) == (BAD, GOOD)
    assert result['rollout_state'] == 'COMPLETED' and result['changed'] and result['to_id'] == 3
    # Again: previous stays where it landed, nothing changes.
    again = roll(api, release='previous', mark_stable=True)
    assert not again.get('failed') and not again['changed'] and images(api) == dict(m0=GOOD, m1=GOOD, m2=GOOD)


def test_lease_of_another_holder_refuses_before_anything_changes():
    api = FakeMachines()
    api.leases['m2'] = dict(nonce='theirs', owner='alice@example.com', description='manual fix', expires_at=4102444800)
    result = roll(api, release='previous')
    assert result['failed'] and 'alice@example.com' in result['msg'] and 'manual fix' in result['msg']
    assert images(api) == dict(m0=BAD, m1=BAD, m2=BAD) and api.updates == []
    assert not any(k.startswith('hotelbot.ops/') for m in api.vms.values() for k in m['config']['metadata'])


def test_machine_that_never_starts_stops_the_roll_and_revert_puts_it_back():
    api = FakeMachines(images=(GOOD, GOOD, GOOD))
    result = roll(api, release='4', on_failure='revert', mark_stable=True)
    assert result['failed'] and result['rollout_state'] == 'REVERTED'
    assert images(api) == dict(m0=GOOD, m1=GOOD, m2=GOOD)
    assert [u for u in api.updates if u[1] == CRASH] == [('m0', CRASH)]   # m1, m2 never touched
    assert fly.META_LAST_STABLE not in api.vms['m0']['config']['metadata']
    assert api.leases == {}


def test_critical_check_with_stop_leaves_the_rest_untouched():
    api = FakeMachines(images=(GOOD, GOOD, GOOD))
    result = roll(api, image=BAD, on_failure='stop')
    assert result['failed'] and result['rollout_state'] == 'FAILED' and 'critical' in result['msg']
    assert images(api) == dict(m0=BAD, m1=GOOD, m2=GOOD)
    assert [m['updated'] for m in result['machines']] == [True, False, False]


def test_check_mode_and_diff_change_nothing():
    api = FakeMachines()
    result = roll(api, check_mode=True, release='previous')
    assert result['changed'] and api.updates == [] and api.leases == {}
    assert result['diff']['after']['machines'] == dict(m0=GOOD, m1=GOOD, m2=GOOD)
    assert result['diff']['before']['machines'] == dict(m0=BAD, m1=BAD, m2=BAD)


def test_api_down_mid_roll_stops_and_a_rerun_converges_without_updating_twice():
    api = FakeMachines()
    api.fail_after = 16          # enough for the first Machine, not the rest
    result = roll(api, image=GOOD)
    assert result['failed'] and result['rollout_state'] == 'STOPPED' and 're-run' in result['msg']
    done = [mid for mid, image in images(api).items() if image == GOOD]
    assert 1 <= len(done) < 3
    api.fail_after = None
    api.leases.clear()   # they lapse by ttl on Fly
    again = roll(api, image=GOOD)
    assert not again.get('failed'), again['msg']
    assert images(api) == dict(m0=GOOD, m1=GOOD, m2=GOOD)
    assert sorted(update[0] for update in api.updates) == ['m0', 'm1', 'm2']   # each updated once


def test_expected_current_mismatch_refuses():
    api = FakeMachines()
    result = roll(api, release='previous', expected_current=3)
    assert result['failed'] and 'nothing was changed' in result['msg'] and api.updates == []
    assert roll(api, release='previous', expected_current='v5', check_mode=True)['changed']


def test_scale_stop_and_restore():
    api = FakeMachines()
    api.vms['m2']['state'] = 'stopped'
    stopped = roll(api, scale='stop')
    assert not stopped.get('failed'), stopped['msg']
    assert [m['state'] for m in api.vms.values()] == ['stopped'] * 3
    assert fly.META_STOPPED_BY_SCALE not in api.vms['m2']['config']['metadata']
    restored = roll(api, scale='restore')
    assert not restored.get('failed') and restored['updated'] == ['m0', 'm1']
    assert [m['state'] for m in api.vms.values()] == ['started', 'started', 'stopped']
