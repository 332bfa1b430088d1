"""The parallel loader (pg_load) and the leftover handling of pg_restore against the sandbox's PostgreSQL.

No stubs: real archives from pg_dump, real COPY connections, real faults (a terminated
backend, a SIGKILLed run), and the database state is what is checked.
"""
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import pg_restore as module
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_archive import ArchiveError, CustomArchive
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_backup import checksum
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_indexes import IndexBuilds
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_restore import lock_key, restore

# `live` is a fixture: importing it makes it available here.
from test_pg_restore import DB, admin, databases, fingerprint, live, params  # noqa: F401 pylint: disable=unused-import

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = 'pgload source'      # awkward data, two tables, a sequence, FK, CHECK, view, large object
BIG = 'pgload big'            # one plain table, big enough that a load lasts a couple of seconds
BIG_ROWS = 300000
MSGS_ROWS = 50000

SOURCE_SQL = r"""
CREATE TABLE guests (id serial PRIMARY KEY, name text NOT NULL UNIQUE, country text);
INSERT INTO guests (name, country)
SELECT 'Gäst ' || g || ' 🏨', CASE WHEN g % 3 = 0 THEN NULL ELSE 'DE' END FROM generate_series(1, 50) g;
CREATE SEQUENCE ticket_seq START 1000;
SELECT setval('ticket_seq', 4242);
CREATE TABLE msgs (
    id bigint PRIMARY KEY,
    guest_id int REFERENCES guests (id),
    payload jsonb,
    blob bytea,
    amount numeric(24, 8) CHECK (amount >= 0),
    at timestamptz,
    tags text[],
    pad text NOT NULL,
    body_len int GENERATED ALWAYS AS (length(body)) STORED,
    body text   -- last: values ending in a backslash or '\.' end COPY lines
);
INSERT INTO msgs (id, guest_id, body, payload, blob, amount, at, tags, pad)
SELECT g,
       CASE WHEN g % 7 = 0 THEN NULL ELSE 1 + g % 50 END,
       CASE g % 13 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN E'\\.' WHEN 3 THEN E'\n\\.\n' WHEN 4 THEN E'\\'
            ELSE (ARRAY[E'tab\there', E'new\nline', E'back\\slash', E'line\n\\.\nafter', 'emoji 😀🏨👍',
                        'Grüße ÄÖÜ ß', E'cr\r\nlf', E'quote '' "dq"'])[1 + g % 8] || ' #' || g END,
       CASE WHEN g % 11 = 0 THEN NULL
            ELSE jsonb_build_object('n', g, 's', E'a\tb\n"c"\\ \\.', 'u', 'ü😀', 'a', jsonb_build_array(g, null, true, 1.5)) END,
       CASE g % 17 WHEN 0 THEN NULL WHEN 1 THEN ''::bytea
            ELSE decode(md5(g::text), 'hex') || '\x5c2e0a0009'::bytea END,
       CASE WHEN g % 19 = 0 THEN NULL ELSE (g * 1.23456789)::numeric(24, 8) END,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second 123457 microseconds',
       CASE WHEN g % 23 = 0 THEN '{}'::text[] ELSE ARRAY['a', E'b\tc', NULL, 'ü', E'\\.', g::text] END,
       repeat(md5(g::text), 3)
FROM generate_series(1, %(rows)s) g;
CREATE INDEX msgs_at ON msgs (at);
CREATE INDEX msgs_payload ON msgs USING gin (payload);
CREATE VIEW recent AS SELECT id, body FROM msgs WHERE guest_id IS NOT NULL;
SELECT lo_from_bytea(0, '\x5c2e0a00ff'::bytea);
"""


def quoted(name):
    return '"%s"' % name.replace('"', '""')


def pg_env(sandbox):
    pg = sandbox.state['postgres']
    return dict(os.environ, PGHOST=pg['socket_dir'], PGPORT=str(pg['port']), PGUSER=pg['superuser'])


def bin_dir(sandbox):
    return sandbox.state['postgres']['bin_dir']


def dump(sandbox, database, path, *options):
    """pg_dump `database` to path, with sidecar and a manifest that names the restore target DB."""
    subprocess.run([os.path.join(bin_dir(sandbox), 'pg_dump'), '--file', path] + list(options) + [database],
                   env=pg_env(sandbox), check=True)
    with open(path + '.sha256', 'w') as handle:
        handle.write(checksum(path, os.path.basename(path))[1])
    with admin(sandbox, database) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT 'public.' || relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")]
        rows = dict((t, conn.execute('SELECT count(*) FROM %s' % t).fetchone()[0]) for t in tables)
    with open(path + '.manifest.json', 'w') as handle:
        json.dump(dict(database=DB, format='directory' if os.path.isdir(path) else 'custom', row_counts=rows), handle)
    return path


def snapshot(sandbox, database):
    """Everything the restore must reproduce, computed by the server."""
    with admin(sandbox, database) as conn:
        def rows(query):
            return conn.execute(query).fetchall()
        tables = dict((t, rows("SELECT count(*), md5(string_agg(t::text, E'\\n' ORDER BY t.id)) FROM public.%s t" % t)[0])
                      for t in ('guests', 'msgs'))
        return dict(
            tables=tables,
            sequences=rows('SELECT last_value, is_called FROM public.ticket_seq UNION ALL '
                           'SELECT last_value, is_called FROM public.guests_id_seq'),
            large_objects=rows("SELECT count(*), md5(string_agg(oid::text || ':' || encode(lo_get(oid), 'hex'), ',' "
                               "ORDER BY oid)) FROM pg_largeobject_metadata"),
            constraints=rows("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated "
                             "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"),
            indexes=rows("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"),
            views=rows("SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1"),
            generated=rows("SELECT count(*) FROM public.msgs WHERE body_len IS DISTINCT FROM length(body)"),
        )


@pytest.fixture(scope='module')
def archives(sandbox, tmp_path_factory):
    """The source databases (made once) and their archives in several formats."""
    out = tmp_path_factory.mktemp('pgload')
    with admin(sandbox) as conn:
        for name in (SOURCE, BIG):
            conn.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)' % quoted(name))
            conn.execute('CREATE DATABASE %s' % quoted(name))
    with admin(sandbox, SOURCE) as conn:
        conn.execute(SOURCE_SQL.replace('%(rows)s', str(MSGS_ROWS)))
    with admin(sandbox, BIG) as conn:
        conn.execute('CREATE TABLE msgs (id int PRIMARY KEY, body text NOT NULL)')
        conn.execute('INSERT INTO msgs SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, %d) g' % BIG_ROWS)
    found = dict(
        custom=dump(sandbox, SOURCE, str(out / 'source.dump'), '-Fc'),
        directory=dump(sandbox, SOURCE, str(out / 'source.dir'), '-Fd'),
        inserts=dump(sandbox, SOURCE, str(out / 'inserts.dump'), '-Fc', '--inserts', '--rows-per-insert=500'),
        big=dump(sandbox, BIG, str(out / 'big.dump'), '-Fc'),
        source=snapshot(sandbox, SOURCE),
    )
    yield found
    with admin(sandbox) as conn:
        for name in (SOURCE, BIG):
            conn.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)' % quoted(name))


def scratch_databases(sandbox):
    return [d for d in databases(sandbox) if d.startswith(DB + '__restore_')]


def comment_of(sandbox, name):
    with admin(sandbox) as conn:
        return conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                            (name,)).fetchone()[0]


def wait_for_copy(sandbox, timeout=30):
    """(pid, database) of a backend running the loader's COPY into a scratch database."""
    deadline = time.monotonic() + timeout
    with admin(sandbox) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid, datname FROM pg_stat_activity WHERE strpos(datname, '__restore_') > 0 "
                "AND state = 'active' AND query LIKE 'COPY public.msgs %%FROM stdin' ORDER BY pid LIMIT 1").fetchone()
            if row:
                return row
            time.sleep(0.01)
    raise AssertionError('no COPY into a scratch database seen within %ss' % timeout)


def wait_lock_free(sandbox, timeout=15):
    """Until nobody holds the restore lock of DB (a killed run's session may take a moment to end)."""
    deadline = time.monotonic() + timeout
    with admin(sandbox) as conn:
        while time.monotonic() < deadline:
            if conn.execute('SELECT pg_try_advisory_lock(%s)', (lock_key(DB),)).fetchone()[0]:
                conn.execute('SELECT pg_advisory_unlock(%s)', (lock_key(DB),))
                return
            time.sleep(0.05)
    raise AssertionError('the restore lock was not released')


# ---------------------------------------------------------------- 1. fidelity

@pytest.mark.parametrize('fmt', ['custom', 'directory'])
def test_parallel_copy_reproduces_every_byte(live, archives, fmt):
    result = restore(params(live), DB, archives[fmt], confirm=True, jobs=2, bin_dir=bin_dir(live))
    load = result['load']
    assert load['method'] == 'parallel copy' and load['jobs'] == 2
    # guests: pkey, name key; msgs: pkey, msgs_at, the gin index (the FK stays with pg_restore)
    assert load['indexes'] == dict(built=5, as_unique_index=3)
    tables = dict((t['table'], t) for t in load['tables'])
    read = 'archive' if fmt == 'custom' else 'pg_restore'
    assert tables['public.msgs'] == dict(table='public.msgs', mode='copy', connections=2, read=read)
    assert tables['public.guests'] == dict(table='public.guests', mode='copy', connections=1, read=read)
    assert result['row_counts'] == {'public.msgs': MSGS_ROWS, 'public.guests': 50}
    restored = snapshot(live, DB)
    assert restored['tables']['msgs'][0] == MSGS_ROWS
    assert restored == archives['source']
    assert len(restored['indexes']) == 5 and len(restored['constraints']) == 5
    assert all(validated for (_rel, _name, _definition, validated) in restored['constraints'])
    assert restored['generated'] == [(0,)] and restored['large_objects'][0][0] == 1
    assert scratch_databases(live) == []


@pytest.mark.parametrize('level', ['1', '6', '9'])
def test_archive_reader_gives_what_pg_restore_gives(live, archives, tmp_path, level):
    """Every table's data read from a real pg_dump archive is byte for byte what pg_restore prints."""
    path = dump(live, SOURCE, str(tmp_path / 'z.dump'), '-Fc', '-Z', level)
    archive = CustomArchive(path)
    listing = subprocess.run([os.path.join(bin_dir(live), 'pg_restore'), '-l', path], capture_output=True,
                             text=True, check=True).stdout
    table_data = [line for line in listing.splitlines() if ' TABLE DATA ' in line]
    assert len(table_data) == 2 and set(int(line.split(';')[0]) for line in table_data) <= set(archive.offsets)
    for line in table_data:
        (tmp_path / 'one.list').write_text(line + '\n')
        script = subprocess.run([os.path.join(bin_dir(live), 'pg_restore'), '-L', str(tmp_path / 'one.list'),
                                 '-f', '-', path], capture_output=True, check=True).stdout
        after_copy = script.split(b' FROM stdin;\n', 1)[1]
        data = archive.data(int(line.split(';')[0]))
        try:
            ours = data.read()
        finally:
            data.close()
        assert len(ours) > 500 and ours.rstrip(b'\n').endswith(b'\n\\.')
        assert after_copy.startswith(ours)


def test_uncompressed_archive_is_read_by_pg_restore(live, archives, tmp_path):
    path = dump(live, SOURCE, str(tmp_path / 'plain.dump'), '-Fc', '-Z', '0')
    with pytest.raises(ArchiveError, match='not compressed'):
        CustomArchive(path).data(min(CustomArchive(path).offsets))
    result = restore(params(live), DB, path, confirm=True, jobs=2, bin_dir=bin_dir(live))
    assert set(t['read'] for t in result['load']['tables']) == {'pg_restore'}
    assert snapshot(live, DB) == archives['source']


# ---------------------------------------------------------------- 2. --inserts falls back to pg_restore

def test_insert_archive_falls_back_to_pg_restore(live, archives):
    result = restore(params(live), DB, archives['inserts'], confirm=True, jobs=2, bin_dir=bin_dir(live))
    assert result['load']['method'] == 'parallel copy'
    assert sorted((t['table'], t['mode'], t['connections']) for t in result['load']['tables']) == [
        ('public.guests', 'pg_restore', 1), ('public.msgs', 'pg_restore', 1)]
    assert snapshot(live, DB) == archives['source']


# ---------------------------------------------------------------- 3. a COPY connection dies mid-load

def test_terminated_copy_backend_fails_the_restore_and_drops_scratch(live, archives):
    before, dbs = fingerprint(live), databases(live)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(restore, params(live), DB, archives['big'], confirm=True, jobs=2, bin_dir=bin_dir(live))
        pid, scratch = wait_for_copy(live)
        with admin(live) as conn:
            assert conn.execute('SELECT pg_terminate_backend(%s)', (pid,)).fetchone()[0]
        # libpq words the same loss by where in the protocol it lands: the server's notice, or the socket gone.
        lost = r'(terminating connection|connection to server was lost|server closed the connection|connection socket closed)'
        with pytest.raises(OpsError, match=r'^restore: loading public\.msgs failed: .*' + lost) as failed:
            running.result(timeout=60)
    assert failed.value.result['scratch_database'] == scratch
    assert scratch_databases(live) == [] and databases(live) == dbs
    assert fingerprint(live) == before


# ---------------------------------------------------------------- 4. a killed run leaves a scratch database

CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_restore import restore
restore(json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], confirm=True, jobs=2, bin_dir=sys.argv[5])
"""


def test_leftover_of_a_killed_run_is_refused_reported_and_dropped(live, archives):
    before = fingerprint(live)
    child = subprocess.Popen([sys.executable, '-c', CHILD, os.path.join(ROOT, '.collections'),
                              json.dumps(params(live)), DB, archives['big'], bin_dir(live)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        leftover = wait_for_copy(live)[1]
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    wait_lock_free(live)
    assert scratch_databases(live) == [leftover]
    assert not (comment_of(live, leftover) or '').startswith(module.VALIDATED_MARK)

    # it is never swapped in
    with pytest.raises(OpsError, match='never passed validation'):
        restore(params(live), DB, archives['big'], phase='swap', scratch_database=leftover, confirm=True)
    assert fingerprint(live) == before and scratch_databases(live) == [leftover]

    # check mode reports it and drops nothing
    planned = restore(params(live), DB, archives['big'], phase='prepare', check_mode=True, bin_dir=bin_dir(live))
    assert planned['dropped_leftovers'] == [leftover] and leftover in planned['msg']
    assert scratch_databases(live) == [leftover] and fingerprint(live) == before

    # a real run drops it, then restores
    done = restore(params(live), DB, archives['big'], confirm=True, jobs=2, bin_dir=bin_dir(live))
    assert done['dropped_leftovers'] == [leftover] and done['changed']
    assert leftover not in databases(live) and scratch_databases(live) == []
    assert fingerprint(live)[0] == BIG_ROWS
    assert fingerprint(live) == fingerprint(live, BIG)
    assert fingerprint(live, done['previous_database']) == before


# ---------------------------------------------------------------- 5. a validated scratch database is kept

def test_prepared_scratch_databases_are_not_leftovers(live, archives, monkeypatch):
    stamps = iter(['20260101T000000Z', '20260102T000000Z'])
    real = module.Restore.__init__

    def stamped(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.stamp = next(stamps)
    monkeypatch.setattr(module.Restore, '__init__', stamped)
    first = restore(params(live), DB, archives['custom'], phase='prepare', jobs=2, bin_dir=bin_dir(live))
    second = restore(params(live), DB, archives['custom'], phase='prepare', jobs=2, bin_dir=bin_dir(live))
    assert first['dropped_leftovers'] == [] and second['dropped_leftovers'] == []
    assert scratch_databases(live) == [first['scratch_database'], second['scratch_database']]
    assert first['scratch_database'] != second['scratch_database']
    for name in scratch_databases(live):
        assert comment_of(live, name).startswith(module.VALIDATED_MARK)
    assert snapshot(live, first['scratch_database']) == archives['source']
    assert fingerprint(live)[0] == 10   # the live database was not touched


# ---------------------------------------------------------------- 6. a damaged data stream inside the archive

def test_damaged_table_data_names_the_table_and_drops_scratch(live, archives, tmp_path):
    """The checksum sidecar matches (the archive was written damaged): reading its data fails mid-stream."""
    path = str(tmp_path / 'damaged.dump')
    with open(archives['big'], 'rb') as handle:
        data = bytearray(handle.read())
    middle = len(data) * 3 // 5
    data[middle:middle + 256] = b'\x00' * 256
    with open(path, 'wb') as handle:
        handle.write(data)
    with open(archives['big'] + '.manifest.json') as src, open(path + '.manifest.json', 'w') as dst:
        dst.write(src.read())
    with open(path + '.sha256', 'w') as handle:
        handle.write(checksum(path, os.path.basename(path))[1])
    before, dbs = fingerprint(live), databases(live)
    with pytest.raises(OpsError, match=r'^restore: reading the data of public\.msgs from the archive failed: '
                                       r'(could not uncompress data|damaged data block)'):
        restore(params(live), DB, path, confirm=True, jobs=2, bin_dir=bin_dir(live))
    assert fingerprint(live) == before and databases(live) == dbs and scratch_databases(live) == []


# ---------------------------------------------------------------- 7. indexes and key constraints (pg_indexes)

SCHEMA = 'pgload schema'    # every kind of INDEX / CONSTRAINT entry pg_indexes meets, and some it leaves alone
SCHEMA_SQL = r"""
CREATE SCHEMA "s 2";
CREATE TABLE "s 2"."my ""t"" tbl" (id bigint PRIMARY KEY, "Col" text, b int, c int, r int4range,
    CONSTRAINT "b key" UNIQUE (b) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT c_excl EXCLUDE USING btree (c WITH =),
    CONSTRAINT col_b_key UNIQUE ("Col", b));
INSERT INTO "s 2"."my ""t"" tbl" SELECT g, 'v' || g, g, g, int4range(g, g + 1) FROM generate_series(1, 20000) g;
CREATE INDEX lower_col ON "s 2"."my ""t"" tbl" (lower("Col")) WHERE b > 3;
CREATE INDEX r_gist ON "s 2"."my ""t"" tbl" USING gist (r);
CREATE TABLE public.u (id int PRIMARY KEY, v int, n int NOT NULL,
    CONSTRAINT u_n_key UNIQUE NULLS NOT DISTINCT (n), CONSTRAINT u_inc UNIQUE (v) INCLUDE (n));
INSERT INTO public.u SELECT g, g, g FROM generate_series(1, 5000) g;
CREATE INDEX u_v_half ON public.u (v) WITH (fillfactor = 50);
ALTER TABLE public.u CLUSTER ON u_v_half;
ALTER TABLE public.u REPLICA IDENTITY USING INDEX u_n_key;
CREATE TABLE public.f (id int PRIMARY KEY, u_id int REFERENCES public.u (id), col text, b int,
    FOREIGN KEY (col, b) REFERENCES "s 2"."my ""t"" tbl" ("Col", b));
INSERT INTO public.f SELECT g, g, 'v' || g, g FROM generate_series(1, 1000) g;
CREATE TABLE public.p (id int, at int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE public.p1 PARTITION OF public.p FOR VALUES FROM (0) TO (100);
CREATE INDEX p_at ON public.p (at);
INSERT INTO public.p SELECT g, g % 100 FROM generate_series(1, 3000) g;
"""
CATALOG = """
SELECT c.conrelid::regclass::text, c.conname, c.contype, c.condeferrable, c.condeferred, c.conindid::regclass::text,
       i.indisprimary, i.indisunique, i.indimmediate, i.indisclustered, i.indisreplident, i.indnullsnotdistinct
FROM pg_constraint c LEFT JOIN pg_index i ON i.indexrelid = c.conindid
WHERE c.connamespace IN ('public'::regnamespace, '"s 2"'::regnamespace) ORDER BY 1, 2
"""


def schema_dump(sandbox, database):
    """pg_dump --schema-only of database, without the per-run \\restrict keys."""
    out = subprocess.run([os.path.join(bin_dir(sandbox), 'pg_dump'), '--schema-only', database], env=pg_env(sandbox),
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if not line.startswith(('\\restrict', '\\unrestrict'))]


def contents(sandbox, database):
    with admin(sandbox, database) as conn:
        tables = ['"s 2"."my ""t"" tbl"', 'public.u', 'public.f', 'public.p']
        return dict((t, conn.execute('SELECT count(*), md5(string_agg(x::text, \',\' ORDER BY x::text)) FROM %s x' % t).fetchone())
                    for t in tables), conn.execute(CATALOG).fetchall()


@pytest.fixture(scope='module')
def schema_archive(sandbox, tmp_path_factory):
    with admin(sandbox) as conn:
        conn.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)' % quoted(SCHEMA))
        conn.execute('CREATE DATABASE %s' % quoted(SCHEMA))
    with admin(sandbox, SCHEMA) as conn:
        conn.execute(SCHEMA_SQL)
    yield dump(sandbox, SCHEMA, str(tmp_path_factory.mktemp('pgindexes') / 'schema.dump'), '-Fc')
    with admin(sandbox) as conn:
        conn.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)' % quoted(SCHEMA))


def test_index_builds_reproduce_the_schema_exactly(live, schema_archive):
    result = restore(params(live), DB, schema_archive, confirm=True, jobs=2, bin_dir=bin_dir(live))
    # ordinary tables' INDEX / CONSTRAINT entries: t (pkey, b key, c_excl, col_b_key, lower_col, r_gist),
    # u (pkey, u_n_key, u_inc, u_v_half), f (pkey); the partitioned p and p1 stay with pg_restore
    # the plain keys t_pkey, col_b_key, u_pkey, f_pkey go in as unique indexes; the others run as written
    assert result['load']['indexes'] == dict(built=11, as_unique_index=4)
    assert sorted(t['table'] for t in result['load']['tables']) == ['"s 2"."my ""t"" tbl"', 'public.f', 'public.p1', 'public.u']
    assert schema_dump(live, DB) == schema_dump(live, SCHEMA)
    assert contents(live, DB) == contents(live, SCHEMA)
    with admin(live, DB) as conn:
        with pytest.raises(Exception, match='violates foreign key constraint'):
            conn.execute("INSERT INTO public.f VALUES (5000, 1, 'v1', 2)")
        with pytest.raises(Exception, match='duplicate key value violates unique constraint "col_b_key"'):
            conn.execute('INSERT INTO "s 2"."my ""t"" tbl" (id, "Col", b, c) VALUES (99999, \'v1\', 1, 99999)')
    assert scratch_databases(live) == []


FAILING_SQL = r"""
CREATE FUNCTION public.picky(i int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
    -- refuses one value, only in a scratch database: the source database builds its index
    IF i = 77 AND strpos(current_database(), '__restore_') > 0 THEN
        RAISE EXCEPTION 'picky refuses %', i;
    END IF;
    RETURN i;
END $$;
CREATE INDEX msgs_picky ON public.msgs (public.picky(id));
"""


def test_a_failing_index_build_names_it_and_drops_scratch(live, archives, tmp_path):
    with admin(live) as conn:
        conn.execute('DROP DATABASE IF EXISTS "pgload picky" WITH (FORCE)')
        conn.execute('CREATE DATABASE "pgload picky" TEMPLATE %s' % quoted(BIG))
    try:
        with admin(live, 'pgload picky') as conn:
            conn.execute(FAILING_SQL)
            conn.execute('CREATE INDEX msgs_body ON public.msgs (body)')
        path = dump(live, 'pgload picky', str(tmp_path / 'picky.dump'), '-Fc')
    finally:
        with admin(live) as conn:
            conn.execute('DROP DATABASE IF EXISTS "pgload picky" WITH (FORCE)')
    before, dbs = fingerprint(live), databases(live)
    with pytest.raises(OpsError, match=r'^restore: building index msgs_picky failed: picky refuses 77'):
        restore(params(live), DB, path, confirm=True, jobs=2, bin_dir=bin_dir(live))
    assert fingerprint(live) == before and databases(live) == dbs and scratch_databases(live) == []


def test_index_builds_run_with_the_archive_session_settings(live, archives):
    """A statement_timeout given in the connection options (or set on the role) does not cut a build
    short: like pg_restore, the builds run after the archive's own settings (statement_timeout = 0)."""
    target = 'pgload builds'
    with admin(live) as conn:
        conn.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)' % quoted(target))
        conn.execute('CREATE DATABASE %s TEMPLATE %s' % (quoted(target), quoted(BIG)))
    try:
        with admin(live, target) as conn:
            conn.execute('ALTER TABLE public.msgs DROP CONSTRAINT msgs_pkey')
        listing = subprocess.run([os.path.join(bin_dir(live), 'pg_restore'), '-l', archives['big']], capture_output=True,
                                 text=True, check=True).stdout
        builds = IndexBuilds(params(live), target, archives['big'], bin_dir=bin_dir(live), workers=2)
        planned, rest = builds.plan(listing.splitlines(), os.path.join(str(live.dir), 'builds.list'))
        assert [b.tag for b in planned] == ['msgs msgs_pkey'] and not any('CONSTRAINT' in line for line in rest)
        builds.params = dict(params(live), connect_params={'options': '-c statement_timeout=20'})
        assert builds.run(planned) == 1
        with admin(live, target) as conn:
            assert conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'msgs_pkey'"
                                ).fetchall() == [('PRIMARY KEY (id)',)]
    finally:
        with admin(live) as conn:
            conn.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)' % quoted(target))
