"""Unit tests of module_utils.pg_check's pure parts (no server)."""
import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import pg_check as p
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError
from ansible_collections.hotelbot.ops.plugins.modules.pg_check import SPEC


@pytest.mark.parametrize('name, expected', [
    ('bot_messages', (None, 'bot_messages')),
    ('public.bot_messages', ('public', 'bot_messages')),
    ('Public.Bot_Messages', ('public', 'bot_messages')),          # unquoted: folded like PostgreSQL
    ('"Public"."Bot_Messages"', ('Public', 'Bot_Messages')),      # quoted: kept
    ('"odd ""name"""', (None, 'odd "name"')),                      # doubled quote = one quote
    ('public."odd ""name"""', ('public', 'odd "name"')),
    ('"my.schema"."t.v2"', ('my.schema', 't.v2')),                 # dots inside quotes are not separators
    ('"a.b"', (None, 'a.b')),
    ('reports."daily.v2"', ('reports', 'daily.v2')),
    ('  public.t  ', ('public', 't')),
    ('"has space".x', ('has space', 'x')),
    ('"bot;messages"', (None, 'bot;messages')),                   # quoted: any text is a name
    ('caf\u00e9.r\u00e9servations', ('caf\u00e9', 'r\u00e9servations')),   # unquoted letters need not be ASCII
    ('t$1', (None, 't$1')),
])
def test_parse_table_name(name, expected):
    assert p.parse_table_name(name) == expected


@pytest.mark.parametrize('name, fragment', [
    ('', 'empty'),
    ('a.b.c', 'more than one unquoted dot'),
    ('"unterminated', 'unterminated quote'),
    ('.t', 'empty identifier'),
    ('s.', 'empty identifier'),
    ('""', 'empty quoted identifier'),
    ('"a"b', 'text after a closing quote'),
    ('a"b"', 'quote inside an unquoted'),
    ('bot messages', 'spaces outside quotes'),
    ('bot_messages;drop', "is not an unquoted SQL name (';')"),
    ("public.bot_messages'--", "is not an unquoted SQL name (\"'-\")"),
    ('1table', 'it starts with a digit'),
])
def test_parse_table_name_rejects(name, fragment):
    with pytest.raises(ValueError) as err:
        p.parse_table_name(name)
    assert fragment in str(err.value)


@pytest.mark.parametrize('schema, table, text', [
    (None, 'bot_messages', '"bot_messages"'),
    ('public', 'odd "name"', '"public"."odd ""name"""'),
    ('a.b', 'c', '"a.b"."c"'),
])
def test_qualified_text_round_trips(schema, table, text):
    assert p.qualified_text(schema, table) == text
    assert p.parse_table_name(text) == (schema, table)


@pytest.mark.parametrize('version, mean, total', [
    (90600, 'mean_time', 'total_time'),
    (120017, 'mean_time', 'total_time'),
    (129999, 'mean_time', 'total_time'),
    (130000, 'mean_exec_time', 'total_exec_time'),
    (150008, 'mean_exec_time', 'total_exec_time'),
    (170000, 'mean_exec_time', 'total_exec_time'),
])
def test_stat_statements_columns(version, mean, total):
    assert p.stat_statements_columns(version) == dict(mean=mean, total=total)


def test_truncate():
    assert p.truncate('SELECT 1') == ('SELECT 1', False)
    assert p.truncate(None) == (None, False)
    exact = 'x' * p.QUERY_TEXT_LIMIT
    assert p.truncate(exact) == (exact, False)
    text, cut = p.truncate('y' * 1200)
    assert cut is True
    assert text == 'y' * 500 + '...'


def test_tables_to_check_adds_min_rows_keys_once():
    assert p.tables_to_check(['a', 'b'], {'b': 1, 'c': 2}) == ['a', 'b', 'c']
    assert p.tables_to_check(None, None) == []


def test_check_min_rows():
    assert p.check_min_rows({'t': '5', 'u': 0}) == {'t': 5, 'u': 0}
    with pytest.raises(OpsError, match=r'min_rows\[t\] must be an integer'):
        p.check_min_rows({'t': 'many'})
    with pytest.raises(OpsError, match='must not be negative'):
        p.check_min_rows({'t': -1})


def _table(**kw):
    info = dict(exists=True, rows=10, indexes=[dict(name='t_pkey', valid=True, method='btree', amcheck='ok')])
    info.update(kw)
    return info


def test_table_problems():
    assert p.table_problems('t', _table()) == []
    assert p.table_problems('t', _table(), min_rows=10) == []
    assert p.table_problems('t', _table(), min_rows=11) == ['table t has 10 rows, fewer than min_rows 11']
    assert p.table_problems('public.gone', dict(exists=False)) == ['table public.gone does not exist']
    assert p.table_problems('t', dict(exists=False, error='cannot read table t: denied')) == \
        ['cannot read table t: denied']
    bad = _table(indexes=[dict(name='i1', valid=False), dict(name='i2', valid=True, amcheck='failed')])
    assert p.table_problems('t', bad) == ['table t has invalid indexes: i1',
                                          'table t: amcheck bt_index_check failed on i2']
    assert p.table_problems('t', bad, fail_on_integrity_errors=False) == []
    unknown = _table(rows=None, rows_note='never analyzed')
    assert p.table_problems('t', unknown, min_rows=1) == \
        ['table t: no row count to compare with min_rows 1 (never analyzed)']


def test_slow_query_problems():
    absent = dict(installed=False, available=False, message='pg_stat_statements is not installed in database x')
    assert p.slow_query_problems(absent, fail_on_slow_queries=True, require=False) == []
    assert p.slow_query_problems(absent, False, True) == ['pg_stat_statements is not installed in database x']
    slow = dict(installed=True, available=True, threshold_ms=100.0,
                queries=[dict(mean_ms=152.25), dict(mean_ms=120.0)])
    assert p.slow_query_problems(slow, False, True) == []
    assert p.slow_query_problems(slow, True, False) == ['2 slow queries with mean time above 100.0 ms (slowest 152.2 ms)']
    assert p.slow_query_problems(dict(slow, queries=[]), True, True) == []


def test_summary():
    result = dict(server_version='15.8', ping_ms=0.42, connections=dict(current=3, max_connections=100),
                  tables={'a': {}, 'b': {}},
                  slow_queries=dict(available=True, queries=[{}], threshold_ms=100.0))
    assert p.summary(result) == ('PostgreSQL 15.8 reachable (SELECT 1 in 0.4 ms), 3/100 connections; '
                                 '2 tables ok; 1 slow queries above 100.0 ms')
    result['slow_queries'] = dict(available=False, message='pg_stat_statements is not installed in database d')
    assert p.summary(result).endswith('; pg_stat_statements is not installed in database d')


def test_argument_spec_has_connection_and_check_options():
    spec = SPEC['argument_spec']
    assert spec['password']['no_log'] is True
    assert spec['count_method']['choices'] == ['exact', 'estimate']
    assert spec['slow_query_threshold_ms']['default'] == 100.0
    assert spec['slow_query_limit']['default'] == 10
    assert spec['fail_on_slow_queries']['default'] is False
    for option in ('sslmode', 'sslrootcert', 'passfile', 'connect_params', 'tables', 'min_rows',
                   'require_pg_stat_statements', 'integrity_checks'):
        assert option in spec


@pytest.mark.parametrize('params, message', [
    (dict(tables=['public.bot_messages', 'bot_messages; DROP TABLE bot_messages']),
     "tables: 'bot_messages; DROP TABLE bot_messages' contains spaces outside quotes"),
    (dict(tables=['bot_messages;drop']), "tables: 'bot_messages;drop' is not an unquoted SQL name (';')"),
    (dict(min_rows={'x;y': 1}), "min_rows: 'x;y' is not an unquoted SQL name (';')"),
])
def test_bad_table_names_are_refused_before_connecting(params, message):
    # No host is given: reaching connect() would fail differently.
    with pytest.raises(OpsError) as err:
        p.check(dict(params, host='/nonexistent', port=1, database='d', user='u'))
    assert err.value.msg.startswith(message) and err.value.msg.endswith(', nothing was checked')
    assert '\n' not in err.value.msg
