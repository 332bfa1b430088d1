# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL verification: connectivity, table row counts and integrity, slow queries.

Replaces the runbook's `psql -c "SELECT 1;"`, `SELECT COUNT(*) FROM public.bot_messages;`
and the pg_stat_statements slow-query check. Everything is read only: the session runs
with default_transaction_read_only, so check mode and normal mode are the same.

The pure helpers (table name parsing, version -> pg_stat_statements column, result
shaping) are importable without a server; check() takes module params and talks to
PostgreSQL through psycopg 3; check_task is the module's work (its SPEC is in modules/pg_check.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, first_line
from ansible_collections.hotelbot.ops.plugins.module_utils.postgres import (
    check_table_names as check_table_syntax,
    connect,
    database_label,
    parse_table_name,
    postgres_work,
    psycopg,
    quote_ident,
    sql,
)

QUERY_TEXT_LIMIT = 500
MAX_SLOW_QUERY_LIMIT = 1000
# Relation kinds whose rows can be counted: table, partitioned table, materialized view,
# view, foreign table.
COUNTABLE = {'r': 'table', 'p': 'partitioned table', 'm': 'materialized view', 'v': 'view', 'f': 'foreign table'}
RELKIND_NAMES = dict(COUNTABLE, i='index', I='partitioned index', S='sequence', c='composite type', t='TOAST table')


# --------------------------------------------------------------------------- pure helpers

def qualified_text(schema, table):
    """The quoted text form (for to_regclass and messages): "schema"."table"."""
    if schema is None:
        return quote_ident(table)
    return '%s.%s' % (quote_ident(schema), quote_ident(table))


def stat_statements_columns(server_version_num):
    """pg_stat_statements timing columns for a server: mean_time became mean_exec_time in 13."""
    if server_version_num >= 130000:
        return dict(mean='mean_exec_time', total='total_exec_time')
    return dict(mean='mean_time', total='total_time')


def truncate(text, limit=QUERY_TEXT_LIMIT):
    """(text cut to limit characters, whether it was cut)."""
    if text is None:
        return None, False
    if len(text) <= limit:
        return text, False
    return text[:limit] + '...', True


def tables_to_check(tables, min_rows):
    """tables, then min_rows keys not already listed (a table with a minimum is checked too)."""
    ordered = list(tables or [])
    for name in (min_rows or {}):
        if name not in ordered:
            ordered.append(name)
    return ordered


def table_problems(name, info, min_rows=None, fail_on_integrity_errors=True):
    """Operator-facing problem strings for one table's result."""
    problems = []
    if info.get('error'):
        return [info['error']]
    if not info.get('exists'):
        return ['table %s does not exist' % name]
    if fail_on_integrity_errors:
        invalid = [idx['name'] for idx in info.get('indexes', []) if not idx.get('valid')]
        if invalid:
            problems.append('table %s has invalid indexes: %s' % (name, ', '.join(invalid)))
        broken = [idx['name'] for idx in info.get('indexes', []) if idx.get('amcheck') == 'failed']
        if broken:
            problems.append('table %s: amcheck bt_index_check failed on %s' % (name, ', '.join(broken)))
    if min_rows is not None:
        rows = info.get('rows')
        if rows is None:
            problems.append('table %s: no row count to compare with min_rows %d (%s)'
                            % (name, min_rows, info.get('rows_note', 'unknown')))
        elif rows < min_rows:
            problems.append('table %s has %d rows, fewer than min_rows %d' % (name, rows, min_rows))
    return problems


def slow_query_problems(result, fail_on_slow_queries, require):
    problems = []
    if not result.get('available'):
        if require:
            problems.append(result.get('message') or 'pg_stat_statements is not available')
        return problems
    if fail_on_slow_queries and result.get('queries'):
        problems.append('%d slow queries with mean time above %s ms (slowest %.1f ms)' % (
            len(result['queries']), result['threshold_ms'], result['queries'][0]['mean_ms']))
    return problems


def check_table_names(tables, min_rows):
    """OpsError naming the option and the entry for the first name that is not schema.table SQL syntax."""
    check_table_syntax('tables', tables, 'nothing was checked')
    check_table_syntax('min_rows', list(min_rows or {}), 'nothing was checked')


def check_min_rows(min_rows):
    """{name: int} from the min_rows option, or OpsError."""
    checked = {}
    for name, value in (min_rows or {}).items():
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise OpsError('min_rows[%s] must be an integer, got %r' % (name, value))
        if number < 0:
            raise OpsError('min_rows[%s] must not be negative' % name)
        checked[name] = number
    return checked


# --------------------------------------------------------------------------- server side

def server_info(conn):
    timer = time.monotonic()
    one = conn.execute('SELECT 1').fetchone()[0]
    ping_ms = round((time.monotonic() - timer) * 1000, 3)
    if one != 1:
        raise OpsError('SELECT 1 returned %r' % (one,))
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
        "current_database(), current_user, pg_is_in_recovery()").fetchone()
    conns = conn.execute(
        "SELECT count(*) FILTER (WHERE backend_type = 'client backend'), "
        "count(*) FILTER (WHERE backend_type = 'client backend' AND datname = current_database()), "
        "current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int "
        "FROM pg_stat_activity").fetchone()
    connections = dict(current=conns[0], this_database=conns[1], max_connections=conns[2],
                       superuser_reserved=conns[3],
                       usage_pct=round(100.0 * conns[0] / conns[2], 1) if conns[2] else None)
    return dict(ping_ms=ping_ms, server_version=row[0], server_version_num=row[1], database=row[2],
                user=row[3], in_recovery=row[4], connections=connections)


def extension_schema(conn, name):
    """The schema an extension is installed in, or None when it is not installed."""
    row = conn.execute('SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = %s',
                       (name,)).fetchone()
    return row[0] if row else None


def check_table(conn, name, count_method='exact', integrity_checks=True, amcheck_schema=None):
    """One table's result dict; never raises for problems of the table itself."""
    info = dict(exists=False, rows=None, count_method=count_method, checks_run=[], checks_skipped={})
    try:
        schema, table = parse_table_name(name)
    except ValueError as err:
        info['error'] = 'table name %s: %s' % (name, err)
        return info
    row = conn.execute(
        'SELECT c.oid::int, n.nspname, c.relname, c.relkind::text, c.reltuples::float8 '
        'FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)',
        (qualified_text(schema, table),)).fetchone()
    if row is None:
        return info
    oid, info['schema'], info['name'], relkind, reltuples = row
    info['kind'] = RELKIND_NAMES.get(relkind, relkind)
    if relkind not in COUNTABLE:
        info['error'] = '%s is a %s, not a table' % (name, info['kind'])
        return info
    info['exists'] = True
    info['checks_run'].append('exists')
    relation = sql.Identifier(info['schema'], info['name'])

    if count_method == 'exact':
        try:
            with conn.transaction():
                # Read the heap end to end: no index-only scan may answer count(*).
                conn.execute('SET LOCAL enable_indexonlyscan = off')
                conn.execute('SET LOCAL enable_indexscan = off')
                conn.execute('SET LOCAL enable_bitmapscan = off')
                info['rows'] = conn.execute(sql.SQL('SELECT count(*) FROM {}').format(relation)).fetchone()[0]
            info['checks_run'].append('seq_scan')
        except psycopg.Error as err:
            info['error'] = 'cannot read table %s: %s' % (name, first_line(err))
            return info
    else:
        if reltuples is None or reltuples < 0:
            info['rows_note'] = 'no estimate: the table was never analyzed (run ANALYZE or use count_method exact)'
        else:
            info['rows'] = int(reltuples)
        info['checks_skipped']['seq_scan'] = 'count_method is estimate'

    if integrity_checks:
        _check_indexes(conn, oid, info, amcheck_schema)
    else:
        info['checks_skipped']['indexes'] = 'integrity_checks is false'
    return info


def _check_indexes(conn, oid, info, amcheck_schema):
    indexes = []
    for idx_oid, idx_name, valid, ready, method, relkind in conn.execute(
            'SELECT i.indexrelid::int, c.relname, i.indisvalid, i.indisready, a.amname, c.relkind::text '
            'FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam '
            'WHERE i.indrelid = %s ORDER BY c.relname', (oid,)).fetchall():
        indexes.append(dict(name=idx_name, oid=idx_oid, valid=bool(valid and ready), method=method,
                            partitioned=relkind == 'I'))
    info['indexes'] = indexes
    info['indexes_valid'] = all(idx['valid'] for idx in indexes)
    info['invalid_indexes'] = [idx['name'] for idx in indexes if not idx['valid']]
    info['checks_run'].append('indexes_valid')

    if amcheck_schema is None:
        info['checks_skipped']['amcheck'] = 'the amcheck extension is not installed in this database'
        return
    # A partitioned index has no storage of its own: its partitions' indexes are checked
    # when the partitions are named in tables.
    btree = [idx for idx in indexes if idx['method'] == 'btree' and not idx['partitioned']]
    if not btree:
        info['checks_skipped']['amcheck'] = 'no btree indexes with storage (partitioned indexes are checked per partition)'
        return
    function = sql.SQL('{}.bt_index_check').format(sql.Identifier(amcheck_schema))
    ran = False
    for idx in btree:
        if not idx['valid']:
            idx['amcheck'] = 'skipped: index is not valid'
            continue
        try:
            conn.execute(sql.SQL('SELECT {}(%s::oid::regclass)').format(function), (idx['oid'],))
            idx['amcheck'] = 'ok'
            ran = True
        except psycopg.errors.InsufficientPrivilege as err:
            info['checks_skipped']['amcheck'] = 'no permission to run bt_index_check: %s' % first_line(err)
            for other in btree:
                other.pop('amcheck', None)
            return
        except psycopg.Error as err:
            idx['amcheck'] = 'failed'
            idx['amcheck_error'] = first_line(err)
            ran = True
    if ran:
        info['checks_run'].append('amcheck')


def slow_queries(conn, server_version_num, threshold_ms=100.0, limit=10):
    """Slowest statements by mean time from pg_stat_statements, or why there are none."""
    columns = stat_statements_columns(server_version_num)
    threshold_ms = float(threshold_ms)
    result = dict(installed=False, available=False, column=columns['mean'], threshold_ms=threshold_ms,
                  limit=limit, queries=[])
    schema = extension_schema(conn, 'pg_stat_statements')
    if schema is None:
        result['message'] = ('pg_stat_statements is not installed in database %s: run CREATE EXTENSION '
                             'pg_stat_statements (as a superuser) with pg_stat_statements in '
                             'shared_preload_libraries; no slow-query check was done'
                             % conn.info.dbname)
        return result
    result['installed'] = True
    result['schema'] = schema
    query = sql.SQL(
        'SELECT s.query, s.{mean}, s.calls, s.{total}, r.rolname, d.datname '
        'FROM {view} s LEFT JOIN pg_roles r ON r.oid = s.userid LEFT JOIN pg_database d ON d.oid = s.dbid '
        'WHERE s.{mean} > %s ORDER BY s.{mean} DESC LIMIT %s').format(
            mean=sql.Identifier(columns['mean']), total=sql.Identifier(columns['total']),
            view=sql.Identifier(schema, 'pg_stat_statements'))
    try:
        rows = conn.execute(query, (threshold_ms, limit)).fetchall()
    except psycopg.Error as err:
        result['message'] = 'pg_stat_statements is installed but cannot be read: %s' % first_line(err)
        return result
    result['available'] = True
    for text, mean, calls, total, role, database in rows:
        text, cut = truncate(text)
        result['queries'].append(dict(query=text, query_truncated=cut, mean_ms=round(float(mean), 3),
                                      calls=int(calls), total_ms=round(float(total), 3), user=role,
                                      database=database))
    return result


def check(params):
    """Run every requested check; returns the result dict or raises OpsError with it."""
    min_rows = check_min_rows(params.get('min_rows'))
    check_table_names(params.get('tables'), min_rows)
    started = time.monotonic()
    conn = connect(params)
    connect_ms = round((time.monotonic() - started) * 1000, 3)
    try:
        result = _checks(conn, params, min_rows, connect_ms)
    except psycopg.Error as err:
        raise OpsError('PostgreSQL error while checking database %s: %s' % (database_label(params), first_line(err)))
    finally:
        conn.close()
    if result['problems']:
        raise OpsError('; '.join(result['problems']), **{k: v for k, v in result.items() if k != 'changed'})
    result['msg'] = summary(result)
    return result


@postgres_work
def check_task(task):
    """The module's work: every check on the task's params (read only, so check mode is the same)."""
    return check(task.params)


def _checks(conn, params, min_rows, connect_ms):
    """The checks on an open connection: the result dict with its problems list."""
    conn.execute('SET default_transaction_read_only = on')
    result = dict(changed=False, connect_ms=connect_ms)
    result.update(server_info(conn))
    problems = []

    amcheck_schema = None
    if params.get('integrity_checks', True):
        amcheck_schema = extension_schema(conn, 'amcheck')
    tables = {}
    for name in tables_to_check(params.get('tables'), min_rows):
        info = check_table(conn, name, params.get('count_method', 'exact'),
                           params.get('integrity_checks', True), amcheck_schema)
        if name in min_rows:
            info['min_rows'] = min_rows[name]
        found = table_problems(name, info, min_rows.get(name), params.get('fail_on_integrity_errors', True))
        info['ok'] = not found
        tables[name] = info
        problems.extend(found)
    result['tables'] = tables

    if params.get('slow_queries', True):
        result['slow_queries'] = slow_queries(conn, result['server_version_num'],
                                              params.get('slow_query_threshold_ms', 100.0),
                                              params.get('slow_query_limit', 10))
        problems.extend(slow_query_problems(result['slow_queries'], params.get('fail_on_slow_queries', False),
                                            params.get('require_pg_stat_statements', False)))
    result['problems'] = problems
    return result


def summary(result):
    """One line for the operator."""
    parts = ['PostgreSQL %s reachable (SELECT 1 in %.1f ms), %d/%d connections' % (
        result['server_version'], result['ping_ms'], result['connections']['current'],
        result['connections']['max_connections'])]
    if result.get('tables'):
        parts.append('%d tables ok' % len(result['tables']))
    slow = result.get('slow_queries')
    if slow is not None:
        if slow.get('available'):
            parts.append('%d slow queries above %s ms' % (len(slow['queries']), slow['threshold_ms']))
        else:
            parts.append(slow.get('message', 'pg_stat_statements not available'))
    return '; '.join(parts)
