"""release_lock against the sandbox's real PostgreSQL: module_utils directly, and the module through
`ansible` / `ansible-playbook`. Every assertion on the lease is checked on the row in the database.

Each test uses its own lock name (or its own table) and removes what it created.
"""
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid

import psycopg
import pytest
from psycopg import sql

from ansible_collections.hotelbot.ops.plugins.module_utils import release_lock as r
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError

from tests.integration.conftest import BIN, ROOT

TABLE = 'hotelbot_release_locks'


def app_params(sandbox, **overrides):
    """Module params for the app role over TCP with its password (the way a play would connect)."""
    pg = sandbox.state['postgres']
    params = dict(host=pg['host'], port=pg['port'], user=pg['user'], password=sandbox.secrets['postgres_password'],
                  database=pg['database'], sslmode=None, sslrootcert=None, passfile=None, connect_timeout=5,
                  connect_params={}, name=None, state='acquired', owner=None, purpose='', ttl='30m', wait=0,
                  renew=True, fail_when_held=True, force=False, schema='public', table=TABLE)
    params.update(overrides)
    return params


def superuser(sandbox):
    pg = sandbox.state['postgres']
    return psycopg.connect(host=pg['socket_dir'], port=pg['port'], user=pg['superuser'], dbname=pg['database'],
                           autocommit=True, connect_timeout=5)


def lease_row(sandbox, name, table=TABLE):
    """The lease row as the database has it (dict), or None."""
    with superuser(sandbox) as conn:
        if conn.execute('SELECT to_regclass(%s)', ('public.%s' % table,)).fetchone()[0] is None:
            return None
        cursor = conn.execute(sql.SQL('SELECT *, expires_at - acquired_at AS ttl, expires_at <= now() AS expired '
                                      'FROM {} WHERE name = %s').format(sql.Identifier('public', table)), (name,))
        row = cursor.fetchone()
        return None if row is None else dict(zip([d.name for d in cursor.description], row))


def table_exists(sandbox, table):
    with superuser(sandbox) as conn:
        return conn.execute('SELECT to_regclass(%s)', ('public.%s' % table,)).fetchone()[0] is not None


def expire(sandbox, name, seconds_ago=60):
    with superuser(sandbox) as conn:
        conn.execute(sql.SQL("UPDATE {} SET expires_at = now() - make_interval(secs => %s) WHERE name = %s").format(
            sql.Identifier('public', TABLE)), (seconds_ago, name))


@pytest.fixture
def lock_name(sandbox):
    """A fresh lock name; its row is deleted afterwards."""
    name = 'ecs/test/%s' % uuid.uuid4().hex[:10]
    yield name
    with superuser(sandbox) as conn:
        if conn.execute('SELECT to_regclass(%s)', ('public.' + TABLE,)).fetchone()[0] is not None:
            conn.execute(sql.SQL('DELETE FROM {} WHERE name = %s').format(sql.Identifier('public', TABLE)), (name,))


@pytest.fixture
def scratch_table(sandbox):
    """A table name not yet created; dropped afterwards."""
    name = 'locks_%s' % uuid.uuid4().hex[:8]
    yield name
    with superuser(sandbox) as conn:
        conn.execute(sql.SQL('DROP TABLE IF EXISTS {}').format(sql.Identifier('public', name)))


def ansible_cmd(args, check_mode=False, diff=False, verbosity=None):
    cmd = [os.path.join(BIN, 'ansible'), 'localhost', '-o', '-m', 'hotelbot.ops.release_lock', '-a', json.dumps(args)]
    if check_mode:
        cmd.append('--check')
    if diff:
        cmd.append('--diff')
    if verbosity:
        cmd.append(verbosity)
    return cmd


def ansible_env():
    return dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
                PATH=BIN + os.pathsep + os.environ.get('PATH', ''))


def parse(stdout, output):
    line = [ln for ln in stdout.splitlines() if ln.startswith('localhost |')]
    assert line, output
    return json.loads(line[0].split('=>', 1)[1])


def adhoc(args, check_mode=False, verbosity=None):
    """Run the module once with `ansible localhost -m`, return (rc, result dict, raw output)."""
    completed = subprocess.run(ansible_cmd(args, check_mode, verbosity=verbosity), cwd=ROOT, env=ansible_env(),
                               capture_output=True, text=True, timeout=120, check=False)
    output = completed.stdout + completed.stderr
    return completed.returncode, parse(completed.stdout, output), output


def module_args(sandbox, **args):
    pg = sandbox.state['postgres']
    base = dict(host=pg['host'], port=pg['port'], user=pg['user'], password=sandbox.secrets['postgres_password'],
                database=pg['database'])
    base.update(args)
    return base


# --------------------------------------------------------------------------- acquire / refuse / renew

def test_acquire_writes_the_lease_row(sandbox, lock_name):
    rc, result, output = adhoc(module_args(sandbox, name=lock_name, owner='alice@ci/1', purpose='hotpatch CHG-1',
                                           ttl='20m'))
    assert rc == 0, output
    assert result['changed'] is True and result['acquired'] is True and result['renewed'] is False
    assert result['took_over'] is None
    row = lease_row(sandbox, lock_name)
    assert row['owner'] == 'alice@ci/1' and row['purpose'] == 'hotpatch CHG-1'
    assert row['ttl'].total_seconds() == 1200 and row['expired'] is False
    assert row['db_user'] == 'hotelbot' and row['host'] and str(row['client_addr']) == '127.0.0.1'
    assert result['holder']['owner'] == 'alice@ci/1'
    assert result['holder']['expires_at'] == row['expires_at'].astimezone(
        __import__('datetime').timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
    assert 1190 < result['holder']['remaining_s'] <= 1200
    assert result['msg'].startswith("acquired release lock '%s' for alice@ci/1, expires in 20m" % lock_name)


def test_second_owner_is_refused_naming_the_holder(sandbox, lock_name):
    r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1', purpose='hotpatch CHG-1'))
    before = lease_row(sandbox, lock_name)
    rc, result, output = adhoc(module_args(sandbox, name=lock_name, owner='bob@laptop/2', purpose='rollback'))
    assert rc != 0, output
    assert 'Traceback' not in output
    assert result['changed'] is False and result['acquired'] is False
    assert result['msg'].startswith("release lock '%s' is held by alice@ci/1 for 'hotpatch CHG-1' since %s "
                                    "(expires in 29m" % (lock_name, result['holder']['acquired_at']))
    assert result['msg'].endswith('to break it now, re-run the playbook with -e release_break_lock=alice@ci/1')
    assert result['holder']['owner'] == 'alice@ci/1'
    assert lease_row(sandbox, lock_name) == before  # untouched


def test_fail_when_held_false_returns_quietly(sandbox, lock_name):
    r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1'))
    before = lease_row(sandbox, lock_name)
    result = r.run_release_lock(app_params(sandbox, name=lock_name, owner='auto-rollback/9', fail_when_held=False))
    assert result['acquired'] is False and result['changed'] is False
    assert result['holder']['owner'] == 'alice@ci/1'
    assert 'fail_when_held=false: not acquired' in result['msg']
    assert lease_row(sandbox, lock_name) == before


def test_same_owner_renews_and_renew_false_keeps(sandbox, lock_name):
    first = r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1', purpose='hotpatch', ttl=60))
    row1 = lease_row(sandbox, lock_name)
    time.sleep(1.1)
    again = r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1', purpose='hotpatch 2',
                                          ttl='10m'))
    row2 = lease_row(sandbox, lock_name)
    assert first['renewed'] is False and again['renewed'] is True and again['changed'] is True
    assert again['acquired'] is True and again['took_over'] is None
    assert row2['acquired_at'] == row1['acquired_at']          # held since the first acquire
    assert row2['expires_at'] > row1['expires_at'] and row2['renewed_at'] > row1['renewed_at']
    assert (row2['expires_at'] - row2['renewed_at']).total_seconds() == 600
    assert row2['purpose'] == 'hotpatch 2'

    kept = r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1', ttl='1h', renew=False))
    assert kept['changed'] is False and kept['acquired'] is True and kept['renewed'] is False
    assert lease_row(sandbox, lock_name) == row2


def test_expired_lease_is_taken_over(sandbox, lock_name):
    r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1', purpose='hotpatch CHG-1'))
    expire(sandbox, lock_name, 120)
    old = lease_row(sandbox, lock_name)
    assert old['expired'] is True
    rc, result, output = adhoc(module_args(sandbox, name=lock_name, owner='bob@laptop/2', purpose='rollback'))
    assert rc == 0, output
    assert result['changed'] is True and result['acquired'] is True
    assert result['took_over']['owner'] == 'alice@ci/1' and result['took_over']['purpose'] == 'hotpatch CHG-1'
    assert result['took_over']['expired'] is True and result['took_over']['remaining_s'] < -110
    assert 'took over the expired release lock' in result['msg'] and 'alice@ci/1' in result['msg']
    row = lease_row(sandbox, lock_name)
    assert row['owner'] == 'bob@laptop/2' and row['purpose'] == 'rollback' and row['expired'] is False
    assert row['acquired_at'] > old['acquired_at']


def test_wait_takes_the_lease_when_it_expires(sandbox, lock_name):
    r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1', ttl=2))
    started = time.monotonic()
    result = r.run_release_lock(app_params(sandbox, name=lock_name, owner='bob@laptop/2', wait='15s'))
    assert 1.0 <= time.monotonic() - started < 10
    assert result['acquired'] is True and result['took_over']['owner'] == 'alice@ci/1'
    assert 1.0 <= result['waited_s'] < 10
    assert lease_row(sandbox, lock_name)['owner'] == 'bob@laptop/2'


def test_wait_gives_up_with_the_holder(sandbox, lock_name):
    r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1'))
    started = time.monotonic()
    with pytest.raises(OpsError) as err:
        r.run_release_lock(app_params(sandbox, name=lock_name, owner='bob@laptop/2', wait=2))
    assert 1.9 <= time.monotonic() - started < 5
    assert 'is held by alice@ci/1' in err.value.msg and 'after waiting 2s' in err.value.msg
    assert lease_row(sandbox, lock_name)['owner'] == 'alice@ci/1'


# --------------------------------------------------------------------------- release

def test_release_by_owner_deletes_the_row(sandbox, lock_name):
    r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1'))
    rc, result, output = adhoc(module_args(sandbox, name=lock_name, owner='alice@ci/1', state='released'))
    assert rc == 0, output
    assert result['changed'] is True and result['released'] is True and result['holder']['owner'] == 'alice@ci/1'
    assert lease_row(sandbox, lock_name) is None
    again = r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1', state='released'))
    assert again['changed'] is False and again['released'] is False and again['holder'] is None
    assert again['msg'] == "release lock '%s' is not held" % lock_name


def test_release_by_other_owner_is_refused_and_force_releases(sandbox, lock_name):
    r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1', purpose='hotpatch'))
    before = lease_row(sandbox, lock_name)
    rc, result, output = adhoc(module_args(sandbox, name=lock_name, owner='bob@laptop/2', state='released'))
    assert rc != 0 and 'Traceback' not in output, output
    assert result['msg'].startswith("release lock '%s' is held by alice@ci/1 for 'hotpatch' since " % lock_name)
    assert 'not by bob@laptop/2: not released' in result['msg'] and result['changed'] is False
    assert lease_row(sandbox, lock_name) == before

    rc, result, output = adhoc(module_args(sandbox, name=lock_name, state='released', force=True))
    assert rc == 0, output
    assert result['changed'] is True and result['released'] is True and '(force=true, by ' in result['msg']
    assert result['broken']['event'] == 'forced' and result['broken']['owner'] == 'alice@ci/1'
    assert lease_row(sandbox, lock_name) is None
    with superuser(sandbox) as conn:  # the forced release is on record
        row = conn.execute(sql.SQL('SELECT event, owner FROM {} WHERE id = %s').format(
            sql.Identifier('public', TABLE + '_events')), (result['broken']['event_id'],)).fetchone()
    assert row == ('forced', 'alice@ci/1')


def test_acquire_with_break_owner_breaks_that_lease_then_takes_the_lock(sandbox, lock_name):
    """One task for a re-run after a killed one: the named dead owner's lease is broken (on record) and
    the lock taken; a lease of anyone else is refused, changing nothing."""
    r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1', purpose='hotpatch'))
    before = lease_row(sandbox, lock_name)
    rc, result, output = adhoc(module_args(sandbox, name=lock_name, owner='bob@laptop/2', break_owner='carol@ci/7'))
    assert rc != 0 and 'Traceback' not in output, output
    assert 'is held by alice@ci/1' in result['msg'] and 'not by carol@ci/7: not broken' in result['msg']
    assert lease_row(sandbox, lock_name) == before

    rc, result, output = adhoc(module_args(sandbox, name=lock_name, owner='bob@laptop/2', break_owner='alice@ci/1',
                                           purpose='rollback'))
    assert rc == 0, output
    assert result['acquired'] is True and result['broken']['owner'] == 'alice@ci/1'
    assert result['broken']['broken_by'] == 'bob@laptop/2'
    row = lease_row(sandbox, lock_name)
    assert row['owner'] == 'bob@laptop/2' and row['purpose'] == 'rollback'
    with superuser(sandbox) as conn:
        event = conn.execute(sql.SQL('SELECT event, owner FROM {} WHERE id = %s').format(
            sql.Identifier('public', TABLE + '_events')), (result['broken']['event_id'],)).fetchone()
    assert event == ('broken', 'alice@ci/1')


def test_release_without_table_is_ok(sandbox, scratch_table):
    result = r.run_release_lock(app_params(sandbox, name='x', owner='o', state='released', table=scratch_table))
    assert result['changed'] is False and result['released'] is False
    assert not table_exists(sandbox, scratch_table)


# --------------------------------------------------------------------------- check mode

def test_check_mode_creates_nothing(sandbox, scratch_table):
    rc, result, output = adhoc(module_args(sandbox, name='ecs/c/s', owner='alice@ci/1', table=scratch_table),
                               check_mode=True)
    assert rc == 0, output
    assert result['changed'] is True and result['acquired'] is True and result['table_created'] is True
    assert result['msg'].startswith("would acquire release lock 'ecs/c/s' for alice@ci/1")
    assert 'would create the lease table public.%s' % scratch_table in result['msg']
    assert not table_exists(sandbox, scratch_table)


def test_check_mode_changes_no_row(sandbox, lock_name):
    # nothing held: would acquire, writes nothing
    result = r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1'), check_mode=True)
    assert result['changed'] is True and result['msg'].startswith('would acquire')
    assert lease_row(sandbox, lock_name) is None

    r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1', purpose='hotpatch'))
    before = lease_row(sandbox, lock_name)
    rc, result, output = adhoc(module_args(sandbox, name=lock_name, owner='bob@laptop/2'), check_mode=True)
    assert rc != 0 and result['msg'].startswith("check mode: release lock '%s' is held by alice@ci/1" % lock_name)
    renew = r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1', ttl='2h'), check_mode=True)
    assert renew['changed'] is True and renew['renewed'] is True and renew['msg'].startswith('would renew')
    release = r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1', state='released'),
                                 check_mode=True)
    assert release['changed'] is True and release['msg'].startswith('would release')
    assert lease_row(sandbox, lock_name) == before

    expire(sandbox, lock_name)
    before = lease_row(sandbox, lock_name)
    takeover = r.run_release_lock(app_params(sandbox, name=lock_name, owner='bob@laptop/2'), check_mode=True)
    assert takeover['changed'] is True and takeover['took_over']['owner'] == 'alice@ci/1'
    assert takeover['msg'].startswith('would take over the expired release lock')
    assert lease_row(sandbox, lock_name) == before


def test_diff_shows_holders(sandbox, lock_name):
    r.run_release_lock(app_params(sandbox, name=lock_name, owner='alice@ci/1'))
    expire(sandbox, lock_name)
    result = r.run_release_lock(app_params(sandbox, name=lock_name, owner='bob@laptop/2'))
    assert result['diff']['before']['owner'] == 'alice@ci/1' and result['diff']['after']['owner'] == 'bob@laptop/2'


# --------------------------------------------------------------------------- concurrency

def _race(sandbox, name, owners, table=TABLE):
    """Every owner acquires at the same moment (own connection, barrier); returns {owner: result or OpsError}."""
    barrier = threading.Barrier(len(owners))
    outcomes = {}

    def contender(owner):
        params = app_params(sandbox, name=name, owner=owner, purpose='race', table=table)
        settings = r.validate(params)
        conn = r.connect(params)
        try:
            barrier.wait(timeout=30)
            # anything but OpsError is asserted against below
            try:
                outcomes[owner] = r.acquire(conn, settings)
            except Exception as err:  # pylint: disable=broad-except
                outcomes[owner] = err
        finally:
            conn.close()

    threads = [threading.Thread(target=contender, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == len(owners), outcomes
    unexpected = [o for o in outcomes.values() if not isinstance(o, (dict, OpsError))]
    assert not unexpected, unexpected
    return outcomes


def _winners(outcomes):
    return [owner for owner, outcome in outcomes.items() if isinstance(outcome, dict) and outcome['acquired']]


def test_eight_concurrent_acquires_exactly_one_wins(sandbox, scratch_table):
    """Round 1 also races the table creation; later rounds race a new name and an expired lease."""
    for round_no in range(5):
        name = 'ecs/race/%d' % round_no
        owners = ['runner-%d/%d' % (round_no, i) for i in range(8)]
        outcomes = _race(sandbox, name, owners, table=scratch_table)
        winners = _winners(outcomes)
        assert len(winners) == 1, outcomes
        losers = [o for o in outcomes.values() if isinstance(o, OpsError)]
        assert len(losers) == 7
        assert all('is held by %s' % winners[0] in err.msg for err in losers), [e.msg for e in losers]
        with superuser(sandbox) as conn:
            rows = conn.execute(sql.SQL('SELECT owner FROM {} WHERE name = %s').format(
                sql.Identifier('public', scratch_table)), (name,)).fetchall()
        assert rows == [(winners[0],)]
        assert sum(1 for o in outcomes.values() if isinstance(o, dict) and o['table_created']) <= 1

        # the same lease, expired: again exactly one takes it over
        with superuser(sandbox) as conn:
            conn.execute(sql.SQL("UPDATE {} SET expires_at = now() - interval '1 minute' WHERE name = %s").format(
                sql.Identifier('public', scratch_table)), (name,))
        owners = ['taker-%d/%d' % (round_no, i) for i in range(8)]
        outcomes = _race(sandbox, name, owners, table=scratch_table)
        takers = _winners(outcomes)
        assert len(takers) == 1, outcomes
        assert outcomes[takers[0]]['took_over']['owner'] == winners[0]
        with superuser(sandbox) as conn:
            rows = conn.execute(sql.SQL('SELECT owner FROM {} WHERE name = %s').format(
                sql.Identifier('public', scratch_table)), (name,)).fetchall()
        assert rows == [(takers[0],)]


def test_two_ansible_processes_exactly_one_acquires(sandbox, scratch_table):
    """Two real `ansible` runs, made to insert the lease row at the same moment.

    A gate transaction inserts the same name uncommitted: both modules see no lease, both INSERT and
    block on the gate's row. When both are blocked the gate rolls back, so the two upserts really
    race for a free name (one inserts, the other must be refused by the ON CONFLICT ... WHERE).
    """
    name = 'ecs/hotel-voice-bot/hotel-voice-bot-service'
    r.run_release_lock(app_params(sandbox, name='setup', owner='setup', table=scratch_table))  # creates the table
    r.run_release_lock(app_params(sandbox, name='setup', owner='setup', table=scratch_table, state='released'))
    procs = {}
    with superuser(sandbox) as gate:
        with gate.transaction():
            gate.execute(sql.SQL("INSERT INTO {} (name, owner, acquired_at, renewed_at, expires_at) "
                                 "VALUES (%s, 'gate', now(), now(), now() + interval '1 hour')").format(
                sql.Identifier('public', scratch_table)), (name,))
            for owner in ('alice@ci/1', 'bob@laptop/2'):
                procs[owner] = subprocess.Popen(
                    ansible_cmd(module_args(sandbox, name=name, owner=owner, purpose='hotpatch by ' + owner,
                                            table=scratch_table)),
                    cwd=ROOT, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 60
            with superuser(sandbox) as watcher:
                while True:
                    blocked = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                        ('%' + scratch_table + '%',)).fetchone()[0]
                    if blocked == 2:
                        break  # both blocked in their INSERT behind the gate's row
                    assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values()), \
                        [p.communicate() for p in procs.values() if p.poll() is not None]
                    time.sleep(0.05)
            raise psycopg.Rollback()  # the gate's row goes away; both upserts proceed together
    results = {}
    for owner, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        results[owner] = (proc.returncode, parse(stdout, stdout + stderr))
    winners = [owner for owner, (rc, result) in results.items() if rc == 0 and result['acquired']]
    assert len(winners) == 1, results
    loser = [owner for owner in results if owner not in winners][0]
    rc, result = results[loser]
    assert rc != 0 and result['msg'].startswith("release lock '%s' is held by %s for 'hotpatch by %s'"
                                                % (name, winners[0], winners[0]))
    with superuser(sandbox) as conn:
        rows = conn.execute(sql.SQL('SELECT owner FROM {}').format(sql.Identifier('public', scratch_table))).fetchall()
    assert rows == [(winners[0],)]


# --------------------------------------------------------------------------- failures and secrets

def test_unreachable_database_fails_clearly(sandbox):
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]  # closed once we leave the block
    rc, result, output = adhoc(module_args(sandbox, port=port, name='n', owner='o', connect_timeout=3))
    assert rc != 0
    assert result['msg'].startswith("cannot connect to PostgreSQL database 'hotel_voice_bot' on 127.0.0.1:%d as "
                                    "hotelbot:" % port), result['msg']
    assert 'Traceback' not in output and 'exception' not in result


def test_missing_owner_is_a_clear_failure(sandbox):
    rc, result, output = adhoc(module_args(sandbox, name='n'))
    assert rc != 0 and 'Traceback' not in output
    assert result['msg'].startswith('owner is required to acquire a release lock: pass owner')


def test_password_never_printed_at_vvvv(sandbox, lock_name):
    password = sandbox.secrets['postgres_password']
    rc, result, output = adhoc(module_args(sandbox, name=lock_name, owner='alice@ci/1'), verbosity='-vvvv')
    assert rc == 0, output
    assert password not in output
    wrong = 'Wr0ng-' + uuid.uuid4().hex
    rc, result, output = adhoc(module_args(sandbox, name=lock_name, owner='alice@ci/1', password=wrong,
                                           state='released'), verbosity='-vvvv')
    assert rc != 0 and 'password authentication failed' in output
    assert wrong not in output and password not in output
    assert lease_row(sandbox, lock_name)['owner'] == 'alice@ci/1'


PLAYBOOK = '''
- hosts: sandbox
  gather_facts: false
  module_defaults:
    group/hotelbot.ops.postgres:
      host: "{{ hotelbot_db_host }}"
      port: "{{ hotelbot_db_port }}"
      user: "{{ hotelbot_db_user }}"
      database: "{{ hotelbot_db_name }}"
  tasks:
    - ansible.builtin.set_fact:
        release_owner: "tester@{{ inventory_hostname }}/{{ now(utc=true).strftime('%%Y%%m%%dT%%H%%M%%S%%f') }}"
    - block:
        - hotelbot.ops.release_lock:
            name: %(name)s
            owner: "{{ release_owner }}"
            purpose: playbook test
        - name: the lease is there while the work runs
          ansible.builtin.command:
            argv: ["{{ hotelbot_db_bin_dir }}/psql", -h, "{{ hotelbot_db_host }}", -p, "{{ hotelbot_db_port }}",
                   -U, "{{ hotelbot_db_user }}", -d, "{{ hotelbot_db_name }}", -Atc,
                   "SELECT owner FROM public.hotelbot_release_locks WHERE name = '%(name)s'"]
          register: during
          changed_when: false
        - ansible.builtin.assert:
            that: during.stdout == release_owner
        - ansible.builtin.fail:
            msg: the work failed
          when: %(fail)s
      always:
        - hotelbot.ops.release_lock:
            name: %(name)s
            owner: "{{ release_owner }}"
            state: released
'''


@pytest.mark.parametrize('fail', [False, True])
def test_playbook_releases_on_success_and_on_failure(sandbox, lock_name, fail):
    directory = tempfile.mkdtemp(prefix='release-lock-play-')
    path = os.path.join(directory, 'play.yml')
    with open(path, 'w') as handle:
        handle.write(PLAYBOOK % dict(name=lock_name, fail='true' if fail else 'false'))
    try:
        run = sandbox.playbook('-v', playbook=path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert (run.returncode != 0) is fail, run.stdout + run.stderr
    failed = [f for f in run.failures if not f.get('ignore_errors')]
    if fail:
        assert len(failed) == 1 and 'the work failed' in json.dumps(failed), run.stdout
    else:
        assert not failed, run.stdout
    assert "acquired release lock '%s' for tester@sandbox/" % lock_name in run.stdout
    assert "released release lock '%s' held by tester@sandbox/" % lock_name in run.stdout
    assert lease_row(sandbox, lock_name) is None
