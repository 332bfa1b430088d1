"""pg_check against the sandbox's real PostgreSQL: module_utils directly, and the module through `ansible`.

Scratch databases are created (as the superuser, over the unix socket) and dropped by the
tests, so the seeded hotel_voice_bot database is only read.
"""
import json
import os
import subprocess
import uuid

import psycopg
import pytest
from psycopg import sql

from ansible_collections.hotelbot.ops.plugins.module_utils import pg_check
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError

from tests.integration.conftest import BIN, ROOT


def app_params(sandbox, **overrides):
    """Module params for the app role over TCP with its password (the way the bot connects)."""
    pg = sandbox.state['postgres']
    params = dict(host=pg['host'], port=pg['port'], user=pg['user'], password=sandbox.secrets['postgres_password'],
                  database=pg['database'], sslmode=None, sslrootcert=None, passfile=None, connect_timeout=5,
                  connect_params={}, tables=[], count_method='exact', min_rows={}, integrity_checks=True,
                  fail_on_integrity_errors=True, slow_queries=True, slow_query_threshold_ms=100.0,
                  slow_query_limit=10, fail_on_slow_queries=False, require_pg_stat_statements=False)
    params.update(overrides)
    return params


def superuser(sandbox, dbname='postgres'):
    pg = sandbox.state['postgres']
    return psycopg.connect(host=pg['socket_dir'], port=pg['port'], user=pg['superuser'], dbname=dbname,
                           autocommit=True, connect_timeout=5)


@pytest.fixture
def scratch_db(sandbox):
    """A scratch database owned by the app role; yields a factory taking the database name."""
    created = []

    def make(name=None):
        name = name or 'pgcheck_%s' % uuid.uuid4().hex[:8]
        with superuser(sandbox) as conn:
            conn.execute(sql.SQL('CREATE DATABASE {} OWNER {}').format(
                sql.Identifier(name), sql.Identifier(sandbox.state['postgres']['user'])))
        created.append(name)
        return name

    yield make
    with superuser(sandbox) as conn:
        for name in created:
            conn.execute(sql.SQL('DROP DATABASE IF EXISTS {} WITH (FORCE)').format(sql.Identifier(name)))


def adhoc(args, check_mode=False):
    """Run the module once with `ansible localhost -m`, return (rc, result dict, raw output)."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               PATH=BIN + os.pathsep + os.environ.get('PATH', ''))
    cmd = [os.path.join(BIN, 'ansible'), 'localhost', '-o', '-m', 'hotelbot.ops.pg_check', '-a', json.dumps(args)]
    if check_mode:
        cmd.append('--check')
    completed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    output = completed.stdout + completed.stderr
    line = [ln for ln in completed.stdout.splitlines() if ln.startswith('localhost |')]
    assert line, output
    return completed.returncode, json.loads(line[0].split('=>', 1)[1]), output


def test_seeded_database_counts_versions_and_connections(sandbox):
    pg = sandbox.state['postgres']
    with psycopg.connect(host=pg['host'], port=pg['port'], user=pg['user'], dbname=pg['database'],
                         password=sandbox.secrets['postgres_password']) as conn:
        expected = conn.execute('SELECT count(*) FROM public.bot_messages').fetchone()[0]
        version_num = conn.info.server_version
    assert expected == 1000

    result = pg_check.check(app_params(sandbox, tables=['public.bot_messages'], min_rows={'public.bot_messages': 1000}))
    assert result['changed'] is False
    assert result['problems'] == []
    assert result['server_version_num'] == version_num
    assert result['server_version'].split()[0].startswith(str(version_num // 10000) + '.')
    assert result['database'] == 'hotel_voice_bot' and result['user'] == 'hotelbot'
    assert result['in_recovery'] is False
    assert 0 <= result['ping_ms'] < 1000
    assert 1 <= result['connections']['current'] <= result['connections']['max_connections']
    assert result['connections']['this_database'] >= 1
    table = result['tables']['public.bot_messages']
    assert table['rows'] == expected
    assert table['exists'] is True and table['ok'] is True and table['min_rows'] == 1000
    assert (table['schema'], table['name'], table['kind']) == ('public', 'bot_messages', 'table')
    assert table['indexes_valid'] is True and table['invalid_indexes'] == []
    assert sorted(i['name'] for i in table['indexes']) == [
        'bot_messages_created_at_idx', 'bot_messages_message_id_key', 'bot_messages_pkey']
    assert table['checks_run'] == ['exists', 'seq_scan', 'indexes_valid']
    assert 'not installed' in table['checks_skipped']['amcheck']

    # estimate: the seeded table was ANALYZEd, so reltuples is exact here
    estimated = pg_check.check(app_params(sandbox, tables=['bot_messages'], count_method='estimate',
                                          slow_queries=False))
    assert estimated['tables']['bot_messages']['rows'] == 1000
    assert 'seq_scan' not in estimated['tables']['bot_messages']['checks_run']
    assert 'slow_queries' not in estimated


def test_min_rows_violated_fails_with_counts(sandbox):
    with pytest.raises(OpsError) as err:
        pg_check.check(app_params(sandbox, min_rows={'public.bot_messages': 1001}))
    assert err.value.msg == 'table public.bot_messages has 1000 rows, fewer than min_rows 1001'
    assert err.value.result['tables']['public.bot_messages']['rows'] == 1000
    assert err.value.result['tables']['public.bot_messages']['ok'] is False


def test_missing_table_is_named(sandbox):
    with pytest.raises(OpsError) as err:
        pg_check.check(app_params(sandbox, tables=['public.bot_messages', 'public.no_such_table']))
    assert err.value.msg == 'table public.no_such_table does not exist'
    tables = err.value.result['tables']
    assert tables['public.no_such_table']['exists'] is False
    assert tables['public.bot_messages']['rows'] == 1000 and tables['public.bot_messages']['ok'] is True


def test_quoted_database_and_table_names(sandbox, scratch_db):
    name = scratch_db('hotel "bot"')
    with superuser(sandbox, name) as conn:
        conn.execute(sql.SQL('SET ROLE {}').format(sql.Identifier(sandbox.state['postgres']['user'])))
        conn.execute('CREATE SCHEMA "we.ird"')
        conn.execute('CREATE TABLE public."odd ""name""" (id int PRIMARY KEY, v text)')
        conn.execute('INSERT INTO public."odd ""name""" SELECT g, md5(g::text) FROM generate_series(1, 37) g')
        conn.execute('CREATE TABLE "we.ird"."Mixed.Case" (id int)')
        conn.execute('INSERT INTO "we.ird"."Mixed.Case" SELECT generate_series(1, 5)')
        odd_count = conn.execute('SELECT count(*) FROM public."odd ""name"""').fetchone()[0]
    assert odd_count == 37

    result = pg_check.check(app_params(sandbox, database=name,
                                       tables=['"odd ""name"""', '"we.ird"."Mixed.Case"'],
                                       min_rows={'"odd ""name"""': 37}))
    assert result['database'] == 'hotel "bot"'
    odd = result['tables']['"odd ""name"""']
    assert (odd['schema'], odd['name'], odd['rows']) == ('public', 'odd "name"', odd_count)
    assert [i['name'] for i in odd['indexes']] == ['odd "name"_pkey']
    mixed = result['tables']['"we.ird"."Mixed.Case"']
    assert (mixed['schema'], mixed['name'], mixed['rows']) == ('we.ird', 'Mixed.Case', 5)
    assert mixed['indexes'] == [] and mixed['indexes_valid'] is True

    # unquoted names fold to lower case, so this one is not the mixed-case table
    with pytest.raises(OpsError) as err:
        pg_check.check(app_params(sandbox, database=name, tables=['"we.ird".MIXED']))
    assert err.value.msg == 'table "we.ird".MIXED does not exist'


def test_wrong_password_fails_clearly_without_the_password(sandbox):
    wrong = 'Wr0ng-' + uuid.uuid4().hex
    with pytest.raises(OpsError) as err:
        pg_check.check(app_params(sandbox, password=wrong))
    assert 'cannot connect to PostgreSQL database' in err.value.msg
    assert 'password authentication failed for user "hotelbot"' in err.value.msg
    assert wrong not in err.value.msg


def test_pg_stat_statements_absent_is_reported_not_failed(sandbox, scratch_db):
    name = scratch_db()
    with superuser(sandbox, name) as conn:
        conn.execute('CREATE EXTENSION pg_stat_statements')
        conn.execute('DROP EXTENSION pg_stat_statements')
    result = pg_check.check(app_params(sandbox, database=name))
    slow = result['slow_queries']
    assert slow['installed'] is False and slow['available'] is False and slow['queries'] == []
    assert slow['message'].startswith('pg_stat_statements is not installed in database %s' % name)
    assert result['problems'] == []

    with pytest.raises(OpsError) as err:
        pg_check.check(app_params(sandbox, database=name, require_pg_stat_statements=True))
    assert err.value.msg.startswith('pg_stat_statements is not installed in database %s' % name)


def test_slow_queries_listed_with_version_column(sandbox):
    pg = sandbox.state['postgres']
    marker = 'pgcheck_slow_%s' % uuid.uuid4().hex[:8]
    with psycopg.connect(host=pg['host'], port=pg['port'], user=pg['user'], dbname=pg['database'],
                         password=sandbox.secrets['postgres_password'], autocommit=True) as conn:
        version_num = conn.info.server_version
        for _attempt in range(2):
            conn.execute('SELECT pg_sleep(0.15) AS %s' % marker)
    result = pg_check.check(app_params(sandbox, slow_query_threshold_ms=100, slow_query_limit=50))
    slow = result['slow_queries']
    assert slow['installed'] is True and slow['available'] is True
    assert slow['column'] == ('mean_exec_time' if version_num >= 130000 else 'mean_time')
    if version_num // 10000 == 15:
        assert slow['column'] == 'mean_exec_time'
    ours = [q for q in slow['queries'] if marker in q['query']]
    assert len(ours) == 1, slow['queries']
    assert ours[0]['calls'] == 2
    assert ours[0]['mean_ms'] >= 150
    assert ours[0]['database'] == 'hotel_voice_bot' and ours[0]['user'] == 'hotelbot'
    assert all(q['mean_ms'] > 100 for q in slow['queries'])
    assert [q['mean_ms'] for q in slow['queries']] == sorted((q['mean_ms'] for q in slow['queries']), reverse=True)

    with pytest.raises(OpsError, match=r'slow queries with mean time above 100.0 ms'):
        pg_check.check(app_params(sandbox, slow_query_threshold_ms=100, fail_on_slow_queries=True))
    quiet = pg_check.check(app_params(sandbox, slow_query_threshold_ms=10 ** 7, fail_on_slow_queries=True))
    assert quiet['slow_queries']['queries'] == []


def test_invalid_index_is_reported_and_amcheck_runs(sandbox, scratch_db):
    name = scratch_db()
    with superuser(sandbox, name) as conn:
        conn.execute('CREATE EXTENSION amcheck')
        conn.execute('CREATE TABLE public.rooms (id int PRIMARY KEY, floor int, label text)')
        conn.execute('INSERT INTO public.rooms SELECT g, g %% 7, %s || g FROM generate_series(1, 500) g', ('room-',))
        conn.execute('CREATE INDEX rooms_floor_idx ON public.rooms (floor)')
        conn.execute('CREATE INDEX rooms_label_idx ON public.rooms USING hash (label)')
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.rooms_floor_idx'::regclass")
    pg = sandbox.state['postgres']
    as_superuser = dict(host=pg['socket_dir'], user=pg['superuser'], password=None, database=name)

    with pytest.raises(OpsError) as err:
        pg_check.check(app_params(sandbox, tables=['public.rooms'], **as_superuser))
    assert err.value.msg == 'table public.rooms has invalid indexes: rooms_floor_idx'
    table = err.value.result['tables']['public.rooms']
    assert table['rows'] == 500
    assert table['indexes_valid'] is False and table['invalid_indexes'] == ['rooms_floor_idx']
    by_name = {i['name']: i for i in table['indexes']}
    assert by_name['rooms_pkey'] == dict(name='rooms_pkey', oid=by_name['rooms_pkey']['oid'], valid=True,
                                         method='btree', partitioned=False, amcheck='ok')
    assert by_name['rooms_floor_idx']['amcheck'] == 'skipped: index is not valid'
    assert 'amcheck' not in by_name['rooms_label_idx']  # hash: amcheck checks btree only
    assert table['checks_run'] == ['exists', 'seq_scan', 'indexes_valid', 'amcheck']

    reported = pg_check.check(app_params(sandbox, tables=['public.rooms'], fail_on_integrity_errors=False,
                                         **as_superuser))
    assert reported['tables']['public.rooms']['invalid_indexes'] == ['rooms_floor_idx']
    assert reported['tables']['public.rooms']['ok'] is True

    # a partitioned table: counted through its partitions; its partitioned index has no storage for amcheck
    with superuser(sandbox, name) as conn:
        conn.execute('CREATE TABLE public.stays (id int, hotel int, PRIMARY KEY (id, hotel)) PARTITION BY LIST (hotel)')
        conn.execute('CREATE TABLE public.stays_1 PARTITION OF public.stays FOR VALUES IN (1)')
        conn.execute('CREATE TABLE public.stays_2 PARTITION OF public.stays FOR VALUES IN (2)')
        conn.execute('INSERT INTO public.stays SELECT g, 1 + g % 2 FROM generate_series(1, 30) g')
    parts = pg_check.check(app_params(sandbox, tables=['public.stays', 'public.stays_1'], slow_queries=False,
                                      **as_superuser))['tables']
    assert (parts['public.stays']['kind'], parts['public.stays']['rows']) == ('partitioned table', 30)
    assert parts['public.stays']['indexes'][0]['partitioned'] is True
    assert 'amcheck' not in parts['public.stays']['checks_run']
    assert 'partitioned' in parts['public.stays']['checks_skipped']['amcheck']
    assert parts['public.stays_1']['rows'] == 15
    assert parts['public.stays_1']['indexes'][0]['amcheck'] == 'ok'
    assert 'amcheck' in parts['public.stays_1']['checks_run']

    # a table the app role may not read: a clear failure naming it and libpq's reason
    with pytest.raises(OpsError) as err:
        pg_check.check(app_params(sandbox, database=name, tables=['public.rooms']))
    assert err.value.msg == 'cannot read table public.rooms: permission denied for table rooms'
    assert err.value.result['tables']['public.rooms']['exists'] is True

    # the app role may not execute bt_index_check (amcheck revokes it from PUBLIC): skipped, and said why
    with superuser(sandbox, name) as conn:
        conn.execute("UPDATE pg_index SET indisvalid = true WHERE indexrelid = 'public.rooms_floor_idx'::regclass")
        conn.execute(sql.SQL('GRANT SELECT ON public.rooms TO {}').format(sql.Identifier(pg['user'])))
    as_app = pg_check.check(app_params(sandbox, database=name, tables=['public.rooms']))
    table = as_app['tables']['public.rooms']
    assert table['indexes_valid'] is True and table['checks_run'] == ['exists', 'seq_scan', 'indexes_valid']
    assert 'permission denied' in table['checks_skipped']['amcheck']


def test_module_through_ansible(sandbox, scratch_db):
    pg = sandbox.state['postgres']
    password = sandbox.secrets['postgres_password']
    base = dict(host=pg['host'], port=pg['port'], user=pg['user'], database=pg['database'])

    rc, result, output = adhoc(dict(base, password=password, tables=['public.bot_messages'],
                                    min_rows={'public.bot_messages': 1000}), check_mode=True)
    assert rc == 0, output
    assert result['changed'] is False
    assert result['tables']['public.bot_messages']['rows'] == 1000
    assert result['slow_queries']['column'] == 'mean_exec_time'
    assert result['msg'].startswith('PostgreSQL %s reachable' % result['server_version'])
    assert password not in output

    rc, result, output = adhoc(dict(base, password=password, tables=['public.missing_table']))
    assert rc != 0
    assert result['msg'] == 'table public.missing_table does not exist'

    wrong = 'Wr0ng-' + uuid.uuid4().hex
    rc, result, output = adhoc(dict(base, password=wrong))
    assert rc != 0
    assert 'password authentication failed for user "hotelbot"' in result['msg']
    assert wrong not in output
