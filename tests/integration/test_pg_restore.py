"""pg_restore's logic against the sandbox's real PostgreSQL: verify, scratch restore, validate, swap."""
import json
import os
import subprocess

import psycopg
import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import pg_restore as module
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_restore import lock_key, restore, sha256_of

DB = 'hotel "bot" restore'


def admin(sandbox, database='postgres'):
    pg = sandbox.state['postgres']
    return psycopg.connect(host=pg['socket_dir'], port=pg['port'], user=pg['superuser'], dbname=database,
                           autocommit=True)


def params(sandbox):
    """Module-style connection params: the superuser over the unix socket (it may CREATE DATABASE)."""
    pg = sandbox.state['postgres']
    return dict(host=pg['socket_dir'], port=pg['port'], user=pg['superuser'], password=None, database=DB,
                sslmode=None, sslrootcert=None, passfile=None, connect_timeout=5, connect_params={})


def databases(sandbox):
    with admin(sandbox) as conn:
        return sorted(r[0] for r in conn.execute('SELECT datname FROM pg_database'))


def fingerprint(sandbox, database=DB):
    """Row count and a checksum of the contents of the test table."""
    with admin(sandbox, database) as conn:
        rows = conn.execute('SELECT count(*), md5(string_agg(id::text || body, \',\' ORDER BY id)) FROM msgs').fetchone()
    return rows


def make_backup(sandbox, tmp_path, rows, fmt='custom', database=DB, name='backup'):
    """A dump of `database` after putting `rows` rows in it, with sidecar and manifest."""
    with admin(sandbox, database) as conn:
        conn.execute('DROP TABLE IF EXISTS msgs')
        conn.execute('CREATE TABLE msgs (id int PRIMARY KEY, body text NOT NULL)')
        conn.execute('INSERT INTO msgs SELECT g, md5(g::text) FROM generate_series(1, %s) g' % rows)
    pg = sandbox.state['postgres']
    path = str(tmp_path / ('%s.%s' % (name, 'sql' if fmt == 'plain' else 'dump')))
    env = dict(os.environ, PGHOST=pg['socket_dir'], PGPORT=str(pg['port']), PGUSER=pg['superuser'])
    subprocess.run([os.path.join(pg['bin_dir'], 'pg_dump'), '--format', fmt[0], '--file', path, database],
                   env=env, check=True)
    write_sidecars(path, database, {'public.msgs': rows}, fmt)
    return path


def write_sidecars(path, database, rows, fmt):
    with open(path + '.sha256', 'w') as handle:
        handle.write('%s  %s\n' % (sha256_of(path), os.path.basename(path)))
    with open(path + '.manifest.json', 'w') as handle:
        json.dump(dict(database=database, format=fmt, row_counts=rows), handle)


@pytest.fixture
def live(sandbox):
    """A live database `hotel "bot" restore` with 10 rows; dropped (with its copies) afterwards."""
    with admin(sandbox) as conn:
        for name in databases(sandbox):
            if name.startswith(DB):
                conn.execute('DROP DATABASE "%s" WITH (FORCE)' % name.replace('"', '""'))
        conn.execute('CREATE DATABASE "%s"' % DB.replace('"', '""'))
    with admin(sandbox, DB) as conn:
        conn.execute('CREATE TABLE msgs (id int PRIMARY KEY, body text NOT NULL)')
        conn.execute("INSERT INTO msgs SELECT g, 'live ' || g FROM generate_series(1, 10) g")
    yield sandbox


def test_restore_swaps_in_the_backup_and_keeps_the_old_database(live, tmp_path):
    backup = make_backup(live, tmp_path, 500)
    with admin(live, DB) as conn:   # the live data moves on after the backup
        conn.execute("INSERT INTO msgs VALUES (100000, 'written after the backup')")
    before = fingerprint(live)
    result = restore(params(live), DB, backup, confirm=True)
    assert result['changed'] and result['row_counts'] == {'public.msgs': 500}
    assert fingerprint(live)[0] == 500
    assert fingerprint(live, result['previous_database']) == before
    assert [s['step'] for s in result['steps']] == ['verify', 'restore', 'validate', 'analyze', 'swap']
    assert not [d for d in databases(live) if '__restore_' in d]


@pytest.mark.parametrize('damage, message', [
    ('truncate', 'checksum mismatch'),
    ('truncate_and_rehash', 'read the TOC failed'),
    ('other_database', "is a backup of database 'hotel_voice_bot'"),
    ('no_sidecar', 'no readable checksum file'),
])
def test_bad_backups_are_refused_before_anything_is_touched(live, tmp_path, damage, message):
    backup = make_backup(live, tmp_path, 50)
    before, dbs = fingerprint(live), databases(live)
    if damage.startswith('truncate'):
        size = os.path.getsize(backup)
        with open(backup, 'r+b') as handle:
            handle.truncate(size // 2)
        if damage == 'truncate_and_rehash':
            write_sidecars(backup, DB, {'public.msgs': 50}, 'custom')
    elif damage == 'other_database':
        write_sidecars(backup, 'hotel_voice_bot', {'public.msgs': 50}, 'custom')
    elif damage == 'no_sidecar':
        os.unlink(backup + '.sha256')
    with pytest.raises(OpsError, match=message):
        restore(params(live), DB, backup, confirm=True)
    assert fingerprint(live) == before and databases(live) == dbs


def test_restore_failing_half_way_drops_scratch_and_leaves_live_alone(live, tmp_path):
    path = str(tmp_path / 'broken.sql')
    with open(path, 'w') as handle:
        handle.write('CREATE TABLE msgs (id int PRIMARY KEY, body text NOT NULL);\n'
                     "INSERT INTO msgs VALUES (1, 'one');\n"
                     'INSERT INTO no_such_table VALUES (2);\n'
                     '-- PostgreSQL database dump complete\n')
    write_sidecars(path, DB, {'public.msgs': 1}, 'plain')
    before, dbs = fingerprint(live), databases(live)
    with pytest.raises(OpsError, match='restore into scratch database .* failed .*no_such_table'):
        restore(params(live), DB, path, confirm=True)
    assert fingerprint(live) == before and databases(live) == dbs


def test_validation_failure_drops_scratch(live, tmp_path):
    backup = make_backup(live, tmp_path, 20)
    write_sidecars(backup, DB, {'public.msgs': 21}, 'custom')   # the manifest disagrees with the dump
    before, dbs = fingerprint(live), databases(live)
    with pytest.raises(OpsError, match='validate: public.msgs has 20 rows in the restored copy, the manifest says 21'):
        restore(params(live), DB, backup, confirm=True)
    assert fingerprint(live) == before and databases(live) == dbs


def test_second_restore_while_one_holds_the_lock_is_refused(live, tmp_path):
    backup = make_backup(live, tmp_path, 5)
    before = fingerprint(live)
    with admin(live) as holder:
        holder.execute('SELECT pg_advisory_lock(%s)', (lock_key(DB),))
        with pytest.raises(OpsError, match='another restore of database .* is in progress'):
            restore(params(live), DB, backup, confirm=True)
    assert fingerprint(live) == before


def test_check_mode_and_missing_confirm_change_nothing(live, tmp_path):
    backup = make_backup(live, tmp_path, 5)
    before, dbs = fingerprint(live), databases(live)
    planned = restore(params(live), DB, backup, check_mode=True)
    assert planned['changed'] and 'would restore' in planned['msg']
    with pytest.raises(OpsError, match='set confirm: true'):
        restore(params(live), DB, backup)
    assert fingerprint(live) == before and databases(live) == dbs


def test_retention_keeps_the_newest_previous_copies(live, tmp_path, monkeypatch):
    backup = make_backup(live, tmp_path, 5)
    stamps = iter(['20260101T000000Z', '20260102T000000Z', '20260103T000000Z'])
    real = module.Restore.__init__

    def stamped(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.stamp = next(stamps)
    monkeypatch.setattr(module.Restore, '__init__', stamped)
    for _round in range(3):
        result = restore(params(live), DB, backup, confirm=True, keep_previous=2)
    copies = [d for d in databases(live) if '__pre_restore_' in d]
    assert copies == [DB + '__pre_restore_20260102T000000Z', DB + '__pre_restore_20260103T000000Z']
    assert result['dropped_previous'] == [DB + '__pre_restore_20260101T000000Z']


def test_module_through_ansible(live, tmp_path):
    backup = make_backup(live, tmp_path, 42)
    with admin(live, DB) as conn:
        conn.execute('DELETE FROM msgs WHERE id > 7')
    pg = live.state['postgres']
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bin_dir = os.path.dirname(os.path.abspath(os.sys.executable))
    args = json.dumps(dict(host=pg['socket_dir'], port=pg['port'], user=pg['superuser'], database=DB, src=backup,
                           confirm=True, bin_dir=pg['bin_dir']))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(root, 'ansible.cfg'), PATH=bin_dir + os.pathsep + os.environ['PATH'])
    base = [os.path.join(bin_dir, 'ansible'), 'localhost', '-c', 'local', '-e',
            'ansible_python_interpreter=' + os.path.abspath(os.sys.executable), '-m', 'hotelbot.ops.pg_restore', '-a', args]
    checked = subprocess.run(base + ['--check'], cwd=root, env=env, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert fingerprint(live)[0] == 7
    done = subprocess.run(base, cwd=root, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert fingerprint(live)[0] == 42


def test_prepare_then_swap(live, tmp_path):
    backup = make_backup(live, tmp_path, 300)
    with admin(live, DB) as conn:
        conn.execute('DELETE FROM msgs WHERE id > 3')
    prepared = restore(params(live), DB, backup, phase='prepare')
    scratch = prepared['scratch_database']
    # the live database still serves its own data while the copy waits
    assert fingerprint(live)[0] == 3 and fingerprint(live, scratch)[0] == 300
    with pytest.raises(OpsError, match='set confirm: true'):
        restore(params(live), DB, backup, phase='swap', scratch_database=scratch)
    swapped = restore(params(live), DB, backup, phase='swap', scratch_database=scratch, confirm=True)
    assert fingerprint(live)[0] == 300 and fingerprint(live, swapped['previous_database'])[0] == 3
    assert scratch not in databases(live)
    assert [s['step'] for s in prepared['steps'] + swapped['steps']] == ['verify', 'restore', 'validate', 'analyze', 'swap']
    with pytest.raises(OpsError, match='does not exist'):
        restore(params(live), DB, backup, phase='swap', scratch_database=scratch, confirm=True)


def pg_backup_of(sandbox, tmp_path, fmt, jobs=None, **options):
    """A backup written by our own pg_backup (sidecar and manifest included)."""
    from ansible_collections.hotelbot.ops.plugins.module_utils.pg_backup import backup
    from ansible_collections.hotelbot.ops.plugins.modules.pg_backup import SPEC
    p = dict((name, spec.get('default')) for name, spec in SPEC['argument_spec'].items())
    p.update(params(sandbox), dest=str(tmp_path / 'backups'), format=fmt, jobs=jobs,
             verify_tables=['public.msgs'], bin_dir=sandbox.state['postgres']['bin_dir'], **options)
    return backup(p)['path']


def test_a_backup_that_leaves_data_out_says_so_before_the_restore_starts(live, tmp_path):
    make_backup(live, tmp_path, 40)
    with admin(live, DB) as conn:
        conn.execute('CREATE TABLE audit_log (id int)')
        conn.execute('INSERT INTO audit_log SELECT generate_series(1, 50)')
    path = pg_backup_of(live, tmp_path, 'custom', extra_args=['--exclude-table-data=audit_log'])
    planned = restore(params(live), DB, path, check_mode=True, bin_dir=live.state['postgres']['bin_dir'])
    assert planned['tables_without_data'] == ['public.audit_log']
    assert planned['warnings'] and 'public.audit_log will be empty' in planned['warnings'][0]
    assert '--exclude-table-data=audit_log' in planned['msg']
    done = restore(params(live), DB, path, confirm=True, bin_dir=live.state['postgres']['bin_dir'])
    assert done['row_counts'] == {'public.msgs': 40} and done['tables_without_data'] == ['public.audit_log']
    with admin(live, DB) as conn:
        assert conn.execute('SELECT count(*) FROM audit_log').fetchone()[0] == 0


def test_a_backup_without_data_is_refused_unless_allowed(live, tmp_path):
    make_backup(live, tmp_path, 40)
    path = pg_backup_of(live, tmp_path, 'custom', extra_args=['--schema-only'], allow_no_data=True)
    with admin(live, DB) as conn:
        conn.execute('DELETE FROM msgs WHERE id > 30')
    before, dbs = fingerprint(live), databases(live)
    with pytest.raises(OpsError, match='verify: .* holds no table data .*--schema-only.*set allow_no_data: true'):
        restore(params(live), DB, path, confirm=True, bin_dir=live.state['postgres']['bin_dir'])
    assert fingerprint(live) == before and databases(live) == dbs
    restore(params(live), DB, path, confirm=True, allow_no_data=True, bin_dir=live.state['postgres']['bin_dir'])
    assert fingerprint(live)[0] == 0


def test_a_bad_maintenance_work_mem_changes_nothing(live, tmp_path):
    backup = make_backup(live, tmp_path, 5)
    before, dbs = fingerprint(live), databases(live)
    with pytest.raises(OpsError) as caught:
        restore(params(live), DB, backup, confirm=True, maintenance_work_mem='64MB -c statement_timeout=1')
    assert caught.value.msg.startswith('maintenance_work_mem must be a PostgreSQL size') and not caught.value.changed
    assert fingerprint(live) == before and databases(live) == dbs


def test_restore_jobs_are_capped_at_the_free_connections(live, tmp_path):
    backup = make_backup(live, tmp_path, 2000)
    with admin(live) as conn:
        most = conn.execute("SELECT current_setting('max_connections')::int").fetchone()[0]
    result = restore(params(live), DB, backup, confirm=True, jobs=100000)
    assert 2 <= result['load']['jobs'] < most and fingerprint(live)[0] == 2000
    assert any(w.startswith('jobs 100000 capped at %d' % result['load']['jobs']) for w in result['warnings'])


def fake_pg_restore(tmp_path, real_bin, exit_code):
    """A bin_dir whose pg_restore streams a table's data exactly as the real one does (end-of-data
    marker included) and then exits non-zero; every other call is the real pg_restore."""
    bin_dir = tmp_path / 'fakebin'
    bin_dir.mkdir()
    script = bin_dir / 'pg_restore'
    script.write_text('#!/bin/bash\n'
                      'case " $* " in\n'
                      '  *" --data-only "*" -f - "*) "%s/pg_restore" "$@" || exit $?; echo "pg_restore: error: '
                      'injected failure" >&2; exit %d;;\n'
                      'esac\n'
                      'exec "%s/pg_restore" "$@"\n' % (real_bin, exit_code, real_bin))
    script.chmod(0o755)
    (bin_dir / 'psql').symlink_to(os.path.join(real_bin, 'psql'))
    return str(bin_dir)


def test_a_clean_stream_from_a_failing_pg_restore_fails_the_restore(live, tmp_path):
    """The parallel load reads a table's rows from pg_restore's output (a directory archive): the
    stream ends with its end-of-data marker, but pg_restore exits 1 - the restore must fail."""
    make_backup(live, tmp_path, 300)
    path = pg_backup_of(live, tmp_path, 'directory', 2)
    with admin(live, DB) as conn:
        conn.execute('DELETE FROM msgs WHERE id > 100')
    before, dbs = fingerprint(live), databases(live)
    bin_dir = fake_pg_restore(tmp_path, live.state['postgres']['bin_dir'], 1)
    with pytest.raises(OpsError, match=r'reading the data of public\.msgs from the archive failed \(exit 1\).*injected'):
        restore(params(live), DB, path, confirm=True, jobs=2, bin_dir=bin_dir)
    assert fingerprint(live) == before and databases(live) == dbs


@pytest.mark.parametrize('fmt, jobs', [('custom', None), ('directory', 2), ('plain', None)])
def test_restores_what_pg_backup_writes(live, tmp_path, fmt, jobs):
    make_backup(live, tmp_path, 123)            # live now holds 123 rows
    path = pg_backup_of(live, tmp_path, fmt, jobs)
    with admin(live, DB) as conn:
        conn.execute('DELETE FROM msgs')
    result = restore(params(live), DB, path, confirm=True, jobs=jobs, bin_dir=live.state['postgres']['bin_dir'])
    assert result['row_counts'] == {'public.msgs': 123} and fingerprint(live)[0] == 123


def test_a_tampered_file_inside_a_directory_backup_is_refused(live, tmp_path):
    make_backup(live, tmp_path, 30)
    path = pg_backup_of(live, tmp_path, 'directory', 2)
    data = sorted(f for f in os.listdir(path) if f.endswith('.dat.gz') or f.endswith('.dat'))[0]
    with open(os.path.join(path, data), 'ab') as handle:
        handle.write(b'x')
    before, dbs = fingerprint(live), databases(live)
    with pytest.raises(OpsError, match='checksum mismatch for .*%s' % data):
        restore(params(live), DB, path, confirm=True)
    open(os.path.join(path, 'extra.dat'), 'w').close()
    with pytest.raises(OpsError, match="unlisted: \\['extra.dat'\\]"):
        restore(params(live), DB, path, confirm=True)
    assert fingerprint(live) == before and databases(live) == dbs
