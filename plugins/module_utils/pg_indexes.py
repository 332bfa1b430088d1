# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The index and key-constraint builds of a parallel restore, scheduled here instead of by pg_restore --jobs.

Three things make pg_restore's own post-data phase slower than it needs to be (a 2M-row,
744 MiB table with 4 indexes on 2 cores: 5.0 s that way, 3.9 s this way, median of 4):

- A PRIMARY KEY or UNIQUE constraint is restored as ALTER TABLE ... ADD CONSTRAINT, which
  locks the table ACCESS EXCLUSIVE, so it never builds alongside the table's other indexes.
  Underneath it is a unique index: here that index is built with CREATE UNIQUE INDEX (a SHARE
  lock, so a table's builds run side by side), and attached at the end with ADD CONSTRAINT
  ... USING INDEX, which only writes the catalog. The constraint, its index's name and its
  definition come out the same (the integration tests compare pg_dump --schema-only output).
- Builds run `workers` at a time, each on one core: when there are at least as many builds
  as workers, PostgreSQL's parallel index build on top only oversubscribes the cores, so
  max_parallel_maintenance_workers is 0 for them.
- The longest builds go first (bigger table first, then the wider key), so the last one to
  finish does not start last.

Only ordinary tables that are not partitions take part; every other INDEX or CONSTRAINT entry
(on a partitioned table or a partition, or one whose script does not parse) and everything
else in post-data stays with pg_restore --jobs, which runs after these builds. A key
constraint in any but the plain form (DEFERRABLE, INCLUDE, WITH, NULLS NOT DISTINCT, a
tablespace, EXCLUDE) runs exactly as pg_restore wrote it, only scheduled here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import concurrent.futures
import re
import threading

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, first_line
from ansible_collections.hotelbot.ops.plugins.module_utils.postgres import connect, connection_options, program, run_client

# pg_restore --list lines of the entries scheduled here ("<dump id>; <catalog> <oid> <type> ...").
# INDEX ATTACH entries have catalog 0, FK and CHECK constraints another type word: neither matches.
BUILD_ENTRY = re.compile(r'^\d+; (?:1259 \d+ INDEX|2606 \d+ CONSTRAINT) ')
# An identifier as pg_dump prints it: bare, or double-quoted on one line.
IDENT = r'(?:[a-z_][a-z0-9_$]*|"(?:[^"\n]|"")+")'
# The comment pg_restore prints before each entry of its script.
HEADER = re.compile(r'^--\n-- Name: (?P<tag>[^\n]*); Type: (?P<type>[A-Z][A-Z ]*); Schema: [^\n]*; Owner: [^\n]*?'
                    r'(?:; Tablespace: [^\n]*)?\n--\n', re.M)
TRAILER = re.compile(r'^--\n-- PostgreSQL database dump complete\n--\n', re.M)
# Emitted between entries when the next one's tablespace or access method differs.
ENTRY_SETTING = re.compile(r'^SET default_(?:tablespace|table_access_method) = [^\n]*;$')
ON_TABLE = re.compile(r'^(?:CREATE (?:UNIQUE )?INDEX {i} ON (?:ONLY )?|ALTER TABLE ONLY )(?P<table>{i}\.{i})[ \n]'.format(i=IDENT))
# A btree index or key constraint on plain columns (what follows them may vary), and the plain key itself.
INDEX_COLUMNS = re.compile(r'^CREATE (?:UNIQUE )?INDEX {i} ON {i}\.{i} USING btree \((?P<columns>{i}(?:, {i})*)\)'.format(i=IDENT))
KEY_COLUMNS = re.compile(r'^ALTER TABLE ONLY (?P<table>{i}\.{i})\n    ADD CONSTRAINT (?P<name>{i}) '
                         r'(?P<kind>PRIMARY KEY|UNIQUE) \((?P<columns>{i}(?:, {i})*)\)'.format(i=IDENT))
PLAIN_KEY = re.compile(KEY_COLUMNS.pattern + ';$')
# Key width assumed for a column of variable length, an expression, or an index that is not a plain btree.
VARIABLE_WIDTH = 32


def unquote(name):
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def split_identifiers(text):
    return [unquote(found) for found in re.findall(IDENT, text)]


class Build:
    """One INDEX or CONSTRAINT entry: its SQL as pg_restore wrote it, and how it will be built."""

    def __init__(self, line, kind, tag, setup, statements):
        self.line = line
        self.kind = kind                # INDEX | CONSTRAINT
        self.tag = tag                  # the entry's name in the TOC ('table constraint' for constraints)
        self.setup = setup              # the SET default_tablespace / access method lines in effect
        self.statements = statements
        found = ON_TABLE.match(statements)
        self.table = found.group('table') if found else None
        key = PLAIN_KEY.match(statements) if setup_is_default(setup) else None
        self.key = key.groupdict() if key else None
        columns = KEY_COLUMNS.match(statements) or INDEX_COLUMNS.match(statements)
        self.columns = split_identifiers(columns.group('columns')) if columns else None
        self.cost = (0, 0)

    def sql(self):
        """What runs in the build's connection: the unique index of a plain key constraint, else the entry's SQL."""
        if self.key:
            return 'CREATE UNIQUE INDEX %s ON %s USING btree (%s);' % (self.key['name'], self.key['table'], self.key['columns'])
        return self.statements

    def attach(self):
        """The plain key constraint over the index sql() built: a catalog change only."""
        return 'ALTER TABLE ONLY %s ADD CONSTRAINT %s %s USING INDEX %s' % (
            self.key['table'], self.key['name'], self.key['kind'], self.key['name'])


def setup_is_default(setup):
    """True when the entry goes to the database's default tablespace."""
    return all(line == "SET default_tablespace = '';" for line in setup if line.startswith('SET default_tablespace '))


def parse_script(script, lines):
    """(session prelude, [Build]) from pg_restore's script of the TOC entries `lines`, in their
    order; None when the script does not split into exactly those entries (pg_restore then
    restores them itself)."""
    script = TRAILER.split(script)[0]
    headers = list(HEADER.finditer(script))
    if len(headers) != len(lines):
        return None
    prelude = statement_lines(script[:headers[0].start()] if headers else script)
    setup = [line for line in prelude if ENTRY_SETTING.match(line)]
    prelude = [line for line in prelude if not ENTRY_SETTING.match(line)]
    builds = []
    for position, (header, line) in enumerate(zip(headers, lines)):
        end = headers[position + 1].start() if position + 1 < len(headers) else len(script)
        body = script[header.end():end].strip('\n').split('\n')
        following = []  # settings printed for the next entry, at the end of this one's text
        while body and (not body[-1] or ENTRY_SETTING.match(body[-1])):
            line_text = body.pop()
            if line_text:
                following.insert(0, line_text)
        kind, tag = header.group('type'), header.group('tag')
        if kind not in ('INDEX', 'CONSTRAINT') or not entry_matches(line, kind, tag) or not body:
            return None
        builds.append(Build(line, kind, tag, list(setup), '\n'.join(body)))
        setup = merge_settings(setup, following)
    return prelude, builds


def entry_matches(line, kind, tag):
    """The TOC line names the same entry as the script's header: '<type> <schema> <tag> <owner>'."""
    return (' %s ' % kind) in line and (' %s ' % tag) in (line + ' ')


def merge_settings(current, changes):
    """Entry settings after `changes`: a later SET of the same name replaces the earlier one."""
    merged = dict((line.split(' = ', 1)[0], line) for line in current)
    merged.update((line.split(' = ', 1)[0], line) for line in changes)
    return list(merged.values())


def statement_lines(text):
    """The SQL lines of a script's prelude: no comments, blank lines or psql meta-commands."""
    return [line for line in text.split('\n') if line and not line.startswith(('--', '\\'))]


def schedule(builds, tables):
    """Order builds longest first: the bigger table, then the wider key, then TOC order.
    tables: table -> (bytes, {column: width in bytes, or -1 when variable})."""
    for build in builds:
        size, widths = tables.get(build.table, (0, {}))
        if build.columns is None:
            width = 2 * VARIABLE_WIDTH
        else:
            width = sum(widths.get(column, -1) if widths.get(column, -1) > 0 else VARIABLE_WIDTH
                        for column in build.columns)
        build.cost = (size, width)
    return sorted(builds, key=lambda build: build.cost, reverse=True)


class IndexBuilds:
    """Build the INDEX and CONSTRAINT entries of ordinary tables in `target`, `workers` at a time."""

    def __init__(self, params, target, src, bin_dir=None, workers=2, session_options=None):
        self.params = params
        self.target = target
        self.src = src
        self.bin_dir = bin_dir
        self.workers = max(1, int(workers))
        self.session_options = dict(session_options or {})
        self.prelude = ''
        self.open = set()
        self.lock = threading.Lock()
        self.failed = threading.Event()

    def plan(self, entries, list_file):
        """(builds in the order they start, the entries left to pg_restore)."""
        candidates = [line for line in entries if BUILD_ENTRY.match(line)]
        if not candidates:
            return [], entries
        with open(list_file, 'w') as handle:
            handle.write('\n'.join(candidates) + '\n')
        script = run_client(self.params, self.target, [program(self.bin_dir, 'pg_restore'), '-L', list_file, '-f', '-', self.src],
                            'restore into scratch database %s (reading the index definitions)' % self.target)
        parsed = parse_script(script, candidates)
        if parsed is None:
            return [], entries
        prelude, builds = parsed
        self.prelude = '\n'.join(prelude)
        tables = self.ordinary_tables(set(build.table for build in builds if build.table))
        builds = [build for build in builds if build.table in tables]
        chosen = set(build.line for build in builds)
        return schedule(builds, tables), [line for line in entries if line not in chosen]

    def ordinary_tables(self, names):
        """{table: (bytes, {column: typlen})} for the names that are ordinary tables, not partitions."""
        found = {}
        connection = connect(self.params, database=self.target)
        try:
            with connection.cursor() as cursor:
                for name in sorted(names):
                    cursor.execute("SELECT c.oid, pg_table_size(c.oid) FROM pg_catalog.pg_class c "
                                   "WHERE c.oid = to_regclass(%s) AND c.relkind = 'r' AND NOT c.relispartition", (name,))
                    row = cursor.fetchone()
                    if row is None:
                        continue
                    cursor.execute('SELECT a.attname, t.typlen FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t '
                                   'ON t.oid = a.atttypid WHERE a.attrelid = %s AND a.attnum > 0', (row[0],))
                    found[name] = (row[1], dict(cursor.fetchall()))
        finally:
            connection.close()
        return found

    def run(self, builds):
        """Build them all; the number that went in as a unique index plus ADD CONSTRAINT USING INDEX."""
        if not builds:
            return 0
        settings = dict(self.session_options)
        if len(builds) >= self.workers:
            settings['max_parallel_maintenance_workers'] = '0'
        options = connection_options(self.params, settings)
        failure = None
        with concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix='index-build') as pool:
            futures = [pool.submit(self.build, build, options) for build in builds]
            for future in concurrent.futures.as_completed(futures):
                try:
                    future.result()
                except OpsError as err:
                    if failure is None:
                        failure = err
                        self.stop_all(futures)
        if failure is not None:
            raise failure
        keys = [build for build in builds if build.key]
        if keys:
            connection = connect(self.params, database=self.target, options=options)
            step = 'restore: setting up the session for the key constraints'
            try:
                connection.execute(self.prelude)
                with connection.transaction():
                    for build in keys:
                        step = 'restore: adding constraint %s' % build.tag
                        connection.execute(build.attach())
            except Exception as err:  # pylint: disable=broad-except
                raise OpsError('%s failed: %s' % (step, first_line(err)))
            finally:
                connection.close()
        return len(keys)

    def build(self, build, options):
        if self.failed.is_set():
            return
        connection = connect(self.params, database=self.target, options=options)
        with self.lock:
            self.open.add(connection)
        try:
            if self.failed.is_set():
                return
            connection.execute('\n'.join([self.prelude] + build.setup))
            connection.execute(build.sql())
        except Exception as err:  # pylint: disable=broad-except
            if self.failed.is_set():
                raise OpsError('cancelled')
            raise OpsError('restore: building %s %s failed: %s' % (build.kind.lower(), build.tag, first_line(err)))
        finally:
            with self.lock:
                self.open.discard(connection)
            connection.close()

    def stop_all(self, futures):
        """After a failure: start nothing more, and cancel the builds under way (the scratch database is dropped)."""
        self.failed.set()
        for future in futures:
            future.cancel()
        with self.lock:
            running = list(self.open)
        for connection in running:
            try:
                connection.cancel()
            except Exception:  # pylint: disable=broad-except
                pass
