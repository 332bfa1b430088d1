"""Unit tests of module_utils.pg_backup that need no server: naming, options, argv, files, retention."""
import datetime
import errno
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import pg_backup as b
from ansible_collections.hotelbot.ops.plugins.module_utils import postgres
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError

NOW = datetime.datetime(2026, 11, 22, 21, 15, 0, tzinfo=datetime.timezone.utc)


def params(**overrides):
    base = dict(host='db.example', port=5432, user='bot', password='s3cret-pw', database='hotel_voice_bot',
                sslmode=None, sslrootcert=None, passfile=None, connect_timeout=10, connect_params={},
                dest='/backups', path=None, format='custom', compress=None, jobs=None, verify_tables=[],
                keep=None, pg_dump_path=None, bin_dir=None, extra_args=[], allow_no_data=False)
    base.update(overrides)
    return base


# ---------------------------------------------------------------- naming

@pytest.mark.parametrize('name, expected', [
    ('hotel_voice_bot', 'hotel_voice_bot'),
    ('hotel-bot.v2', 'hotel-bot.v2'),
])
def test_slug_keeps_safe_names(name, expected):
    assert b.slug(name) == expected


@pytest.mark.parametrize('name', ['hotel "bot"', '../../etc', 'a/b', 'ünïcode db', '.hidden', 'x' * 80, ''])
def test_slug_of_unsafe_names_is_a_safe_file_name_with_a_hash(name):
    value = b.slug(name)
    assert '/' not in value and '"' not in value and ' ' not in value
    assert not value.startswith('.') and value not in ('', '.', '..')
    assert len(value) <= 48 + 9
    assert value.endswith('-' + hashlib.sha256(name.encode()).hexdigest()[:8])


def test_slugs_of_different_names_differ():
    assert b.slug('hotel "bot"') != b.slug('hotel-bot') != b.slug('hotel bot')


@pytest.mark.parametrize('fmt, ext', [('custom', 'dump'), ('directory', 'dir'), ('plain', 'sql')])
def test_generated_path(tmp_path, fmt, ext):
    path = b.generated_path(str(tmp_path), 'hotel_voice_bot', fmt, now=NOW)
    assert path == str(tmp_path / ('hotel_voice_bot-20261122T211500Z.%s' % ext))


def test_generated_path_never_reuses_a_taken_name(tmp_path):
    first = b.generated_path(str(tmp_path), 'db', 'custom', now=NOW)
    open(first + '.manifest.json', 'w').close()  # even a leftover sidecar makes the name taken
    second = b.generated_path(str(tmp_path), 'db', 'custom', now=NOW)
    assert second == str(tmp_path / 'db-20261122T211500Z-2.dump')


# ---------------------------------------------------------------- options

@pytest.mark.parametrize('value, fmt, major, expected', [
    (None, 'custom', 15, None),
    ('0', 'custom', 15, '0'),
    ('9', 'directory', 15, '9'),
    ('zstd:3', 'custom', 16, 'zstd:3'),
    ('lz4', 'directory', 17, 'lz4'),
    ('gzip:level=5', 'custom', 16, 'gzip:level=5'),
])
def test_parse_compress(value, fmt, major, expected):
    assert b.parse_compress(value, fmt, major) == expected


@pytest.mark.parametrize('value, fmt, major, message', [
    ('10', 'custom', 15, 'level 0-9'),
    ('zstd:3', 'custom', 15, 'needs pg_dump 16 or later'),
    ('brotli', 'custom', 16, 'method spec'),
    ('5; rm -rf /', 'custom', 16, 'method spec'),
    ('5', 'plain', 15, 'not supported with format=plain'),
])
def test_parse_compress_refuses(value, fmt, major, message):
    with pytest.raises(OpsError, match=message):
        b.parse_compress(value, fmt, major)


def test_jobs_only_with_directory_format():
    with pytest.raises(OpsError, match='jobs needs format=directory'):
        b.validate_options('custom', 2, None)
    b.validate_options('directory', 4, None)
    # jobs >= 1 and keep >= 1 are the SPEC's ranges: tests/unit/test_spec_postgres.py


@pytest.mark.parametrize('arg', ['-f', '-fout.dump', '--file=x', '--file', '-Fp', '--format=plain', '-W', '--password',
                                 '-d', '--dbname=postgresql://u:pw@h/db', '--snapshot=1', '-j4', '--jobs=2', '-Z9',
                                 '--compress=1', '-h', '--host=x', '-U', '--username=x', '-p'])
def test_extra_args_that_we_control_are_refused(arg):
    with pytest.raises(OpsError, match='extra_args must not contain'):
        b.check_extra_args([arg])


@pytest.mark.parametrize('arg', ['host=db password=x', 'postgresql://bot:pw@db/x'])
def test_extra_args_with_passwords_are_refused(arg):
    with pytest.raises(OpsError, match='password'):
        b.check_extra_args(['--exclude-table=x', arg])


def test_extra_args_allowed():
    assert b.check_extra_args(['--exclude-table-data=audit_log', '-n', 'public', '--no-owner']) == [
        '--exclude-table-data=audit_log', '-n', 'public', '--no-owner']


def test_dest_xor_path():
    with pytest.raises(OpsError, match='exactly one of dest'):
        b.Backup(params(dest=None, path=None), base_env={})
    with pytest.raises(OpsError, match='exactly one of dest'):
        b.Backup(params(dest='/a', path='/a/b.dump'), base_env={})


# ---------------------------------------------------------------- command and environment

def test_dump_command_has_no_connection_settings_or_password():
    argv = b.dump_command('/usr/bin/pg_dump', 'directory', '/b/x.dir.partial-1', '00000004-1', '5', 2,
                          ['--no-owner'])
    assert argv == ['/usr/bin/pg_dump', '--format=d', '--file=/b/x.dir.partial-1', '--no-password',
                    '--snapshot=00000004-1', '--compress=5', '--jobs=2', '--no-owner']
    job = b.Backup(params(), base_env={'PATH': '/usr/bin', 'MARKER': 'kept'})
    assert job.env['PGPASSWORD'] == 's3cret-pw' and job.env['MARKER'] == 'kept' and job.env['PATH'] == '/usr/bin'
    assert not any('s3cret-pw' in a or 'db.example' in a for a in argv)


def test_dump_command_is_a_list_even_for_odd_names():
    argv = b.dump_command('/usr/bin/pg_dump', 'custom', '/b/hotel "bot"; rm -rf ~.dump.partial-1')
    assert argv[2] == '--file=/b/hotel "bot"; rm -rf ~.dump.partial-1'


@pytest.mark.parametrize('text, expected', [
    ('pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)', (15, 18)),
    ('pg_dump (PostgreSQL) 16.4', (16, 4)),
    ('pg_dump (PostgreSQL) 17beta1', (17, 0)),
])
def test_parse_version(text, expected):
    assert b.parse_version(text) == expected


def test_exit_reason():
    assert b.exit_reason(-signal.SIGKILL) == 'killed by SIGKILL'
    assert b.exit_reason(1) == 'exit status 1'


def test_tail_masks_secrets_and_keeps_the_end():
    text = '\n'.join('line %d' % i for i in range(40)) + '\nFATAL: password s3cret-pw rejected'
    out = b.tail(text, ['s3cret-pw'])
    assert 's3cret-pw' not in out and out.endswith('******** rejected') and 'line 0\n' not in out


def test_find_program_prefers_explicit_then_bin_dir(tmp_path):
    prog = tmp_path / 'pg_dump'
    prog.write_text('#!/bin/sh\n')
    prog.chmod(0o755)
    assert b.find_program('pg_dump', str(prog)) == str(prog)
    assert b.find_program('pg_dump', None, str(tmp_path)) == str(prog)
    with pytest.raises(OpsError, match='pg_restore not found'):
        b.find_program('pg_restore', None, str(tmp_path))


def test_pg_dump_older_than_the_server_is_refused(tmp_path):
    prog = tmp_path / 'pg_dump'
    prog.write_text('#!/bin/sh\necho "pg_dump (PostgreSQL) 14.2"\n')
    prog.chmod(0o755)
    job = b.Backup(params(pg_dump_path=str(prog)), base_env=dict(os.environ))
    with pytest.raises(OpsError, match='older than the server'):
        job.programs(15)


# ---------------------------------------------------------------- files

def test_checksum_of_a_file_is_sha256sum_compatible(tmp_path):
    dump = tmp_path / 'x.dump.partial-1'
    dump.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # more than one chunk
    digest, sidecar, size = b.checksum(str(dump), 'x.dump')
    assert digest == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert sidecar == '%s  x.dump\n' % digest and size == dump.stat().st_size
    dump.rename(tmp_path / 'x.dump')
    (tmp_path / 'x.dump.sha256').write_text(sidecar)
    assert subprocess.run(['sha256sum', '-c', 'x.dump.sha256'], cwd=tmp_path, check=False,
                          capture_output=True).returncode == 0


def test_checksum_of_a_directory_lists_every_file_deterministically(tmp_path):
    dump = tmp_path / 'x.dir.partial-1'
    dump.mkdir()
    (dump / 'toc.dat').write_bytes(b'toc')
    (dump / '3001.dat.gz').write_bytes(b'data')
    digest, sidecar, size = b.checksum(str(dump), 'x.dir')
    assert sidecar.splitlines() == [
        '%s  x.dir/3001.dat.gz' % hashlib.sha256(b'data').hexdigest(),
        '%s  x.dir/toc.dat' % hashlib.sha256(b'toc').hexdigest()]
    assert digest == hashlib.sha256(sidecar.encode()).hexdigest() and size == 7
    dump.rename(tmp_path / 'x.dir')
    (tmp_path / 'x.dir.sha256').write_text(sidecar)
    assert subprocess.run(['sha256sum', '-c', 'x.dir.sha256'], cwd=tmp_path, check=False,
                          capture_output=True).returncode == 0


def a_validated_partial(tmp_path):
    target = str(tmp_path / 'db-20261122T211500Z.dump')
    partial = b.partial_name(target)
    with open(partial, 'wb') as handle:
        handle.write(b'PGDMP dump')
    return partial, target


def test_publish_makes_all_three_visible_the_manifest_last(tmp_path, monkeypatch):
    partial, target = a_validated_partial(tmp_path)
    order = []
    real_rename = os.rename
    monkeypatch.setattr(b.os, 'rename', lambda src, dst: (order.append(os.path.basename(dst)), real_rename(src, dst)))
    b.publish(partial, target, 'abc  x\n', dict(tool=b.MANIFEST_TOOL))
    assert order == ['db-20261122T211500Z.dump', 'db-20261122T211500Z.dump.sha256',
                     'db-20261122T211500Z.dump.manifest.json']
    assert sorted(os.listdir(tmp_path)) == sorted(order)
    assert json.loads((tmp_path / order[2]).read_text()) == dict(tool=b.MANIFEST_TOOL)


@pytest.mark.parametrize('failing_write, what', [(1, 'the checksum file'), (2, 'the manifest')])
@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EDQUOT])
def test_publish_on_a_full_disk_keeps_nothing(tmp_path, monkeypatch, failing_write, what, code):
    """The disk fills while a sidecar is written (or fsynced): one line, and nothing of the backup is left."""
    partial, target = a_validated_partial(tmp_path)
    writes = []
    real_fsync = os.fsync

    def fsync(fd):
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            writes.append(fd)
            if len(writes) == failing_write:
                raise OSError(code, os.strerror(code))
        real_fsync(fd)
    monkeypatch.setattr(b.os, 'fsync', fsync)
    with pytest.raises(OpsError) as caught:
        b.publish(partial, target, 'abc  x\n', dict(tool=b.MANIFEST_TOOL))
    assert caught.value.msg == 'no space left on %s writing %s; nothing was kept' % (tmp_path, what)
    assert os.listdir(tmp_path) == []


def test_publish_failing_at_the_last_rename_removes_what_was_renamed(tmp_path, monkeypatch):
    partial, target = a_validated_partial(tmp_path)
    real_rename = os.rename

    def rename(src, dst):
        if dst.endswith('.manifest.json'):
            raise OSError(errno.ENOSPC, 'No space left on device')
        real_rename(src, dst)
    monkeypatch.setattr(b.os, 'rename', rename)
    with pytest.raises(OpsError, match='no space left on'):
        b.publish(partial, target, 'abc  x\n', {})
    assert os.listdir(tmp_path) == []


def failing_fsync(fd):
    raise OSError(errno.EIO, 'I/O error')


def test_other_errors_while_publishing_keep_nothing_and_pass_through(tmp_path, monkeypatch):
    partial, target = a_validated_partial(tmp_path)
    monkeypatch.setattr(b.os, 'fsync', failing_fsync)
    with pytest.raises(OSError, match='I/O error'):
        b.publish(partial, target, 'abc  x\n', {})
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- leftovers of killed runs

def a_dead_process():
    child = subprocess.Popen(['true'])
    start = b.process_start(child.pid)
    child.wait()
    return child.pid, start


def test_partial_names_name_their_writer(tmp_path):
    found = b.PARTIAL.match(os.path.basename(b.partial_name(str(tmp_path / 'db-x.dump'))))
    assert found.group('final') == 'db-x.dump' and int(found.group('pid')) == os.getpid()
    assert int(found.group('start')) == b.process_start(os.getpid()) > 0


def test_stale_partials_are_those_of_this_database_whose_writer_is_gone(tmp_path):
    pid, start = a_dead_process()
    names = {
        'stale': 'hotel-20261122T211500Z.dump.partial-%d-%d-0123abcd' % (pid, start),
        'stale_sidecar': 'hotel-20261122T211500Z-2.dump.manifest.json.partial-%d-%d-0123abcd' % (pid, start),
        'stale_dir': 'hotel-20261122T211500Z.dir.partial-%d-%d-0123abcd' % (pid, start),
        'live': os.path.basename(b.partial_name(str(tmp_path / 'hotel-20261122T211501Z.dump'))),
        'pid_reused': 'hotel-20261122T211500Z.dump.partial-%d-%d-0123abcd' % (os.getpid(), 12345),
        'unknown_start': 'hotel-20261122T211500Z.dump.partial-%d-0-0123abcd' % pid,
        'other_database': 'hotel-x-20261122T211500Z.dump.partial-%d-%d-0123abcd' % (pid, start),
        'old_style': 'hotel-20261122T211500Z.dump.partial-0123456789ab',
        'not_ours': 'notes.txt.partial-%d-%d-0123abcd' % (pid, start),
    }
    for key, name in names.items():
        if key == 'stale_dir':
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text(key)
    stale = b.stale_partials(str(tmp_path), b.backup_names('hotel'))
    assert sorted(stale) == sorted(str(tmp_path / names[k]) for k in ('stale', 'stale_sidecar', 'stale_dir', 'pid_reused'))
    explicit = b.stale_partials(str(tmp_path), b.backup_names('hotel', path='/x/notes.txt'))
    assert explicit == [str(tmp_path / names['not_ours'])]


def test_child_programs_die_with_their_parent(tmp_path):
    """The preexec_fn pg_backup starts every client program with: the child dies when its parent does."""
    pid_file = tmp_path / 'pid'
    parent = subprocess.Popen([sys.executable, '-c', (
        'import subprocess, sys, time\n'
        'sys.path[:0] = %r\n'
        'from ansible_collections.hotelbot.ops.plugins.module_utils import postgres\n'
        'child = subprocess.Popen(["sleep", "60"], preexec_fn=postgres.preexec_die_with_parent())\n'
        'open(%r, "w").write(str(child.pid))\n'
        'time.sleep(60)\n') % (sys.path, str(pid_file))])
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while b.process_start(child) is not None and process_state(child) != 'Z':
        assert time.monotonic() < deadline, 'the child outlived its parent'
        time.sleep(0.05)


def process_state(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().rsplit(')', 1)[1].split()[0]
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------- what the dump holds

@pytest.mark.parametrize('args, selection', [
    ([], {}),
    (['--schema-only'], dict(schema_only=True)),
    (['-s'], dict(schema_only=True)),
    (['-vs'], dict(schema_only=True)),
    (['--schema-o'], dict(schema_only=True)),  # getopt_long takes an unambiguous prefix
    (['--exclude-table-data=audit_log', '--exclude-table-data', 'public.t*'], dict(exclude_table_data=['audit_log', 'public.t*'])),
    (['-T', 'a', '-Tb', '--exclude-table=c'], dict(exclude_tables=['a', 'b', 'c'])),
    (['-t', 'x', '--table=y', '-n', 's', '-N', 'z', '--schema=q'], dict(tables=['x', 'y'], schemas=['s', 'q'], exclude_schemas=['z'])),
    (['--section=pre-data', '--section', 'post-data'], dict(sections=['pre-data', 'post-data'])),
    (['-a', '--no-unlogged-table-data'], dict(data_only=True, no_unlogged_table_data=True)),
    (['-E', 'UTF8', '--verbose', '--lock-wait-timeout=5s'], {}),
    (['-ET'], {}),  # -E takes "T" as its value
])
def test_dump_selection(args, selection):
    assert b.dump_selection(args) == selection


@pytest.mark.parametrize('args, expected', [
    (['--schema-only'], True), (['-s'], True), (['--section=pre-data', '--section=post-data'], True),
    (['--section=data'], False), (['--exclude-table-data=*'], False), ([], False), (['-a'], False),
])
def test_dumps_no_data(args, expected):
    assert b.dumps_no_data(b.dump_selection(args)) is expected


def test_a_backup_without_data_is_refused_before_connecting_unless_allowed():
    with pytest.raises(OpsError) as caught:
        b.Backup(params(extra_args=['--schema-only']))
    assert caught.value.msg.startswith('extra_args --schema-only leave no table data in the backup')
    assert 'allow_no_data' in caught.value.msg and '\n' not in caught.value.msg
    b.Backup(params(extra_args=['--schema-only'], allow_no_data=True))


def test_tables_without_data():
    tables = {1: ('public', 'a'), 2: ('public', 'b'), 3: ('s', 'c')}
    assert b.tables_without_data(tables, {1, 3}) == ['public.b']
    assert b.tables_without_data(tables, {('public', 'a')}) == ['public.b', 's.c']
    assert b.tables_without_data(tables, set()) == ['public.a', 'public.b', 's.c']


def test_plain_table_data(tmp_path):
    dump = tmp_path / 'x.sql'
    dump.write_bytes(b'--\n-- Data for Name: bot_messages; Type: TABLE DATA; Schema: public; Owner: hotelbot\n--\n\n'
                     b'COPY public.bot_messages (id) FROM stdin;\n1\n\\.\n'
                     b'-- Data for Name: Guest list; Type: TABLE DATA; Schema: Odd schema; Owner: -\n')
    assert b.plain_table_data(str(dump)) == {('public', 'bot_messages'), ('Odd schema', 'Guest list')}


# ---------------------------------------------------------------- shared PostgreSQL helpers

@pytest.mark.parametrize('value, expected', [('64MB', '64MB'), ('1GB', '1GB'), ('65536', '65536'), ('512 MB', '512MB'),
                                             ('8kB', '8kB')])
def test_validate_size(value, expected):
    assert postgres.validate_size(value, 'maintenance_work_mem') == expected


@pytest.mark.parametrize('value', ['512MB -c statement_timeout=0', '1 GB x', '-1', '1.5GB', 'lots', '', '64mb'])
def test_validate_size_refuses_anything_else(value):
    with pytest.raises(OpsError) as caught:
        postgres.validate_size(value, 'maintenance_work_mem')
    assert caught.value.msg.startswith('maintenance_work_mem must be a PostgreSQL size') and '\n' not in caught.value.msg


def test_cap_jobs():
    facts = dict(max_connections=100, reserved_connections=3, in_use=90)
    assert postgres.cap_jobs('jobs', 4, 7, facts) == (4, None)
    jobs, warning = postgres.cap_jobs('jobs', 100000, 7, facts)
    assert jobs == 6 and warning == ('jobs 100000 capped at 6: the server has 7 free connections '
                                     '(max_connections 100, 3 reserved, 90 in use)')
    assert postgres.cap_jobs('jobs', 8, 0, facts)[0] == 1


def test_plain_complete(tmp_path):
    good = tmp_path / 'good.sql'
    good.write_bytes(b'-- x\n' * 5000 + b'--\n-- PostgreSQL database dump complete\n--\n\n')
    cut = tmp_path / 'cut.sql'
    cut.write_bytes(good.read_bytes()[:1000])
    assert b.plain_complete(str(good)) and not b.plain_complete(str(cut))


def test_free_bytes_of_a_missing_directory_uses_its_parent_and_creates_nothing(tmp_path):
    missing = tmp_path / 'a' / 'b'
    assert b.free_bytes(str(missing)) > 0
    assert not (tmp_path / 'a').exists()


# ---------------------------------------------------------------- retention

def make_backup(directory, name, database, created, tool=b.MANIFEST_TOOL, directory_format=False):
    path = directory / name
    if directory_format:
        path.mkdir()
        (path / 'toc.dat').write_bytes(b'x')
    else:
        path.write_bytes(b'x')
    (directory / (name + '.sha256')).write_text('x  %s\n' % name)
    (directory / (name + '.manifest.json')).write_text(json.dumps(
        dict(tool=tool, database=database, file=name, created_at=created)))
    return str(path)


def test_retention_keeps_newest_and_touches_only_ours(tmp_path):
    old = make_backup(tmp_path, 'db-1.dump', 'db', '2026-11-20T00:00:00+00:00')
    mid = make_backup(tmp_path, 'db-2.dir', 'db', '2026-11-21T00:00:00+00:00', directory_format=True)
    new = make_backup(tmp_path, 'db-3.dump', 'db', '2026-11-22T00:00:00+00:00')
    other_db = make_backup(tmp_path, 'other-1.dump', 'other', '2026-11-01T00:00:00+00:00')
    foreign = make_backup(tmp_path, 'db-0.dump', 'db', '2026-01-01T00:00:00+00:00', tool='someone-else')
    (tmp_path / 'notes.txt').write_text('mine')
    (tmp_path / 'db-9.dump').write_bytes(b'no manifest')
    # a manifest that tries to point outside the directory
    (tmp_path / 'evil.manifest.json').write_text(json.dumps(
        dict(tool=b.MANIFEST_TOOL, database='db', file='../outside', created_at='2000-01-01')))

    assert b.to_prune(str(tmp_path), 'db', 2, new) == [old]
    # the one just written is kept even when its clock looks older
    assert b.to_prune(str(tmp_path), 'db', 1, old) == [new, mid]
    assert b.to_prune(str(tmp_path), 'db', None, new) == []

    pruned = b.prune(b.to_prune(str(tmp_path), 'db', 1, new))
    assert pruned == [mid, old]
    left = set(os.listdir(tmp_path))
    assert {'db-1.dump', 'db-1.dump.sha256', 'db-1.dump.manifest.json', 'db-2.dir', 'db-2.dir.sha256',
            'db-2.dir.manifest.json'}.isdisjoint(left)
    for path in (new, other_db, foreign, str(tmp_path / 'notes.txt'), str(tmp_path / 'db-9.dump')):
        assert os.path.exists(path)
    assert 'evil.manifest.json' in left


def test_our_backups_ignores_unreadable_manifests(tmp_path):
    (tmp_path / 'x.dump.manifest.json').write_text('{not json')
    (tmp_path / 'y.dump.manifest.json').write_text('[1, 2]')
    assert b.our_backups(str(tmp_path), 'db') == []
    assert b.our_backups(str(tmp_path / 'missing'), 'db') == []
