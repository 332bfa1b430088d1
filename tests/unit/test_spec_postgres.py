"""The SPECs of the four PostgreSQL modules, checked as ansible-core checks them (ArgumentSpecValidator,
no module run) plus the ranges of their `context` (common.spec_problems): good arguments pass, each
bad one is refused naming its option."""
import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.hotelbot.ops.plugins.module_utils.common import spec_problems
from ansible_collections.hotelbot.ops.plugins.modules import pg_backup, pg_check, pg_restore, release_lock

VALIDATOR_KEYS = ('argument_spec', 'mutually_exclusive', 'required_together', 'required_one_of', 'required_if',
                  'required_by')
CONNECTION = dict(host='db.internal', port=5432, user='hotelbot', password='s3cret-pw', database='hotel_voice_bot')
SPECS = dict(pg_backup=pg_backup.SPEC, pg_check=pg_check.SPEC, pg_restore=pg_restore.SPEC,
             release_lock=release_lock.SPEC)
GOOD = dict(
    pg_backup=dict(CONNECTION, dest='/backups', format='directory', jobs=4, keep=7),
    pg_check=dict(CONNECTION, tables=['public.bot_messages'], slow_query_threshold_ms=0, slow_query_limit=1000),
    pg_restore=dict(CONNECTION, src='/backups/hotel.dump', confirm=True, jobs=1, keep_previous=0),
    release_lock=dict(CONNECTION, name='ecs/hotelbot/hotel-voice-bot', owner='oncall@laptop', ttl='90s', wait='5m'),
)


def problems(name, args):
    """Every message ansible-core and the contract's range checks give for args (empty when valid)."""
    spec = SPECS[name]
    validated = ArgumentSpecValidator(**dict((key, spec[key]) for key in VALIDATOR_KEYS if key in spec)).validate(args)
    if validated.error_messages:
        return validated.error_messages
    return spec_problems(spec, validated.validated_parameters)


@pytest.mark.parametrize('name', sorted(GOOD))
def test_good_arguments_pass_and_the_password_is_no_log(name):
    assert problems(name, GOOD[name]) == []
    validated = ArgumentSpecValidator(SPECS[name]['argument_spec']).validate(GOOD[name])
    assert 's3cret-pw' in validated._no_log_values


@pytest.mark.parametrize('name, bad, option, says', [
    ('pg_backup', dict(jobs=0), 'jobs', 'jobs must be at least 1, got 0'),
    ('pg_backup', dict(keep=0), 'keep', 'keep must be at least 1, got 0'),
    ('pg_backup', dict(keep=-1), 'keep', 'at least 1'),
    ('pg_backup', dict(format='tar'), 'format', 'tar'),
    ('pg_backup', dict(path='/backups/x.dump'), 'dest', 'mutually exclusive'),
    ('pg_backup', dict(dest=None), 'dest', 'one of the following is required'),
    ('pg_check', dict(slow_query_limit=0), 'slow_query_limit', 'slow_query_limit must be between 1 and 1000, got 0'),
    ('pg_check', dict(slow_query_limit=1001), 'slow_query_limit', 'between 1 and 1000'),
    ('pg_check', dict(slow_query_threshold_ms=-1), 'slow_query_threshold_ms', 'must be at least 0, got -1'),
    ('pg_check', dict(slow_query_threshold_ms=float('nan')), 'slow_query_threshold_ms', 'must be at least 0, got nan'),
    ('pg_check', dict(count_method='guess'), 'count_method', 'guess'),
    ('pg_check', dict(port='five'), 'port', 'five'),
    ('pg_restore', dict(jobs=0), 'jobs', 'jobs must be at least 1, got 0'),
    ('pg_restore', dict(keep_previous=-1), 'keep_previous', 'keep_previous must be at least 0, got -1'),
    ('pg_restore', dict(phase='swap'), 'scratch_database', 'phase is swap'),
    ('pg_restore', dict(src=None), 'src', 'missing'),
    ('pg_restore', dict(sslmode='sometimes'), 'sslmode', 'sometimes'),
    ('release_lock', dict(state='locked'), 'state', 'locked'),
    ('release_lock', dict(name=None), 'name', 'missing'),
    ('release_lock', dict(renew='maybe'), 'renew', 'maybe'),
    ('release_lock', dict(database=None), 'database', 'backend is postgres but all of the following are missing'),
])
def test_a_bad_argument_is_refused_naming_its_option(name, bad, option, says):
    args = dict(GOOD[name], **bad)
    for key in [key for key, value in bad.items() if value is None]:
        del args[key]
    found = ' '.join(problems(name, args))
    assert option in found and says in found, found


@pytest.mark.parametrize('name', sorted(SPECS))
def test_the_connection_options_are_the_shared_ones(name):
    spec = SPECS[name]['argument_spec']
    # release_lock needs a database only where the lease is in PostgreSQL (its required_if).
    assert spec['database']['required'] is (name != 'release_lock') and spec['password']['no_log'] is True
    assert spec['host']['aliases'] == ['login_host'] and spec['connect_timeout']['default'] == 10


def test_release_lock_needs_a_database_only_with_backend_postgres():
    lock = dict(name='ecs/hotelbot/hotel-voice-bot', owner='oncall@laptop')
    assert problems('release_lock', dict(lock, backend='dynamodb', region='eu-central-1')) == []
    for postgres in (dict(lock, backend='postgres'), lock):  # postgres is the default backend
        [refusal] = problems('release_lock', postgres)
        assert refusal == 'backend is postgres but all of the following are missing: database', refusal
    assert problems('release_lock', dict(lock, database='hotelbot_ops')) == []
