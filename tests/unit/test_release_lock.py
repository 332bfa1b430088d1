"""Unit tests of module_utils.release_lock's pure parts (no server)."""
import datetime
import itertools

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.hotelbot.ops.plugins.module_utils import poll
from ansible_collections.hotelbot.ops.plugins.module_utils import release_lock as r
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError
from ansible_collections.hotelbot.ops.plugins.module_utils.duration import format_duration, parse_duration
from ansible_collections.hotelbot.ops.plugins.modules.release_lock import SPEC


@pytest.mark.parametrize('value, seconds', [
    (90, 90.0),
    (1.5, 1.5),
    ('90', 90.0),
    ('2.5', 2.5),
    ('90s', 90.0),
    ('30m', 1800.0),
    ('1h', 3600.0),
    ('1h30m', 5400.0),
    ('1h 30m 15s', 5415.0),
    ('2d', 172800.0),
    ('1.5h', 5400.0),
    (' 10M ', 600.0),
    (0, 0.0),
])
def test_parse_duration(value, seconds):
    assert parse_duration(value, 'ttl') == seconds


@pytest.mark.parametrize('value', ['', 'abc', '10x', '1h1h', 'm', '30m10', '1h-5m', True, None, 'inf', 'nan',
                                   '10 minutes'])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError) as err:
        parse_duration(value, 'ttl')
    assert 'ttl must be' in str(err.value)


@pytest.mark.parametrize('seconds, text', [
    (0, '0s'), (44.6, '45s'), (60, '1m'), (90, '1m30s'), (599, '9m59s'), (1620, '27m'), (1650, '27m'),
    (3600, '1h00m'), (3900, '1h05m'), (86400, '1d00h'), (97200, '1d03h'), (-5, '0s'),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_utc_text_converts_zones():
    cet = datetime.timezone(datetime.timedelta(hours=1))
    assert r.utc_text(datetime.datetime(2026, 11, 22, 23, 1, 2, 999, tzinfo=cet)) == '2026-11-22T22:01:02Z'
    assert r.utc_text(None) is None


def lease(**overrides):
    value = dict(name='ecs/c/s', owner='alice@ci/123', purpose='hotpatch CHG-1', acquired_at='2026-11-22T22:00:00Z',
                 renewed_at='2026-11-22T22:00:00Z', expires_at='2026-11-22T22:30:00Z', expired=False,
                 remaining_s=1620.4, host='ci', os_user='alice', db_user='hotelbot', client_addr='127.0.0.1')
    value.update(overrides)
    return value


def test_held_message_names_holder_purpose_since_and_expiry():
    message = r.held_message('ecs/c/s', lease())
    assert message == ("release lock 'ecs/c/s' is held by alice@ci/123 for 'hotpatch CHG-1' since "
                       "2026-11-22T22:00:00Z (expires in 27m, at 2026-11-22T22:30:00Z); it lapses by itself within "
                       "its ttl once that run is dead (a live run renews it); to break it now, re-run the playbook "
                       "with -e release_break_lock=alice@ci/123")


def test_break_advice_quotes_the_owner_for_a_shell():
    advice = r.break_advice(lease(owner="bob's run/1"))
    assert advice.endswith("-e 'release_break_lock=bob'\"'\"'s run/1'")
    assert 'force=true' not in advice


def test_held_message_after_waiting_without_advice_and_purpose():
    message = r.held_message('n', lease(purpose=''), waited=65, advice=False)
    assert message == ("release lock 'n' is held by alice@ci/123 since 2026-11-22T22:00:00Z "
                       "(expires in 27m, at 2026-11-22T22:30:00Z) after waiting 1m05s")


def test_holder_text_of_expired_lease():
    text = r.holder_text(lease(expired=True, remaining_s=-125.0))
    assert text.endswith('(expired 2m05s ago at 2026-11-22T22:30:00Z)')


def test_holder_summary_and_public():
    full = lease()
    assert r.holder_summary(full) == dict(owner='alice@ci/123', purpose='hotpatch CHG-1',
                                          acquired_at='2026-11-22T22:00:00Z', expires_at='2026-11-22T22:30:00Z',
                                          expired=False, remaining_s=1620.4)
    assert r.public(full) == full
    assert r.holder_summary(None) is None and r.public(None) is None


def test_next_pause_backs_off_to_a_ceiling():
    pauses = list(itertools.islice(poll.LOCK.pauses(), 7))
    assert pauses == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_acquire_waits_for_a_held_lease_on_the_lock_schedule(monkeypatch):
    """A lease held twice, then free: acquire polls with poll.LOCK's pauses and names whom it waited for."""
    answers = [('held', lease(owner='alice@ci/1'), None), ('held', lease(owner='alice@ci/1'), None),
               ('acquired', None, lease(owner='bob', purpose=''))]
    monkeypatch.setattr(r, 'ensure_table', lambda conn, schema, table: False)
    monkeypatch.setattr(r, '_take', lambda conn, table, settings, values: answers.pop(0))
    now, sleeps = [0.0], []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    result = r.acquire(None, r.validate(params(owner='bob', wait='1m')), sleep=sleep, clock=lambda: now[0])
    assert sleeps == [0.5, 1.0] and answers == []
    assert result['acquired'] is True and result['waited_s'] == 1.5
    assert result['waited_for']['owner'] == 'alice@ci/1'


def test_acquire_gives_up_when_the_wait_is_over(monkeypatch):
    monkeypatch.setattr(r, 'ensure_table', lambda conn, schema, table: False)
    monkeypatch.setattr(r, '_take', lambda conn, table, settings, values: ('held', lease(), None))
    now, sleeps = [0.0], []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    with pytest.raises(OpsError) as err:
        r.acquire(None, r.validate(params(owner='bob', wait=2)), sleep=sleep, clock=lambda: now[0])
    assert sleeps == [0.5, 1.0, 0.5] and 'after waiting 2s' in err.value.msg


def params(**overrides):
    value = dict(name='ecs/c/s', state='acquired', owner='alice@ci/1', purpose='', ttl='30m', wait=0, renew=True,
                 fail_when_held=True, force=False, schema='public', table='hotelbot_release_locks')
    value.update(overrides)
    return value


def test_validate_normalises():
    settings = r.validate(params(ttl='1h', wait='2m', owner='  bob  '))
    assert settings['ttl'] == 3600.0 and settings['wait'] == 120.0 and settings['owner'] == 'bob'
    assert r.validate(params(wait=None))['wait'] == 0.0


@pytest.mark.parametrize('overrides, fragment', [
    (dict(owner=None), 'owner is required to acquire a release lock: pass owner'),
    (dict(owner='  '), 'owner is required to acquire'),
    (dict(owner=None, state='released'), 'owner is required to release a lock (or force=true)'),
    (dict(name=' '), 'name must not be empty'),
    (dict(name='x' * 501), 'at most 500'),
    (dict(ttl='0s'), 'ttl must be at least 1 second'),
    (dict(ttl='soon'), 'ttl must be a number of seconds'),
    (dict(ttl=100000000000), 'ttl must be at most 7d00h'),
    (dict(wait='8d'), 'wait must be at most 7d00h'),
    (dict(wait=-1), 'wait must not be negative'),
    (dict(wait='later'), 'wait must be a number of seconds'),
    (dict(force=True), 'force only applies to state=released'),
    (dict(table=''), 'table must not be empty'),
])
def test_validate_rejects(overrides, fragment):
    with pytest.raises(OpsError) as err:
        r.validate(params(**overrides))
    assert fragment in err.value.msg


def test_owner_not_needed_for_force_release():
    settings = r.validate(params(owner=None, state='released', force=True))
    assert settings['owner'] is None and settings['force'] is True


def test_owner_hint_tells_to_set_it_once_per_run():
    assert 'set_fact' in r.OWNER_HINT and 'unique to this run' in r.OWNER_HINT


def test_argument_spec_defaults_and_secrets():
    spec = SPEC['argument_spec']
    assert spec['password']['no_log'] is True
    assert spec['state']['choices'] == ['acquired', 'released'] and spec['state']['default'] == 'acquired'
    assert spec['ttl']['default'] == '90s' and spec['wait']['default'] == 0
    assert spec['schema']['default'] == 'public' and spec['table']['default'] == 'hotelbot_release_locks'
    assert spec['name']['required'] is True and 'default' not in spec['owner']


def test_argument_spec_validates_module_input():
    validator = ArgumentSpecValidator(SPEC['argument_spec'])
    ok = validator.validate(dict(database='db', name='ecs/c/s', owner='o', ttl=600, password='s3cret-pw'))
    assert not ok.error_messages, ok.error_messages
    assert ok.validated_parameters['ttl'] == 600 and ok.validated_parameters['fail_when_held'] is True
    assert 's3cret-pw' in ok._no_log_values
    bad = validator.validate(dict(database='db', name='n', state='locked'))
    assert 'state' in ' '.join(bad.error_messages)
    missing = validator.validate(dict(database='db'))
    assert 'name' in ' '.join(missing.error_messages)


def test_sql_compares_with_the_server_clock_only():
    assert 'now()' not in r.UPSERT.lower()
    assert 'ON CONFLICT (name) DO UPDATE' in r.UPSERT
    assert 'WHERE l.expires_at <= statement_timestamp() OR l.owner = EXCLUDED.owner' in r.UPSERT
    assert 'CREATE TABLE IF NOT EXISTS' in r.CREATE_TABLE


def test_result_of_a_refusal_without_failing():
    settings = r.validate(params(owner='auto/9', fail_when_held=False))
    result = r.acquire_result(settings, 'held', lease(), None, False, 0.01, False)
    assert result['acquired'] is False and result['changed'] is False and result['holder']['owner'] == 'alice@ci/123'
    assert result['msg'] == ("release lock 'ecs/c/s' is held by alice@ci/123 for 'hotpatch CHG-1' since "
                             "2026-11-22T22:00:00Z (expires in 27m, at 2026-11-22T22:30:00Z) "
                             "(fail_when_held=false: not acquired)")


def test_result_of_a_refusal_fails_with_the_result():
    settings = r.validate(params(owner='bob', wait='1m'))
    with pytest.raises(OpsError) as err:
        r.acquire_result(settings, 'held', lease(), None, False, 60.2, False)
    assert 'after waiting 1m; it lapses by itself' in err.value.msg
    assert err.value.result['holder']['owner'] == 'alice@ci/123' and err.value.changed is False


def test_result_of_a_take_over_and_of_check_mode():
    settings = r.validate(params(owner='bob', ttl='10m'))
    old = lease(expired=True, remaining_s=-60)
    new = lease(owner='bob', purpose='', remaining_s=600)
    result = r.acquire_result(settings, 'took_over', old, new, False, 0, False)
    assert result['changed'] is True and result['took_over']['owner'] == 'alice@ci/123'
    assert result['msg'].startswith("took over the expired release lock 'ecs/c/s' from alice@ci/123")
    assert result['diff'] == dict(before=r.holder_summary(old), after=r.holder_summary(new))
    planned = r.acquire_result(settings, 'acquired', None, None, True, 0, True)
    assert planned['msg'] == ("would acquire release lock 'ecs/c/s' for bob, expires in 10m; would create the lease "
                              "table public.hotelbot_release_locks")
    assert planned['changed'] is True and planned['lock'] is None and planned['holder']['owner'] == 'bob'


# --------------------------------------------------------------------------- break_owner

@pytest.mark.parametrize('overrides, fragment', [
    (dict(break_owner='alice@ci/1', force=True, state='released'), 'break_owner and force are mutually exclusive'),
    (dict(break_owner='alice@ci/1', state='released', force=True), 'break_owner and force are mutually exclusive'),
    (dict(break_owner='  ', state='released'), 'break_owner must not be empty'),
])
def test_validate_rejects_bad_break_owner(overrides, fragment):
    with pytest.raises(OpsError) as err:
        r.validate(params(**overrides))
    assert fragment in err.value.msg


class FakeCursor:
    def __init__(self, row, names):
        self.row = row
        self.description = [type('Column', (), dict(name=n))() for n in names]

    def fetchone(self):
        return self.row


class FakeConn:
    """Just enough of a psycopg connection for release(): one lease row, statements recorded."""

    def __init__(self, lease_row):
        self.lease_row = lease_row
        self.statements = []

    def transaction(self):
        import contextlib
        return contextlib.nullcontext()

    def execute(self, statement, values=None):
        text = statement if isinstance(statement, str) else repr(statement)
        self.statements.append(text)
        if 'pg_namespace' in text:
            return FakeCursor((True, True), ['schema', 'table'])
        if 'SELECT' in text and 'FOR UPDATE' in text:
            return FakeCursor(tuple(self.lease_row.values()), list(self.lease_row))
        raise AssertionError('unexpected statement %s' % text)


def raw_lease(owner='alice@ci/1'):
    now = datetime.datetime(2026, 11, 22, 22, 0, tzinfo=datetime.timezone.utc)
    return dict(name='ecs/c/s', owner=owner, purpose='hotpatch CHG-1', acquired_at=now, renewed_at=now,
                expires_at=now + datetime.timedelta(seconds=90), host='ci', os_user='alice', db_user='hotelbot',
                client_addr=None, expired=False, remaining_s=80.0)


def test_break_refuses_a_different_owner_and_changes_nothing():
    conn = FakeConn(raw_lease(owner='alice@ci/1'))
    settings = r.validate(params(state='released', owner='bob@laptop/2', break_owner='carol@ci/3'))
    with pytest.raises(OpsError) as err:
        r.release(conn, settings)
    assert err.value.msg.startswith("release lock 'ecs/c/s' is held by alice@ci/1 for 'hotpatch CHG-1' since ")
    assert err.value.msg.endswith('not by carol@ci/3: not broken, nothing changed')
    assert err.value.changed is False and err.value.result['holder']['owner'] == 'alice@ci/1'
    assert not any('DELETE' in s or 'INSERT' in s for s in conn.statements), conn.statements


def test_break_statement_deletes_only_the_named_owner_and_records_it():
    assert 'DELETE FROM {locks} AS l WHERE l.name = %(name)s AND l.owner = %(broken)s' in r.BREAK_LEASE
    assert r.BREAK_LEASE.index('INSERT INTO {events}') > r.BREAK_LEASE.index('DELETE')
    assert 'FROM gone' in r.BREAK_LEASE  # no row deleted, no audit row; no audit row, no delete (one statement)
    assert 'broken_by' in r.CREATE_EVENTS and 'at          timestamptz NOT NULL' in r.CREATE_EVENTS


def test_release_message_of_a_break():
    before = r._row(tuple(raw_lease().values()), FakeCursor(None, list(raw_lease())).description)
    broken = dict(event='broken', broken_by='bob@laptop/2', events_table='public.hotelbot_release_locks_events',
                  event_id=7)
    assert r.release_message('ecs/c/s', before, broken, False) == (
        "broke release lock 'ecs/c/s' held by alice@ci/1 for 'hotpatch CHG-1' since 2026-11-22T22:00:00Z "
        "(expires in 1m20s, at 2026-11-22T22:01:30Z) (break_owner, by bob@laptop/2); recorded in "
        "public.hotelbot_release_locks_events (id 7)")
    assert r.release_message('ecs/c/s', before, broken, True).startswith("would break release lock 'ecs/c/s'")


# --------------------------------------------------------------------------- heartbeat

def test_renewal_sql_only_extends_our_unexpired_lease():
    assert r.RENEW_LEASE.startswith('UPDATE {table} AS l SET renewed_at = statement_timestamp(), ')
    assert 'WHERE l.name = %(name)s AND l.owner = %(owner)s AND l.expires_at > statement_timestamp()' in r.RENEW_LEASE
    assert 'now()' not in r.RENEW_LEASE.lower()


def test_renewal_period_is_a_third_of_the_ttl():
    assert r.renewal_period(90) == 30.0 and r.renewal_period(6) == 2.0


def fake_proc(tmp_path, pid, start, state='S', comm='ansible-playboo'):
    directory = tmp_path / str(pid)
    directory.mkdir()
    # comm with spaces and a ')' must not shift the fields
    fields = [state] + ['0'] * 18 + [str(start)] + ['0'] * 10
    (directory / 'stat').write_text('%d (%s) %s\n' % (pid, comm, ' '.join(fields)))
    return str(tmp_path)


def test_process_start_reads_field_22(tmp_path):
    proc = fake_proc(tmp_path, 4242, 987654, comm='odd) name (x')
    assert r.process_start(4242, proc) == 987654
    assert r.process_start(4243, proc) is None


def test_holder_alive_dead_reused_and_zombie(tmp_path):
    proc = fake_proc(tmp_path, 100, 5000)
    fake_proc(tmp_path, 200, 7000, state='Z')
    assert r.holder_alive(dict(pid=100, start=5000), proc) is True
    assert r.holder_alive(dict(pid=100, start=4999), proc) is False   # pid reused by another process
    assert r.holder_alive(dict(pid=300, start=5000), proc) is False   # gone
    assert r.holder_alive(dict(pid=200, start=7000), proc) is False   # killed, not yet reaped


def test_holder_alive_of_this_process_and_without_proc():
    import os
    me = r.holder_identity(os.getpid())
    assert me['start'] is not None and r.holder_alive(me) is True

    def kill(pid, signal):
        if pid == 1:
            raise PermissionError()
        if pid == 2:
            raise ProcessLookupError()

    assert r.holder_alive(dict(pid=1, start=None), kill=kill) is True
    assert r.holder_alive(dict(pid=2, start=None), kill=kill) is False


def run_heartbeat(alive, renew):
    calls = []

    def sleep(seconds):
        calls.append(('sleep', seconds))

    def check():
        calls.append('alive?')
        return alive.pop(0)

    def renewal():
        calls.append('renew')
        outcome = renew.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    why = r.heartbeat(renewal, check, 30.0, sleep=sleep)
    return why, calls


def test_heartbeat_renews_while_the_holder_lives_and_stops_when_it_is_gone():
    why, calls = run_heartbeat([True, True, False], [True, True])
    assert why == 'holder gone'
    assert calls == [('sleep', 30.0), 'alive?', 'renew', ('sleep', 30.0), 'alive?', 'renew', ('sleep', 30.0), 'alive?']


def test_heartbeat_stops_when_the_lease_is_no_longer_ours():
    why, calls = run_heartbeat([True, True], [True, False])
    assert why == 'lease no longer ours' and calls.count('renew') == 2


def test_heartbeat_survives_a_failed_renewal():
    why, calls = run_heartbeat([True, True, False], [OpsError('cannot connect'), True])
    assert why == 'holder gone' and calls.count('renew') == 2


def test_keep_alive_starts_only_after_a_real_acquire_with_a_live_holder():
    settings = r.validate(params(ttl=90, _holder=dict(pid=123, start=456)))
    started = []

    def start(params_, settings_, holder, every):
        started.append((holder, every))
        return 999

    acquired = dict(acquired=True, changed=True)
    beat, note = r.keep_alive({}, settings, acquired, False, start=start, alive=lambda h: True)
    assert beat == dict(pid=999, every_s=30.0, holder_pid=123) and note is None
    assert started == [(dict(pid=123, start=456), 30.0)]
    assert r.keep_alive({}, settings, acquired, True, start=start, alive=lambda h: True) == (None, None)
    assert r.keep_alive({}, settings, dict(acquired=False, changed=False), False, start=start,
                        alive=lambda h: True) == (None, None)
    beat, note = r.keep_alive({}, settings, acquired, False, start=start, alive=lambda h: False)
    assert beat is None and note.startswith('no heartbeat: holder pid 123 is not visible') and '1m30s' in note
    beat, note = r.keep_alive({}, r.validate(params(ttl=90)), acquired, False, start=start, alive=lambda h: True)
    assert beat is None and note.startswith('no heartbeat: no holder process was given')
    assert len(started) == 1


def test_internal_holder_option_is_checked():
    with pytest.raises(OpsError) as err:
        r.validate(params(_holder=dict(pid='x')))
    assert err.value.msg.startswith('_holder is internal')
