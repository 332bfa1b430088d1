#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: pg_check
short_description: Verify a PostgreSQL database - connectivity, row counts, table integrity, slow queries
version_added: 0.1.0
description:
  - Connects with libpq settings (psycopg 3) and runs C(SELECT 1), reads the server version, the number of
    client connections against C(max_connections), and whether the server is a standby.
  - For each table in O(tables) (and each table named in O(min_rows)) counts the rows and runs cheap, honest
    integrity checks, reporting in RV(tables) which checks ran and which were skipped and why.
  - Lists slow statements from C(pg_stat_statements) by mean time, using the column the server has
    (C(mean_exec_time) since PostgreSQL 13, C(mean_time) before; the runbook's C(mean_time) query fails on
    13 and later). When the extension is not installed the result says so instead of failing, unless
    O(require_pg_stat_statements=true).
  - Read only. The session runs with C(default_transaction_read_only); check mode does exactly the same.
  - Fails with a clear message when it cannot connect (libpq's reason, never the password), a table is
    missing, a table has fewer rows than O(min_rows), an index is invalid or fails amcheck
    (see O(fail_on_integrity_errors)), or on slow queries when O(fail_on_slow_queries=true).
    The failed result still holds everything that was measured.
  - Long counts can be bounded with O(connect_params) C(options=-c statement_timeout=60s).
author:
  - hotelbot.ops maintainers (@hotelbot)
extends_documentation_fragment:
  - hotelbot.ops.postgres
attributes:
  check_mode:
    support: full
    description: Reads only; check mode runs the same checks.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
options:
  tables:
    description:
      - Tables (or views, materialized views, foreign tables) to count and check, written as in SQL,
        optionally schema-qualified, for example V(public.bot_messages).
      - The name is split into schema and table on the first dot outside double quotes. Unquoted parts are
        folded to lower case as PostgreSQL does; quote a part to keep its case or to include dots, spaces or
        quotes, doubling a quote inside it, for example V("Sales"."odd ""name"".v2").
      - Without a schema the table is found through the connection's C(search_path).
      - An unquoted part may hold only letters, digits, C(_) and C($) (not starting with a digit); anything
        else (V(bot_messages;drop), a space) fails the task before connecting, naming the entry. Names are
        always sent quoted, never as SQL text.
      - Results are keyed by the name exactly as given here.
    type: list
    elements: str
    default: []
  count_method:
    description:
      - V(exact) runs C(SELECT count(*)) with index scans disabled, so the whole table is read by a
        sequential scan (this is also the C(seq_scan) integrity check).
      - V(estimate) uses the planner's C(pg_class.reltuples) (cheap, approximate, unknown for a table that
        was never analyzed); the C(seq_scan) check is then skipped.
    type: str
    choices: [exact, estimate]
    default: exact
  min_rows:
    description:
      - Minimum expected row count per table, for example V(public.bot_messages) with 1000. The module fails
        when a table has fewer rows.
      - Keys are table names as in O(tables); a table named only here is checked too.
    type: dict
    default: {}
  integrity_checks:
    description:
      - Check each table's indexes. C(indexes_valid) checks C(pg_index.indisvalid) and C(indisready) (an
        interrupted C(CREATE INDEX CONCURRENTLY) or C(REINDEX) leaves an invalid index). When the C(amcheck)
        extension is installed in the database, C(amcheck) runs C(bt_index_check) on every valid btree
        index (it needs execute permission on the function; without it the check is reported as skipped).
    type: bool
    default: true
  fail_on_integrity_errors:
    description: Fail when an index is invalid or fails amcheck. With V(false) this is only reported.
    type: bool
    default: true
  slow_queries:
    description: Read slow statements from C(pg_stat_statements) (across all databases, as the runbook does).
    type: bool
    default: true
  slow_query_threshold_ms:
    description: Statements with a mean execution time above this many milliseconds are slow (at least 0).
    type: float
    default: 100
  slow_query_limit:
    description: Return at most this many slow statements, slowest first (1 to 1000).
    type: int
    default: 10
  fail_on_slow_queries:
    description: Fail when there is any slow statement.
    type: bool
    default: false
  require_pg_stat_statements:
    description: Fail when C(pg_stat_statements) is not installed or cannot be read in O(database).
    type: bool
    default: false
notes:
  - Reading other roles' statements in C(pg_stat_statements) needs C(pg_read_all_stats); without it their
    query text shows as C(<insufficient privilege>).
  - Query texts are kept as C(pg_stat_statements) stores them (normalized, constants usually replaced by
    C($1)) and cut to 500 characters.
seealso:
  - name: pg_stat_statements
    description: The extension's columns, including the PostgreSQL 13 rename of C(mean_time).
    link: https://www.postgresql.org/docs/current/pgstatstatements.html
  - name: amcheck
    description: The index verification functions used by the amcheck check.
    link: https://www.postgresql.org/docs/current/amcheck.html
'''

EXAMPLES = r'''
- name: Verify the bot's database after a rollback
  hotelbot.ops.pg_check:
    host: db.internal
    user: hotelbot
    password: "{{ vault_pg_password }}"
    database: hotel_voice_bot
    sslmode: verify-full
    sslrootcert: /etc/ssl/certs/rds-ca.pem
    tables:
      - public.bot_messages
    min_rows:
      public.bot_messages: 1000
  register: db

- name: Show slow statements
  ansible.builtin.debug:
    var: db.slow_queries.queries

- name: Gate on slow queries, cheap row estimates, names needing quotes
  hotelbot.ops.pg_check:
    host: db.internal
    user: hotelbot
    passfile: ~/.pgpass
    database: 'hotel "bot"'
    tables:
      - '"odd ""name"""'
      - '"Reports"."daily.v2"'
    count_method: estimate
    slow_query_threshold_ms: 250
    fail_on_slow_queries: true
    require_pg_stat_statements: true
'''

RETURN = r'''
msg:
  description: One-line summary, or on failure every problem found.
  returned: always
  type: str
database:
  description: The database connected to.
  returned: success
  type: str
  sample: hotel_voice_bot
user:
  description: The role the checks ran as (C(current_user)).
  returned: success
  type: str
server_version:
  description: The server version as the server reports it.
  returned: success
  type: str
  sample: "15.8 (Debian 15.8-0+deb12u1)"
server_version_num:
  description: The server version as a number (C(server_version_num)).
  returned: success
  type: int
  sample: 150008
in_recovery:
  description: True when the server is a standby (C(pg_is_in_recovery())).
  returned: success
  type: bool
connect_ms:
  description: Milliseconds to open the connection.
  returned: success
  type: float
ping_ms:
  description: Milliseconds for C(SELECT 1).
  returned: success
  type: float
connections:
  description:
    - Client connections now (C(current), and C(this_database)), C(max_connections),
      C(superuser_reserved) connections and C(usage_pct) of C(max_connections).
  returned: success
  type: dict
  sample: {current: 4, this_database: 2, max_connections: 100, superuser_reserved: 3, usage_pct: 4.0}
tables:
  description:
    - Per table, keyed by the name as given in O(tables). C(exists); C(schema) and C(name) as found;
      C(kind); C(rows) (null when unknown) and C(count_method); C(indexes) (name, C(valid), C(method),
      C(amcheck) result), C(indexes_valid), C(invalid_indexes); C(checks_run) (of C(exists), C(seq_scan),
      C(indexes_valid), C(amcheck)); C(checks_skipped) (check -> reason); C(min_rows) when set; C(error)
      when the table could not be read; C(ok).
  returned: success or failure after connecting
  type: dict
  sample:
    public.bot_messages:
      exists: true
      schema: public
      name: bot_messages
      kind: table
      rows: 1000
      count_method: exact
      indexes_valid: true
      invalid_indexes: []
      indexes: [{name: bot_messages_pkey, valid: true, method: btree, amcheck: ok}]
      checks_run: [exists, seq_scan, indexes_valid, amcheck]
      checks_skipped: {}
      min_rows: 1000
      ok: true
slow_queries:
  description:
    - C(installed) (pg_stat_statements is installed in the database), C(available) (it could be read),
      C(column) (the mean-time column used, C(mean_exec_time) or C(mean_time)), C(schema) the extension is
      installed in, C(threshold_ms), C(limit),
      C(message) when not available, and C(queries), slowest first, each with C(query) (cut to 500
      characters, C(query_truncated)), C(mean_ms), C(calls), C(total_ms), C(user) and C(database).
  returned: when O(slow_queries=true) and connected
  type: dict
  sample:
    installed: true
    available: true
    column: mean_exec_time
    threshold_ms: 100.0
    limit: 10
    queries: [{query: "SELECT pg_sleep($1)", query_truncated: false, mean_ms: 150.2, calls: 2,
               total_ms: 300.4, user: hotelbot, database: hotel_voice_bot}]
problems:
  description: Every problem found (the failure message is these joined).
  returned: success or failure after connecting
  type: list
  elements: str
elapsed_s:
  description: Seconds the module took.
  returned: always
  type: float
'''

from ansible_collections.hotelbot.ops.plugins.module_utils.common import run
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_check import MAX_SLOW_QUERY_LIMIT, check_task
from ansible_collections.hotelbot.ops.plugins.module_utils.postgres import postgres_argument_spec

SPEC = dict(argument_spec=dict(
    postgres_argument_spec(),
    tables=dict(type='list', elements='str', default=[]),
    count_method=dict(type='str', default='exact', choices=['exact', 'estimate']),
    min_rows=dict(type='dict', default={}),
    integrity_checks=dict(type='bool', default=True),
    fail_on_integrity_errors=dict(type='bool', default=True),
    slow_queries=dict(type='bool', default=True),
    slow_query_threshold_ms=dict(type='float', default=100.0, context=dict(min=0)),
    slow_query_limit=dict(type='int', default=10, context=dict(min=1, max=MAX_SLOW_QUERY_LIMIT)),
    fail_on_slow_queries=dict(type='bool', default=False),
    require_pg_stat_statements=dict(type='bool', default=False),
))


def main():
    run(SPEC, check_task)


if __name__ == '__main__':
    main()
