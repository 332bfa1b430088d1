"""rollback.yml with scope db / app+db, and backup.yml, against the sandbox's real PostgreSQL."""
import glob
import os
import shutil
import threading
import time

import psycopg
import pytest

from sandbox import control
from tests.integration.conftest import failed_results

DB = 'hotel_voice_bot'


def admin(sandbox, database=DB):
    pg = sandbox.state['postgres']
    return psycopg.connect(host=pg['socket_dir'], port=pg['port'], user=pg['superuser'], dbname=database,
                           autocommit=True)


def fingerprint(sandbox, database=DB):
    """Row count and checksum of bot_messages, leaving out the verify role's own test messages."""
    with admin(sandbox, database) as conn:
        return conn.execute("SELECT count(*), md5(string_agg(message_id::text || body, ',' ORDER BY id)) "
                            "FROM public.bot_messages "
                            "WHERE coalesce(payload->>'messageId', '') NOT LIKE 'hotelbot-ops-verify-%'").fetchone()


def databases(sandbox):
    with admin(sandbox, 'postgres') as conn:
        return sorted(r[0] for r in conn.execute('SELECT datname FROM pg_database'))


def backups(sandbox):
    return sorted(p[:-len('.manifest.json')] for p in glob.glob(os.path.join(sandbox.dir, 'backups', '*.manifest.json')))


@pytest.fixture
def db_fresh(fresh):
    """The seeded database live (the fresh fixture), and no backups left from other tests."""
    for path in glob.glob(os.path.join(fresh.dir, 'backups', '*')):
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    return fresh


def take_backup(sandbox):
    run = sandbox.playbook(playbook='playbooks/backup.yml')
    assert run.returncode == 0, run.stdout + run.stderr
    return backups(sandbox)[-1]


def damage(sandbox):
    """What a bad migration does: rows lost and rows mangled."""
    with admin(sandbox) as conn:
        conn.execute('DELETE FROM public.bot_messages WHERE id % 3 = 0')
        conn.execute("UPDATE public.bot_messages SET body = 'corrupted' WHERE id % 5 = 0")


@pytest.mark.parametrize('mode, stop_app', [('swap', False), ('swap', True), ('offline', False)])
def test_database_rollback_restores_the_backup_and_keeps_the_damaged_copy(db_fresh, mode, stop_app):
    good = fingerprint(db_fresh)
    backup = take_backup(db_fresh)
    damage(db_fresh)
    damaged = fingerprint(db_fresh)
    assert damaged != good
    control.reset_calls(db_fresh.dir)
    run = db_fresh.playbook('-e', 'rollback_scope=db', '-e', 'rollback_db_backup=%s' % backup,
                            '-e', 'rollback_db_mode=%s' % mode, '-e', 'rollback_db_stop_app_for_swap=%s' % stop_app)
    assert run.returncode == 0, run.stdout + run.stderr
    assert fingerprint(db_fresh) == good
    kept = [d for d in databases(db_fresh) if d.startswith(DB + '__pre_restore_')]
    assert len(kept) == 1 and fingerprint(db_fresh, kept[0]) == damaged
    assert not [d for d in databases(db_fresh) if '__restore_' in d]
    # the damaged state was backed up first too, and the app runs at its old count again
    assert len(backups(db_fresh)) == 2
    svc = db_fresh.describe()
    assert svc['desiredCount'] == svc['runningCount'] == 3
    assert db_fresh.bot()[0] == 200
    # the app was scaled (down and back) only when asked to be, or in offline mode
    scaled = db_fresh.calls().get('ecs:UpdateService', 0)
    assert scaled == (2 if stop_app or mode == 'offline' else 0)


def test_a_damaged_backup_is_refused_in_preflight_and_nothing_changes(db_fresh):
    backup = take_backup(db_fresh)
    damage(db_fresh)
    damaged, dbs = fingerprint(db_fresh), databases(db_fresh)
    with open(backup, 'r+b') as handle:
        handle.truncate(os.path.getsize(backup) // 2)
    control.reset_calls(db_fresh.dir)
    run = db_fresh.playbook('-e', 'rollback_scope=db', '-e', 'rollback_db_backup=%s' % backup)
    assert run.returncode != 0
    assert 'checksum mismatch' in run.failures[0]['msg']
    assert fingerprint(db_fresh) == damaged and databases(db_fresh) == dbs
    assert 'ecs:UpdateService' not in db_fresh.calls()


def test_check_mode_of_a_database_rollback_changes_nothing(db_fresh):
    backup = take_backup(db_fresh)
    damage(db_fresh)
    damaged, dbs, files = fingerprint(db_fresh), databases(db_fresh), backups(db_fresh)
    run = db_fresh.playbook('--check', '-e', 'rollback_scope=db', '-e', 'rollback_db_backup=%s' % backup)
    assert run.returncode == 0, run.stdout + run.stderr
    assert fingerprint(db_fresh) == damaged and databases(db_fresh) == dbs and backups(db_fresh) == files
    assert db_fresh.describe()['desiredCount'] == 3


def test_app_and_database_roll_back_together(db_fresh):
    good = fingerprint(db_fresh)
    backup = take_backup(db_fresh)
    db_fresh.deploy(4)             # the bad release ...
    damage(db_fresh)               # ... and what its migration did to the data
    run = db_fresh.playbook('-e', 'rollback_scope=app+db', '-e', 'rollback_db_backup=%s' % backup)
    assert run.returncode == 0, run.stdout + run.stderr
    assert db_fresh.revision() == 3 and fingerprint(db_fresh) == good
    status, body = db_fresh.bot()
    assert status == 200 and body['version'] == '1.2.0'
    svc = db_fresh.describe()
    assert svc['desiredCount'] == svc['runningCount'] == 3


def test_a_failed_offline_restore_starts_the_app_again_at_its_remembered_count(db_fresh):
    """The app is scaled to 0, the restore fails in validation (a verify query written for a column the
    backup predates): the live database is untouched and the service is back at 3."""
    backup = take_backup(db_fresh)
    damage(db_fresh)
    damaged, dbs = fingerprint(db_fresh), databases(db_fresh)
    control.reset_calls(db_fresh.dir)
    run = db_fresh.playbook('-e', 'rollback_scope=db', '-e', 'rollback_db_backup=%s' % backup,
                            '-e', 'rollback_db_mode=offline',
                            '-e', '{"db_restore_verify_queries": ["SELECT bool_and(guest_language IS NOT NULL) '
                                  'FROM public.bot_messages"]}')
    assert run.returncode != 0
    assert [f for f in failed_results(run) if 'verify query failed' in f.get('msg', '')]
    assert db_fresh.calls().get('ecs:UpdateService', 0) == 2      # stopped, then started again
    svc = db_fresh.describe()
    assert svc['desiredCount'] == svc['runningCount'] == 3
    assert fingerprint(db_fresh) == damaged
    assert [d for d in databases(db_fresh) if '__restore_' not in d] == [d for d in dbs if '__restore_' not in d]
    assert not [d for d in databases(db_fresh) if '__restore_' in d or '__pre_restore_' in d]


def test_a_failed_swap_with_the_app_stopped_starts_it_again(db_fresh):
    """Swap mode with the app stopped for the swap: someone has a session open on the scratch copy,
    so renaming it fails after the app was scaled to 0. The live database is back under its name,
    and the service at 3."""
    backup = take_backup(db_fresh)
    damage(db_fresh)
    damaged = fingerprint(db_fresh)
    control.reset_calls(db_fresh.dir)
    holder = {}
    stop = threading.Event()

    def hold_a_session_on_the_scratch_copy():
        while not stop.is_set() and 'conn' not in holder:
            names = [d for d in databases(db_fresh) if d.startswith(DB + '__restore_')]
            if names:
                try:
                    holder['conn'] = admin(db_fresh, names[0])
                except psycopg.Error:
                    pass
            time.sleep(0.01)
    watcher = threading.Thread(target=hold_a_session_on_the_scratch_copy, daemon=True)
    watcher.start()
    try:
        run = db_fresh.playbook('-e', 'rollback_scope=db', '-e', 'rollback_db_backup=%s' % backup,
                                '-e', 'rollback_db_mode=swap', '-e', 'rollback_db_stop_app_for_swap=true')
    finally:
        stop.set()
        watcher.join()
        if 'conn' in holder:
            holder['conn'].close()
    assert 'conn' in holder, 'the scratch copy never appeared'
    assert run.returncode != 0
    assert [f for f in failed_results(run) if 'being accessed by other users' in f.get('msg', '')]
    assert db_fresh.calls().get('ecs:UpdateService', 0) == 2
    svc = db_fresh.describe()
    assert svc['desiredCount'] == svc['runningCount'] == 3
    assert fingerprint(db_fresh) == damaged
    assert not [d for d in databases(db_fresh) if '__pre_restore_' in d]
