"""The shared PostgreSQL connection layer: settings for psycopg and for the client programs."""
import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import postgres
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError

PARAMS = dict(host='db.example', port=5433, user='bot', password='s3cret-pw', database='hotel_voice_bot',
              sslmode='verify-full', sslrootcert='/etc/ca.pem', passfile=None, connect_timeout=7,
              connect_params={'application_name': 'hotelbot.ops'})


def test_client_programs_get_settings_through_the_environment_and_keep_the_rest():
    env = postgres.libpq_env(PARAMS, base={'PATH': '/usr/bin', 'LANG': 'C.UTF-8', 'PGPASSWORD': 'old'})
    assert env['PATH'] == '/usr/bin' and env['LANG'] == 'C.UTF-8'
    assert env['PGHOST'] == 'db.example' and env['PGPORT'] == '5433' and env['PGUSER'] == 'bot'
    assert env['PGPASSWORD'] == 's3cret-pw' and env['PGDATABASE'] == 'hotel_voice_bot'
    assert env['PGSSLMODE'] == 'verify-full' and env['PGSSLROOTCERT'] == '/etc/ca.pem'
    assert env['PGCONNECT_TIMEOUT'] == '7' and env['PGAPPNAME'] == 'hotelbot.ops'
    assert 'PGPASSFILE' not in env


def test_database_override_for_scratch_databases():
    assert postgres.libpq_env(PARAMS, database='x__restore', base={})['PGDATABASE'] == 'x__restore'
    assert postgres.connection_settings(PARAMS, database='x__restore')['dbname'] == 'x__restore'


def test_connect_params_without_an_environment_variable_are_refused_not_dropped():
    params = dict(PARAMS, connect_params={'keepalives': 1, 'application_name': 'x'})
    with pytest.raises(OpsError, match='connect_params keepalives have no libpq environment variable'):
        postgres.libpq_env(params, base={})
    # psycopg takes them all as keywords
    assert postgres.connection_settings(params)['keepalives'] == '1'


@pytest.mark.parametrize('name, quoted', [
    ('hotel_voice_bot', '"hotel_voice_bot"'),
    ('hotel "bot"', '"hotel ""bot"""'),
    ('Mixed.Case', '"Mixed.Case"'),
])
def test_quote_ident(name, quoted):
    assert postgres.quote_ident(name) == quoted


def test_connect_failure_names_the_target_without_the_password():
    params = dict(PARAMS, host='127.0.0.1', port=9, connect_timeout=2, sslmode=None, sslrootcert=None)
    with pytest.raises(OpsError) as err:
        postgres.connect(params)
    assert "cannot connect to PostgreSQL database 'hotel_voice_bot' on 127.0.0.1:9 as bot" in err.value.msg
    assert 's3cret-pw' not in err.value.msg


def test_connection_options_put_the_callers_first(monkeypatch):
    """Ours come last (the later -c wins); the caller's come from connect_params, else PGOPTIONS,
    which an explicit `options` keyword on the connection would otherwise hide."""
    monkeypatch.setenv('PGOPTIONS', '-c search_path=ops')
    ours = {'max_parallel_maintenance_workers': '0'}
    assert postgres.connection_options({}, ours) == '-c search_path=ops -c max_parallel_maintenance_workers=0'
    given = {'connect_params': {'options': '-c work_mem=8MB'}}
    assert postgres.connection_options(given, ours) == '-c work_mem=8MB -c max_parallel_maintenance_workers=0'
    monkeypatch.delenv('PGOPTIONS')
    assert postgres.connection_options({}, {}) == ''
