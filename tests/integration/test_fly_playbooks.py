"""rollback.yml, hotpatch.yml and auto_rollback.yml on Fly.io: the same playbooks, called the same way,
on inventory/sandbox's host sandbox_fly (hotelbot_platform: fly), against the sandbox's Fly double and the
bot that follows its Machines. Assertions are on the double's state (each Machine's image, state, lease
and metadata), on the version the Fly bot serves, and on the database's rows; every request the
collection sent and every answer the double gave validated against Fly's spec (spec_errors)."""
import glob
import json
import os
import shutil

import pytest

from test_db_rollback import damage, fingerprint

V3 = 'registry.fly.io/hotel-voice-bot:1.2.0'     # the good release, v3
V4 = 'registry.fly.io/hotel-voice-bot:1.3.0-crash'  # v4: never starts
V5 = 'registry.fly.io/hotel-voice-bot:1.3.0-bad'    # v5: serving, failing
LEDGER = 'hotelbot.ops/last-stable'


def on_fly(playbook):
    """The extra var that points a playbook at the sandbox's Fly host (its own group, beside the ECS one)."""
    return ('-e', '%s_hosts=hotelbot_fly' % {'rollback.yml': 'rollback', 'hotpatch.yml': 'hotpatch',
                                             'playbooks/auto_rollback.yml': 'auto_rollback',
                                             'playbooks/backup.yml': 'backup'}[playbook])


def run(sandbox, *extra, playbook='rollback.yml', timeout=400):
    sandbox.metrics_history()
    return sandbox.playbook(*on_fly(playbook), *extra, playbook=playbook, timeout=timeout)


def machines(sandbox, app=None):
    return sandbox.fly_state()['apps'][app or sandbox.state['fly']['app']]['machines']


def images(sandbox, app=None):
    return {mid: m['image'] for mid, m in machines(sandbox, app).items()}


def instances(sandbox, app=None):
    return {mid: m['instance_id'] for mid, m in machines(sandbox, app).items()}


def stable_image(sandbox, app=None):
    """The image the ledger names on every Machine (None when a Machine has no mark, or they differ)."""
    marks = {m['metadata'].get(LEDGER) for m in machines(sandbox, app).values()}
    if len(marks) != 1 or None in marks:
        return None
    return json.loads(marks.pop())['image']


def assert_no_lease(sandbox, app=None):
    assert {mid: m['lease'] for mid, m in machines(sandbox, app).items() if m['lease']} == {}


@pytest.fixture
def fly(fresh):
    """The sandbox fresh, Fly Machines starting in 0.3 s; after the test, no request or answer that broke the spec."""
    fresh.fly_settings(start_seconds=0.3)
    yield fresh
    assert fresh.fly_state()['spec_errors'] == []


def roll_back_and_mark(sandbox):
    """The first rollback: v5 -> v3 (previous), verified and marked stable; the precondition of others."""
    done = run(sandbox, '-e', 'rollback_target=previous')
    assert done.returncode == 0, done.stdout[-4000:]
    assert set(images(sandbox).values()) == {V3} and stable_image(sandbox) == V3


def test_a_rollback_puts_every_machine_back_and_a_rerun_changes_nothing(fly):
    assert set(images(fly).values()) == {V5}
    roll_back_and_mark(fly)
    assert all(m['state'] == 'started' and m['checks'] == 'passing' for m in machines(fly).values())
    assert_no_lease(fly)
    fly.wait_fly_bot_version('1.2.0')
    assert fly.fly_bot()[0] == 200
    # The same command again: v3 runs and is marked, so nothing is updated (and previous does not walk on).
    before = instances(fly)
    again = run(fly, '-e', 'rollback_target=previous')
    assert again.returncode == 0, again.stdout[-3000:]
    assert instances(fly) == before and set(images(fly).values()) == {V3}
    assert_no_lease(fly)


def test_check_mode_changes_nothing(fly):
    before = machines(fly)
    checked = run(fly, '--check', '--diff', '-e', 'rollback_target=previous')
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert machines(fly) == before


def test_a_lease_held_by_someone_else_refuses_before_anything_changes(fly):
    newest = max(machines(fly).items(), key=lambda item: (item[1]['created_at'], item[0]))[0]
    fly.fly_lease(newest, owner='oncall@example.com', description='fly deploy by a colleague', ttl=120)
    before = instances(fly)
    refused = run(fly, '-e', 'rollback_target=previous')
    assert refused.returncode == 2
    assert instances(fly) == before and set(images(fly).values()) == {V5}
    held = {mid: m['lease'] for mid, m in machines(fly).items() if m['lease']}
    assert list(held) == [newest] and held[newest]['owner'] == 'oncall@example.com'
    assert stable_image(fly) is None


def test_a_machine_that_never_starts_stops_the_roll_and_puts_it_back(fly):
    """v4 never starts: the first Machine is reverted to the image it ran, the others are never touched,
    nothing is marked stable, no lease is left."""
    before = instances(fly)
    failed = run(fly, '-e', 'rollback_target=4', '-e', 'rollback_wait_timeout=20')
    assert failed.returncode == 2
    after = machines(fly)
    assert set(m['image'] for m in after.values()) == {V5}
    touched = [mid for mid in after if after[mid]['instance_id'] != before[mid]]
    assert len(touched) == 1, touched   # max_unavailable 1: the roll stopped at the first Machine
    assert all(m['state'] == 'started' for m in after.values())
    assert stable_image(fly) is None
    assert_no_lease(fly)


def test_a_good_hotpatch_goes_through_staging_and_ends_marked_stable(fly):
    roll_back_and_mark(fly)
    good = 'registry.fly.io/hotel-voice-bot:1.2.1'
    shipped = run(fly, '-e', 'hotpatch_change_id=CHG-7', '-e', 'hotpatch_tests_passed=true', '-e', 'hotpatch_image=' + good,
                  '-e', 'hotpatch_watch_for=20s', '-e', 'hotpatch_backup=false', playbook='hotpatch.yml')
    assert shipped.returncode == 0, shipped.stdout[-4000:]
    assert set(images(fly, fly.state['fly']['staging_app']).values()) == {good}
    assert set(images(fly).values()) == {good} and stable_image(fly) == good
    fly.wait_fly_bot_version('1.2.1')
    assert_no_lease(fly)


def test_a_hotpatch_that_fails_in_production_is_rolled_back_to_the_last_stable(fly):
    roll_back_and_mark(fly)
    crash = 'registry.fly.io/hotel-voice-bot:1.2.2-crash'
    failed = run(fly, '-e', 'hotpatch_change_id=CHG-8', '-e', 'hotpatch_tests_passed=true', '-e', 'hotpatch_image=' + crash,
                 '-e', 'hotpatch_staging=false', '-e', 'hotpatch_backup=false', '-e', 'hotpatch_wait_timeout=20',
                 playbook='hotpatch.yml')
    assert failed.returncode == 2
    assert set(images(fly).values()) == {V3} and stable_image(fly) == V3
    assert all(m['state'] == 'started' for m in machines(fly).values())
    assert_no_lease(fly)


def test_auto_rollback_undoes_a_bad_release_shipped_by_hand(fly):
    roll_back_and_mark(fly)
    # Someone ships v5's image by hand (as `fly deploy --image` would, through the Machines API).
    for machine_id in machines(fly):
        status, machine = fly.fly_api('GET', '/v1/apps/%s/machines/%s' % (fly.state['fly']['app'], machine_id))
        config = dict(machine['config'], image=V5)
        status, _body = fly.fly_api('POST', '/v1/apps/%s/machines/%s' % (fly.state['fly']['app'], machine_id),
                                    {'config': config})
        assert status == 200
    fly.wait_fly_bot_version('1.3.0-bad')
    rolled = run(fly, playbook='playbooks/auto_rollback.yml')
    assert rolled.returncode == 0, rolled.stdout[-4000:]
    assert set(images(fly).values()) == {V3}
    fly.wait_fly_bot_version('1.2.0')
    assert_no_lease(fly)


def test_a_database_rollback_on_fly_restores_the_rows_and_starts_the_machines_again(fly):
    roll_back_and_mark(fly)   # the seed serves the bad v5: verification after the restore needs a good app
    for path in glob.glob(os.path.join(fly.dir, 'backups', '*')):
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    good = fingerprint(fly)
    backup = fly.playbook(*on_fly('playbooks/backup.yml'), playbook='playbooks/backup.yml')
    assert backup.returncode == 0, backup.stdout[-3000:]
    path = sorted(p[:-len('.manifest.json')] for p in glob.glob(os.path.join(fly.dir, 'backups', '*.manifest.json')))[-1]
    damage(fly)
    restored = run(fly, '-e', 'rollback_scope=db', '-e', 'rollback_db_backup=' + path, '-e', 'rollback_db_mode=offline')
    assert restored.returncode == 0, restored.stdout[-4000:]
    assert fingerprint(fly) == good
    # Offline mode stopped the Machines for the restore and started every one of them again, on the same image.
    calls = fly.fly_calls()
    assert calls.get('Machines_stop') == 3 and calls.get('Machines_start') == 3, calls
    assert all(m['state'] == 'started' for m in machines(fly).values())
    assert not any('hotelbot.ops/stopped-by-scale' in m['metadata'] for m in machines(fly).values())
    assert set(images(fly).values()) == {V3}
    assert_no_lease(fly)
