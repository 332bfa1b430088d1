"""Unit tests of module_utils.release_lock's pure parts (no server)."""
import datetime

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.hotelbot.ops.plugins.module_utils import release_lock as r
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError


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
    assert r.parse_duration(value) == seconds


@pytest.mark.parametrize('value', ['', 'abc', '10x', '1h1h', 'm', '30m10', '1h-5m', True, None, 'inf', 'nan',
                                   '10 minutes'])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError) as err:
        r.parse_duration(value, 'ttl')
    assert 'ttl must be' in str(err.value)


@pytest.mark.parametrize('seconds, text', [
    (0, '0s'), (44.6, '45s'), (60, '1m'), (90, '1m30s'), (599, '9m59s'), (1620, '27m'), (1650, '27m'),
    (3600, '1h00m'), (3900, '1h05m'), (86400, '1d00h'), (97200, '1d03h'), (-5, '0s'),
])
def test_format_duration(seconds, text):
    assert r.format_duration(seconds) == text


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
                       "2026-11-22T22:00:00Z (expires in 27m, at 2026-11-22T22:30:00Z); wait for it (wait=...), "
                       "or release it with force=true if that run is dead")


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
    pauses = []
    pause = 0.0
    for _step in range(7):
        pause = r.next_pause(pause)
        pauses.append(pause)
    assert pauses == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


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
    spec = r.argument_spec()
    assert spec['password']['no_log'] is True
    assert spec['state']['choices'] == ['acquired', 'released'] and spec['state']['default'] == 'acquired'
    assert spec['ttl']['default'] == '30m' and spec['wait']['default'] == 0
    assert spec['schema']['default'] == 'public' and spec['table']['default'] == 'hotelbot_release_locks'
    assert spec['name']['required'] is True and 'default' not in spec['owner']


def test_argument_spec_validates_module_input():
    validator = ArgumentSpecValidator(r.argument_spec())
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
    assert 'after waiting 1m; wait for it' in err.value.msg
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
