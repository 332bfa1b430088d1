"""pg_backup against the sandbox's real PostgreSQL 15: dumps are restored to prove they are complete.

Most tests call module_utils.pg_backup.backup() in-process (the same code the module runs);
one runs the module through `ansible`. Faults (pg_dump killed, a truncated dump, a bad
password) are injected with wrapper scripts given as pg_dump_path.
"""
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import uuid

import psycopg
import pytest
from psycopg import sql

from ansible_collections.hotelbot.ops.plugins.module_utils import pg_backup as b
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError

from tests.integration.conftest import BIN, ROOT

QUOTED_DB = 'hotel "bot"'


# ---------------------------------------------------------------- helpers

def pg(sandbox):
    return sandbox.state['postgres']


def params(sandbox, **overrides):
    base = dict(host=pg(sandbox)['host'], port=pg(sandbox)['port'], user=pg(sandbox)['user'],
                password=sandbox.secrets['postgres_password'], database=pg(sandbox)['database'],
                sslmode=None, sslrootcert=None, passfile=None, connect_timeout=10, connect_params={},
                dest=None, path=None, format='custom', compress=None, jobs=None,
                verify_tables=['public.bot_messages'], keep=None, pg_dump_path=None, bin_dir=None, extra_args=[],
                allow_no_data=False)
    base.update(overrides)
    return base


def superuser_params(sandbox, database, **overrides):
    """As the superuser over the unix socket (trust, no password)."""
    return params(sandbox, host=pg(sandbox)['socket_dir'], user=pg(sandbox)['superuser'], password=None,
                  database=database, **overrides)


def su_connect(sandbox, database='postgres'):
    return psycopg.connect(host=pg(sandbox)['socket_dir'], port=pg(sandbox)['port'], user=pg(sandbox)['superuser'],
                           dbname=database, autocommit=True)


def su_env(sandbox):
    return dict(os.environ, PGHOST=pg(sandbox)['socket_dir'], PGPORT=str(pg(sandbox)['port']),
                PGUSER=pg(sandbox)['superuser'])


def count(sandbox, database, table='public.bot_messages'):
    schema, name = table.split('.')
    with su_connect(sandbox, database) as conn:
        return conn.execute(sql.SQL('SELECT count(*) FROM {}').format(sql.Identifier(schema, name))).fetchone()[0]


def tool(sandbox, name):
    return os.path.join(pg(sandbox)['bin_dir'], name)


@pytest.fixture
def dest():
    directory = tempfile.mkdtemp(prefix='pgb-')
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def scratch(sandbox):
    """Create scratch databases by name; dropped afterwards."""
    made = []

    def create(name=None):
        name = name or 'pgb_scratch_%s' % uuid.uuid4().hex[:8]
        with su_connect(sandbox) as conn:
            conn.execute(sql.SQL('DROP DATABASE IF EXISTS {}').format(sql.Identifier(name)))
            conn.execute(sql.SQL('CREATE DATABASE {}').format(sql.Identifier(name)))
        made.append(name)
        return name

    yield create
    with su_connect(sandbox) as conn:
        for name in made:
            conn.execute(sql.SQL('DROP DATABASE IF EXISTS {} WITH (FORCE)').format(sql.Identifier(name)))


def restore(sandbox, path, database, fmt, jobs=None):
    """Restore a dump into database, failing on the first error."""
    if fmt == 'plain':
        argv = [tool(sandbox, 'psql'), '--no-psqlrc', '-v', 'ON_ERROR_STOP=1', '--single-transaction', '-q',
                '-f', path]
        env = dict(su_env(sandbox), PGDATABASE=database)
    else:
        argv = [tool(sandbox, 'pg_restore'), '--exit-on-error', '--no-owner', '--dbname=' + database, path]
        if jobs:
            argv.append('--jobs=%d' % jobs)
        env = su_env(sandbox)
    completed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr


def toc_count(sandbox, path):
    listing = subprocess.run([tool(sandbox, 'pg_restore'), '--list', path], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    return sum(1 for line in listing.splitlines() if line.strip() and not line.startswith(';'))


def sha256sum_ok(directory, sidecar):
    return subprocess.run(['sha256sum', '--strict', '-c', os.path.basename(sidecar)], cwd=directory,
                          capture_output=True, text=True, check=False).returncode == 0


def assert_complete_backup(result, dest, fmt):
    path = result['path']
    names = sorted(os.listdir(dest))
    base = os.path.basename(path)
    assert names == sorted([base, base + '.sha256', base + '.manifest.json'])
    assert not any('.partial-' in n for n in names)
    with open(path + '.manifest.json') as handle:
        manifest = json.load(handle)
    assert manifest == result['manifest']
    assert manifest['tool'] == 'hotelbot.ops.pg_backup' and manifest['file'] == base and manifest['format'] == fmt
    assert manifest['sha256'] == result['sha256'] and manifest['size_bytes'] == result['size_bytes']
    assert sha256sum_ok(dest, path + '.sha256')
    if fmt == 'directory':
        assert os.path.isdir(path)
    else:
        assert os.path.isfile(path) and os.path.getsize(path) == result['size_bytes']
        with open(path, 'rb') as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == result['sha256']
    return manifest


def write_wrapper(directory, body):
    """An executable pg_dump stand-in: records its argv and environment marker, then runs body."""
    path = os.path.join(directory, 'pg_dump')
    with open(path, 'w') as handle:
        handle.write('#!/bin/bash\n'
                     'log=%s\n'
                     'if [ "$1" = --version ]; then exec "$REAL_PG_DUMP" "$@"; fi\n'
                     'printf "%%s\\n" "$0" "$@" > "$log/argv"\n'
                     'printf "%%s\\n" "${HOTELBOT_TEST_MARKER:-missing}" > "$log/marker"\n'
                     'printf "%%s\\n" "${PGPASSWORD:+set}" "${PGDATABASE:-none}" > "$log/pgenv"\n'
                     'for arg in "$@"; do case "$arg" in --file=*) file="${arg#--file=}";; esac; done\n'
                     % directory + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def wrapper_env(sandbox, monkeypatch):
    monkeypatch.setenv('REAL_PG_DUMP', tool(sandbox, 'pg_dump'))
    monkeypatch.setenv('HOTELBOT_TEST_MARKER', 'marker-%s' % uuid.uuid4().hex[:6])
    return os.environ['HOTELBOT_TEST_MARKER']


# ---------------------------------------------------------------- formats

def test_custom_format_by_default_is_complete_and_restorable(sandbox, dest, scratch):
    result = b.backup(params(sandbox, dest=dest, format=None))
    assert result['changed'] and result['format'] == 'custom' and result['path'].endswith('.dump')
    assert os.path.basename(result['path']).startswith('hotel_voice_bot-')
    manifest = assert_complete_backup(result, dest, 'custom')
    live = count(sandbox, pg(sandbox)['database'])
    assert manifest['row_counts'] == {'public.bot_messages': live} and live == 1000
    assert manifest['toc_entries'] == toc_count(sandbox, result['path']) > 0
    assert manifest['database'] == 'hotel_voice_bot' and manifest['server_version'].startswith('15.')
    assert manifest['pg_dump_version'].startswith('pg_dump (PostgreSQL) ') and manifest['created_at'].endswith('+00:00')
    assert '--format=c' in result['command'] and result['pruned'] == [] and result['dump_seconds'] > 0
    target = scratch()
    restore(sandbox, result['path'], target, 'custom')
    assert count(sandbox, target) == manifest['row_counts']['public.bot_messages']


def test_directory_format_with_two_jobs(sandbox, dest, scratch):
    result = b.backup(params(sandbox, dest=dest, format='directory', jobs=2, compress='9'))
    assert result['path'].endswith('.dir') and '--jobs=2' in result['command'] and '--compress=9' in result['command']
    manifest = assert_complete_backup(result, dest, 'directory')
    with open(result['path'] + '.sha256') as handle:
        listed = [line.split('  ', 1)[1] for line in handle.read().splitlines()]
    files = sorted(os.path.join(os.path.basename(result['path']), n) for n in os.listdir(result['path']))
    assert listed == files and any(n.endswith('toc.dat') for n in listed)
    assert manifest['toc_entries'] == toc_count(sandbox, result['path'])
    target = scratch()
    restore(sandbox, result['path'], target, 'directory', jobs=2)
    assert count(sandbox, target) == manifest['row_counts']['public.bot_messages'] == 1000


def test_plain_sql(sandbox, dest, scratch):
    result = b.backup(params(sandbox, dest=dest, format='plain'))
    assert result['path'].endswith('.sql')
    manifest = assert_complete_backup(result, dest, 'plain')
    assert manifest['toc_entries'] is None and 'plain SQL has no table of contents' in manifest['toc_note']
    target = scratch()
    restore(sandbox, result['path'], target, 'plain')
    assert count(sandbox, target) == 1000


def test_explicit_path_is_never_overwritten(sandbox, dest):
    path = os.path.join(dest, 'mine.dump')
    result = b.backup(params(sandbox, path=path))
    assert result['path'] == path and sha256sum_ok(dest, path + '.sha256')
    before = os.stat(path).st_mtime_ns
    with pytest.raises(OpsError, match='refusing to overwrite'):
        b.backup(params(sandbox, path=path))
    assert os.stat(path).st_mtime_ns == before


def test_database_name_that_needs_quoting(sandbox, dest, scratch):
    source = scratch(QUOTED_DB)
    with su_connect(sandbox, source) as conn:
        conn.execute('CREATE SCHEMA "Odd ""schema"""')
        conn.execute('CREATE TABLE "Odd ""schema"""."Guest ""list""" (id int primary key, name text)')
        conn.execute('INSERT INTO "Odd ""schema"""."Guest ""list""" SELECT g, \'guest \' || g '
                     'FROM generate_series(1, 321) g')
    result = b.backup(superuser_params(sandbox, QUOTED_DB, dest=dest,
                                       verify_tables=['"Odd ""schema"""."Guest ""list"""']))
    name = os.path.basename(result['path'])
    assert name.startswith(b.slug(QUOTED_DB) + '-') and '"' not in name and ' ' not in name
    manifest = assert_complete_backup(result, dest, 'custom')
    assert manifest['database'] == QUOTED_DB
    assert manifest['row_counts'] == {'Odd "schema".Guest "list"': 321}
    target = scratch()
    restore(sandbox, result['path'], target, 'custom')
    with su_connect(sandbox, target) as conn:
        assert conn.execute('SELECT count(*) FROM "Odd ""schema"""."Guest ""list"""').fetchone()[0] == 321


def test_manifest_counts_come_from_the_dump_snapshot(sandbox, dest, scratch, wrapper_env, tmp_path):
    """Rows inserted while pg_dump runs are neither counted nor dumped."""
    source = scratch()
    with su_connect(sandbox, source) as conn:
        conn.execute('CREATE TABLE t (id serial primary key, v text)')
        conn.execute("INSERT INTO t (v) SELECT 'x' FROM generate_series(1, 500)")
    # pg_dump starts only after another session committed more rows.
    insert = "INSERT INTO t (v) SELECT 'late' FROM generate_series(1, 77)"
    extra = 'PGHOST=%s PGUSER=%s PGDATABASE=%s "%s" -q -c "%s"\nexec "$REAL_PG_DUMP" "$@"\n' % (
        pg(sandbox)['socket_dir'], pg(sandbox)['superuser'], source, tool(sandbox, 'psql'), insert)
    wrapper = write_wrapper(str(tmp_path), extra)
    result = b.backup(superuser_params(sandbox, source, dest=dest, verify_tables=['t'], pg_dump_path=wrapper))
    assert result['manifest']['row_counts'] == {'public.t': 500}
    assert count(sandbox, source, 'public.t') == 577
    target = scratch()
    restore(sandbox, result['path'], target, 'custom')
    assert count(sandbox, target, 'public.t') == 500


# ---------------------------------------------------------------- retention

def test_keep_prunes_only_our_older_backups_of_this_database(sandbox, dest):
    with open(os.path.join(dest, 'notes.txt'), 'w') as handle:
        handle.write('not a backup')
    foreign = os.path.join(dest, 'hotel_voice_bot-20000101T000000Z.dump')
    with open(foreign, 'wb') as handle:
        handle.write(b'PGDMP made by hand, no manifest')
    other_tool = os.path.join(dest, 'x.dump')
    with open(other_tool, 'wb') as handle:
        handle.write(b'x')
    with open(other_tool + '.manifest.json', 'w') as handle:
        json.dump(dict(tool='another-tool', database='hotel_voice_bot', file='x.dump', created_at='2000'), handle)
    other_db = b.backup(superuser_params(sandbox, 'postgres', dest=dest, verify_tables=[]))

    first = b.backup(params(sandbox, dest=dest, keep=2))
    second = b.backup(params(sandbox, dest=dest, keep=2))
    assert first['pruned'] == [] and second['pruned'] == []
    third = b.backup(params(sandbox, dest=dest, keep=2))
    assert third['pruned'] == [first['path']]
    left = set(os.listdir(dest))
    for gone in (first['path'], first['path'] + '.sha256', first['path'] + '.manifest.json'):
        assert os.path.basename(gone) not in left
    for kept in (second['path'], third['path']):
        assert sha256sum_ok(dest, kept + '.sha256')
    for untouched in ('notes.txt', os.path.basename(foreign), 'x.dump', 'x.dump.manifest.json',
                      os.path.basename(other_db['path']), os.path.basename(other_db['path']) + '.manifest.json'):
        assert untouched in left
    fourth = b.backup(params(sandbox, dest=dest, keep=1))
    assert sorted(fourth['pruned']) == sorted([second['path'], third['path']])
    assert os.path.exists(fourth['path']) and os.path.exists(other_db['path'])


# ---------------------------------------------------------------- check mode

def server_state(sandbox):
    with su_connect(sandbox) as conn:
        databases = conn.execute('SELECT datname FROM pg_database ORDER BY 1').fetchall()
    with su_connect(sandbox, pg(sandbox)['database']) as conn:
        tables = conn.execute("SELECT relname, n_tup_ins, n_tup_del FROM pg_stat_user_tables ORDER BY 1").fetchall()
    return databases, tables, count(sandbox, pg(sandbox)['database'])


def test_check_mode_writes_nothing_and_reports_sizes(sandbox, dest):
    missing = os.path.join(dest, 'not', 'yet')
    with open(os.path.join(dest, 'existing.txt'), 'w') as handle:
        handle.write('x')
    before_server = server_state(sandbox)
    plan = b.backup(params(sandbox, dest=missing, keep=3), check_mode=True)
    assert plan['changed'] and plan['would_write'].startswith(missing + '/hotel_voice_bot-')
    assert plan['would_write'].endswith('.dump') and plan['dest_exists'] is False
    assert plan['database_size_bytes'] > 0 and plan['free_bytes'] > plan['database_size_bytes']
    assert 'conservative' in plan['msg'] and 'path' not in plan
    assert os.listdir(dest) == ['existing.txt'] and not os.path.exists(os.path.join(dest, 'not'))

    real = b.backup(params(sandbox, dest=dest))
    listing = sorted(os.listdir(dest))
    plan = b.backup(params(sandbox, dest=dest, keep=1), check_mode=True)
    assert plan['would_prune'] == [real['path']] and sorted(os.listdir(dest)) == listing
    assert server_state(sandbox) == before_server


def test_check_mode_fails_clearly_without_space(sandbox, dest, monkeypatch):
    monkeypatch.setattr(b, 'free_bytes', lambda path: 1024)
    with pytest.raises(OpsError, match='not enough free space.*1024 bytes free.*conservative') as caught:
        b.backup(params(sandbox, dest=dest), check_mode=True)
    assert caught.value.result['database_size_bytes'] > 1024 and caught.value.changed is False
    assert os.listdir(dest) == []


# ---------------------------------------------------------------- faults

def test_pg_dump_killed_after_writing_leaves_nothing_that_looks_like_a_backup(sandbox, dest, wrapper_env, tmp_path):
    # The real pg_dump writes the whole dump, then the "process" is SIGKILLed with a half-written file.
    wrapper = write_wrapper(str(tmp_path), '"$REAL_PG_DUMP" "$@"\n'
                                           'truncate -s "$(( $(stat -c %s "$file") / 2 ))" "$file"\n'
                                           'kill -KILL $$\n')
    with pytest.raises(OpsError) as caught:
        b.backup(params(sandbox, dest=dest, pg_dump_path=wrapper))
    assert 'pg_dump failed (killed by SIGKILL)' in caught.value.msg and 'no backup was written' in caught.value.msg
    assert os.listdir(dest) == []
    with open(tmp_path / 'argv') as handle:  # it really ran, and wrote to a partial name
        assert '.dump.partial-' in handle.read()


def test_truncated_dump_with_exit_0_is_caught_by_the_read_back(sandbox, dest, wrapper_env, tmp_path):
    wrapper = write_wrapper(str(tmp_path), '"$REAL_PG_DUMP" "$@" || exit $?\n'
                                           'truncate -s "$(( $(stat -c %s "$file") - 200 ))" "$file"\n')
    with pytest.raises(OpsError, match=r'pg_restore.*failed \(exit status 1\); no backup was written'):
        b.backup(params(sandbox, dest=dest, pg_dump_path=wrapper))
    assert os.listdir(dest) == []


def test_truncated_plain_dump_is_caught(sandbox, dest, wrapper_env, tmp_path):
    wrapper = write_wrapper(str(tmp_path), '"$REAL_PG_DUMP" "$@" || exit $?\n'
                                           'truncate -s "$(( $(stat -c %s "$file") / 2 ))" "$file"\n')
    with pytest.raises(OpsError, match='truncated'):
        b.backup(params(sandbox, dest=dest, format='plain', pg_dump_path=wrapper))
    assert os.listdir(dest) == []


def test_real_pg_dump_sigkilled_mid_dump(sandbox, dest, scratch, tmp_path, monkeypatch):
    """SIGKILL the real pg_dump process while it is writing a bigger table."""
    source = scratch()
    with su_connect(sandbox, source) as conn:
        conn.execute('CREATE TABLE big (id int, payload text)')
        conn.execute("INSERT INTO big SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 6) "
                     "FROM generate_series(1, 300000) g")
    monkeypatch.setenv('REAL_PG_DUMP', tool(sandbox, 'pg_dump'))
    # exec keeps the pid: the pid written is pg_dump's own.
    wrapper = write_wrapper(str(tmp_path), 'echo $$ > "%s/pid"\nexec "$REAL_PG_DUMP" "$@"\n' % tmp_path)
    outcome = {}

    def run_backup():
        try:
            outcome['result'] = b.backup(superuser_params(sandbox, source, dest=dest, compress='0', verify_tables=[],
                                                          pg_dump_path=wrapper))
        except OpsError as err:
            outcome['error'] = err

    worker = threading.Thread(target=run_backup)
    worker.start()
    deadline = time.monotonic() + 30
    killed_at = None
    while time.monotonic() < deadline and worker.is_alive():
        partials = [n for n in os.listdir(dest) if '.partial-' in n]
        if partials and os.path.exists(tmp_path / 'pid'):
            size = os.path.getsize(os.path.join(dest, partials[0]))
            if size > 1024 * 1024:
                os.kill(int((tmp_path / 'pid').read_text()), signal.SIGKILL)
                killed_at = size
                break
        time.sleep(0.005)
    worker.join(60)
    assert killed_at, 'pg_dump finished before it could be killed: %r' % outcome
    assert 'error' in outcome and 'killed by SIGKILL' in outcome['error'].msg
    assert os.listdir(dest) == []


def test_bad_password_fails_clearly_without_showing_it(sandbox, dest):
    secret = 'Wrong-Password-%s' % uuid.uuid4().hex
    with pytest.raises(OpsError) as caught:
        b.backup(params(sandbox, dest=dest, password=secret))
    text = json.dumps(dict(msg=caught.value.msg, **caught.value.result))
    assert 'password authentication failed' in text and secret not in text
    assert not os.path.exists(dest) or os.listdir(dest) == []


def test_missing_verify_table_fails_before_writing(sandbox, dest):
    with pytest.raises(OpsError, match='verify_tables: table public.nope does not exist'):
        b.backup(params(sandbox, dest=dest, verify_tables=['public.nope']))
    assert os.listdir(dest) == []


def test_password_only_in_the_environment_and_the_callers_env_reaches_pg_dump(sandbox, dest, wrapper_env, tmp_path):
    wrapper = write_wrapper(str(tmp_path), 'exec "$REAL_PG_DUMP" "$@"\n')
    result = b.backup(params(sandbox, dest=dest, pg_dump_path=wrapper))
    assert_complete_backup(result, dest, 'custom')
    argv = (tmp_path / 'argv').read_text()
    password = sandbox.secrets['postgres_password']
    assert password not in argv and password not in json.dumps(result)
    assert str(pg(sandbox)['port']) not in argv.split('\n')  # connection settings are not on argv either
    assert (tmp_path / 'marker').read_text().strip() == wrapper_env
    assert (tmp_path / 'pgenv').read_text().split() == ['set', 'hotel_voice_bot']


# ---------------------------------------------------------------- full disk

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (we are root here); skipped where it cannot be mounted."""
    mount_point = tmp_path / 'disk'
    mount_point.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m,mode=0755', 'tmpfs', str(mount_point)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip('cannot mount a tmpfs here: %s' % mounted.stderr.strip())
    try:
        yield str(mount_point)
    finally:
        subprocess.run(['umount', '-l', str(mount_point)], check=False)


def fill(disk, leave_pages):
    """Fill the disk with a file so that exactly leave_pages pages stay free."""
    stat_ = os.statvfs(disk)
    filler = os.path.join(disk, 'filler')
    with open(filler, 'ab') as handle:
        handle.write(b'\0' * ((stat_.f_bavail - leave_pages) * stat_.f_frsize))
    assert os.statvfs(disk).f_bavail == leave_pages


@pytest.mark.parametrize('spare_pages, what', [(-2, 'the dump'), (0, 'the checksum file'), (1, 'the manifest')])
def test_a_full_disk_keeps_nothing_and_says_so(sandbox, small_disk, tmp_path, spare_pages, what):
    """The disk fills while the dump, its checksum or its manifest is written: one line naming the
    directory and what was being written, and nothing of the backup is left behind."""
    probe = b.backup(params(sandbox, dest=str(tmp_path / 'probe')))
    pages = -(-probe['size_bytes'] // os.statvfs(small_disk).f_frsize)  # the same data dumps to the same size
    dest = os.path.join(small_disk, 'backups')
    os.mkdir(dest)
    fill(small_disk, pages + spare_pages)
    with pytest.raises(OpsError) as caught:
        b.backup(params(sandbox, dest=dest))
    assert caught.value.msg == 'no space left on %s writing %s; nothing was kept' % (dest, what)
    assert os.listdir(dest) == []
    os.unlink(os.path.join(small_disk, 'filler'))  # with room again, the next run succeeds
    assert_complete_backup(b.backup(params(sandbox, dest=dest)), dest, 'custom')


# ---------------------------------------------------------------- what the dump holds

@pytest.fixture
def with_audit_log(sandbox, scratch):
    """A database with the bot's messages and a big log table one might leave out of a backup."""
    source = scratch()
    with su_connect(sandbox, source) as conn:
        conn.execute('CREATE TABLE bot_messages (id int primary key, body text)')
        conn.execute("INSERT INTO bot_messages SELECT g, 'm' || g FROM generate_series(1, 300) g")
        conn.execute('CREATE TABLE audit_log (id int, entry text)')
        conn.execute("INSERT INTO audit_log SELECT g, 'a' || g FROM generate_series(1, 700) g")
    return source


@pytest.mark.parametrize('fmt', ['custom', 'plain'])
def test_excluded_table_data_is_recorded_and_not_counted(sandbox, dest, scratch, with_audit_log, fmt):
    result = b.backup(superuser_params(sandbox, with_audit_log, dest=dest, format=fmt,
                                       verify_tables=['public.bot_messages', 'public.audit_log'],
                                       extra_args=['--exclude-table-data=audit_log']))
    manifest = assert_complete_backup(result, dest, fmt)
    assert manifest['row_counts'] == {'public.bot_messages': 300}  # no claim about rows the dump does not hold
    assert manifest['tables_without_data'] == ['public.audit_log'] and manifest['holds_data'] is True
    assert manifest['data_selection'] == {'exclude_table_data': ['audit_log']}
    assert any('public.audit_log' in w for w in result['warnings'])
    target = scratch()
    restore(sandbox, result['path'], target, fmt)
    assert count(sandbox, target, 'public.bot_messages') == 300 and count(sandbox, target, 'public.audit_log') == 0


def test_only_some_tables_dumped_lists_the_rest(sandbox, dest, with_audit_log):
    result = b.backup(superuser_params(sandbox, with_audit_log, dest=dest, verify_tables=['public.audit_log'],
                                       extra_args=['-t', 'audit_log']))
    assert result['manifest']['tables_without_data'] == ['public.bot_messages']
    assert result['manifest']['row_counts'] == {'public.audit_log': 700}
    assert result['manifest']['data_selection'] == {'tables': ['audit_log']}


@pytest.mark.parametrize('extra_args', [['--schema-only'], ['--section=pre-data', '--section=post-data'],
                                        ['--exclude-table-data=*']])
def test_a_backup_without_any_data_is_refused_unless_allowed(sandbox, dest, with_audit_log, extra_args):
    with pytest.raises(OpsError) as caught:
        b.backup(superuser_params(sandbox, with_audit_log, dest=dest, verify_tables=[], extra_args=extra_args))
    assert caught.value.msg.startswith('extra_args %s leave no table data' % ' '.join(extra_args))
    assert 'allow_no_data' in caught.value.msg and os.listdir(dest) == []
    allowed = b.backup(superuser_params(sandbox, with_audit_log, dest=dest, verify_tables=['bot_messages'],
                                        extra_args=extra_args, allow_no_data=True))
    assert allowed['manifest']['holds_data'] is False and allowed['manifest']['row_counts'] == {}
    assert allowed['manifest']['tables_without_data'] == ['public.audit_log', 'public.bot_messages']


# ---------------------------------------------------------------- parallel jobs

def test_jobs_are_capped_at_the_free_connections(sandbox, dest, scratch):
    with su_connect(sandbox) as conn:
        most = conn.execute("SELECT current_setting('max_connections')::int").fetchone()[0]
    result = b.backup(params(sandbox, dest=dest, format='directory', jobs=100000))
    assert 1 <= result['jobs'] < most and '--jobs=%d' % result['jobs'] in result['command']
    assert result['manifest']['jobs'] == result['jobs']
    assert any(w.startswith('jobs 100000 capped at %d' % result['jobs']) for w in result['warnings'])
    assert_complete_backup(result, dest, 'directory')


# ---------------------------------------------------------------- through Ansible

def run_module(sandbox, args, *options, popen=False):
    """Run hotelbot.ops.pg_backup ad hoc on localhost, as the sandbox's application role (or Popen it)."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               PATH=BIN + os.pathsep + os.environ.get('PATH', ''), HOTELBOT_SANDBOX_DIR=str(sandbox.dir),
               PGPASSWORD=sandbox.secrets['postgres_password'])
    cmd = [os.path.join(BIN, 'ansible'), 'localhost', '-m', 'hotelbot.ops.pg_backup', '-a', args,
           '-e', 'ansible_python_interpreter=%s' % os.path.join(BIN, 'python')] + list(options)
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def pg_dumps_writing_to(dest):
    """{pid: parent pid} of pg_dump processes (not zombies) with an output file in dest."""
    found = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as handle:
                argv = handle.read().split(b'\0')
            with open('/proc/%s/stat' % pid) as handle:
                fields = handle.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if (fields[0] != 'Z' and argv and os.path.basename(argv[0]) == b'pg_dump'
                and any(a.startswith(b'--file=' + dest.encode()) for a in argv)):
            found[int(pid)] = int(fields[1])
    return found


def pg_dump_backends(sandbox, database):
    with su_connect(sandbox) as conn:
        return conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_dump' AND datname = %s",
                            (database,)).fetchall()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_killed_module_takes_pg_dump_with_it_and_the_next_run_cleans_up(sandbox, dest, scratch):
    """SIGKILL the module mid-dump: pg_dump dies with it (no process, no backend), and the next run
    removes the partial it left and writes a complete backup."""
    source = scratch()
    with su_connect(sandbox, source) as conn:
        conn.execute('CREATE TABLE t (id int)')
        conn.execute('INSERT INTO t SELECT generate_series(1, 1000)')
    blocker = su_connect(sandbox, source)
    blocker.autocommit = False
    # pg_dump waits for its lock on t as long as this transaction lasts: "mid-dump", for as long as we like.
    blocker.execute('LOCK TABLE t IN ACCESS EXCLUSIVE MODE')
    args = 'host=%s port=%s user=%s database=%s dest=%s' % (
        pg(sandbox)['socket_dir'], pg(sandbox)['port'], pg(sandbox)['superuser'], source, dest)
    ansible = run_module(sandbox, args, popen=True)
    try:
        wait_for(lambda: pg_dumps_writing_to(dest) and pg_dump_backends(sandbox, source), 60,
                 'pg_dump never started')
        writers = list(pg_dumps_writing_to(dest).items())
        assert len(writers) == 1, writers
        module = writers[0][1]
        os.kill(module, signal.SIGKILL)
        wait_for(lambda: not pg_dumps_writing_to(dest), 5, 'pg_dump outlived the module')
        blocker.rollback()
        wait_for(lambda: not pg_dump_backends(sandbox, source), 10, "pg_dump's backend outlived the module")
    finally:
        blocker.close()
        ansible.wait(120)
    left = os.listdir(dest)
    assert len(left) == 1 and '.partial-%d-' % module in left[0]  # the debris a killed module leaves ...
    result = b.backup(superuser_params(sandbox, source, dest=dest, verify_tables=['t']))
    assert result['removed_partials'] == [os.path.join(dest, left[0])]  # ... is gone after the next run
    assert_complete_backup(result, dest, 'custom')
    assert result['manifest']['row_counts'] == {'public.t': 1000}


def test_module_through_ansible(sandbox, dest):
    args = 'host=%s port=%s user=%s database=%s dest=%s verify_tables=public.bot_messages keep=1' % (
        pg(sandbox)['host'], pg(sandbox)['port'], pg(sandbox)['user'], pg(sandbox)['database'], dest)
    completed = run_module(sandbox, args, '-o')
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert 'CHANGED' in completed.stdout
    assert sandbox.secrets['postgres_password'] not in completed.stdout + completed.stderr
    result = json.loads(completed.stdout.split('=>', 1)[1])
    assert result['changed'] and result['manifest']['row_counts'] == {'public.bot_messages': 1000}
    assert_complete_backup(result, dest, 'custom')

    check = run_module(sandbox, args, '--check', '-o')
    assert check.returncode == 0, check.stdout + check.stderr
    assert '"would_prune": [' in check.stdout and result['path'] in check.stdout
    assert sorted(os.listdir(dest)) == sorted(os.path.basename(result['path']) + s for s in
                                              ('', '.sha256', '.manifest.json'))
