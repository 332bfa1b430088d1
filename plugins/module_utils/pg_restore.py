# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Safe PostgreSQL restore: verify, restore into a scratch database, validate, swap.

The live database is never written to. A backup is restored into a scratch
database beside it; only when that restore succeeded and validated does a swap by
rename make it live, and the old database is kept under <db>__pre_restore_<stamp>,
so the swap itself can be undone by renaming back. Every failure before the swap
drops the scratch database and leaves the live one as it was; the error names the
step. One restore per database at a time (a session advisory lock).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import os
import time
import zlib

from ansible_collections.hotelbot.ops.plugins.module_utils import poll
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, Timer, first_line
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_backup import (
    checksum,
    file_sha256,
    plain_complete,
    read_manifest,
    sidecar_paths,
    tree_files,
)
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_load import ParallelLoad
from ansible_collections.hotelbot.ops.plugins.module_utils.postgres import (
    DATABASE_ERRORS,
    cap_jobs,
    connect,
    free_connections,
    identifier,
    postgres_work,
    program,
    run_client,
    sql,
    validate_size,
)

MAX_IDENTIFIER = 63


# --------------------------------------------------------------------------- the backup

def sha256_of(path):
    """The backup's sha256 as pg_backup records it (for a directory: of its sidecar listing)."""
    return checksum(path, os.path.basename(path.rstrip('/')))[0]


def verify_checksum(path):
    """Check the backup against its sha256sum-format sidecar; returns the backup's sha256.

    For a directory, every file listed must exist with its hash and no unlisted file may
    be present; for a file, the one line must match.
    """
    sidecar = path.rstrip('/') + '.sha256'
    try:
        with open(sidecar) as handle:
            entries = [line.split(None, 1) for line in handle.read().splitlines() if line.strip()]
    except (IOError, OSError) as err:
        raise OpsError('verify: no readable checksum file %s (%s); refusing to restore an unverified backup'
                       % (sidecar, err))
    if not entries or any(len(entry) != 2 for entry in entries):
        raise OpsError('verify: %s is not in sha256sum format' % sidecar)
    if not os.path.isdir(path):
        expected, actual = entries[0][0].lower(), file_sha256(path)
        if actual != expected:
            raise OpsError('verify: checksum mismatch for %s (sidecar %s, file %s): the backup is damaged or '
                           'was changed; nothing was touched' % (path, expected[:12], actual[:12]))
        return actual
    name = os.path.basename(path.rstrip('/'))
    listed = dict((entry[1].strip().lstrip('*')[len(name) + 1:], entry[0].lower()) for entry in entries)
    present = set(rel.replace(os.sep, '/') for rel in tree_files(path))
    if set(listed) != present:
        raise OpsError('verify: files of %s differ from its checksum list (missing: %s, unlisted: %s); nothing '
                       'was touched' % (path, sorted(set(listed) - present)[:5], sorted(present - set(listed))[:5]))
    for rel, expected in sorted(listed.items()):
        if file_sha256(os.path.join(path, rel)) != expected:
            raise OpsError('verify: checksum mismatch for %s/%s: the backup is damaged or was changed; '
                           'nothing was touched' % (path, rel))
    return sha256_of(path)


def backup_manifest(path):
    """The manifest pg_backup wrote beside the backup at path; OpsError (step verify) without one."""
    try:
        return read_manifest(sidecar_paths(path.rstrip('/'))[1])
    except OpsError as err:
        raise OpsError('verify: %s' % err.msg)


def manifest_row_counts(manifest):
    """{table: rows} from a manifest, whichever of the known spellings it uses."""
    for key in ('row_counts', 'rows', 'tables'):
        value = manifest.get(key)
        if isinstance(value, dict):
            return dict((table, int(count if not isinstance(count, dict) else count.get('rows')))
                        for table, count in value.items())
    return {}


def detect_format(path, manifest):
    fmt = manifest.get('format')
    if fmt in ('custom', 'directory', 'plain'):
        return fmt
    if os.path.isdir(path):
        return 'directory'
    with open(path, 'rb') as handle:
        return 'custom' if handle.read(5) == b'PGDMP' else 'plain'


def data_note(path, manifest):
    """What the backup leaves out, in a line (pg_backup records it in the manifest), or None."""
    missing = manifest.get('tables_without_data') or []
    if manifest.get('holds_data') is not False and not missing:
        return None
    args = ' '.join(manifest.get('extra_args') or []) or 'no extra_args'
    if manifest.get('holds_data') is False:
        return '%s holds no table data (pg_dump ran with %s): every table is empty after the restore' % (path, args)
    shown = ', '.join(missing[:5]) + (' and %d more' % (len(missing) - 5) if len(missing) > 5 else '')
    return ('%s holds no data for %d table(s) (pg_dump ran with %s): %s will be empty after the restore'
            % (path, len(missing), args, shown))


def verify_backup(path, database, params, bin_dir, allow_other_database=False, allow_no_data=False):
    """Checksum, manifest, database name, what data it holds and readable TOC; returns what was learnt."""
    if not os.path.exists(path):
        raise OpsError('verify: src %s does not exist; nothing was touched' % path)
    actual = verify_checksum(path)
    manifest = backup_manifest(path)
    source = manifest.get('database')
    if source and source != database and not allow_other_database:
        raise OpsError('verify: %s is a backup of database %r, not %r; set allow_other_database to restore '
                       'it anyway' % (path, source, database))
    note = data_note(path, manifest)
    if manifest.get('holds_data') is False and not allow_no_data:
        raise OpsError('verify: %s; set allow_no_data: true if that is meant (nothing was touched)' % note)
    fmt = detect_format(path, manifest)
    toc_entries = listing = None
    if fmt == 'plain':
        if not plain_complete(path):
            raise OpsError('verify: %s does not end with pg_dump\'s completion line: truncated plain dump' % path)
    else:
        listing = run_client(params, database, [program(bin_dir, 'pg_restore'), '--list', path], 'verify: read the TOC')
        toc_entries = sum(1 for line in listing.splitlines() if line and not line.startswith(';'))
        if not toc_entries:
            raise OpsError('verify: the TOC of %s is empty' % path)
    return dict(format=fmt, sha256=actual, manifest=manifest, toc_entries=toc_entries, listing=listing,
                expected_rows=manifest_row_counts(manifest), data_note=note,
                tables_without_data=manifest.get('tables_without_data') or [])


# --------------------------------------------------------------------------- helpers

def scratch_name(database, stamp, kind):
    """<database>__<kind>_<stamp>, shortened with a hash to PostgreSQL's 63-byte limit."""
    suffix = '__%s_%s' % (kind, stamp)
    name = database + suffix
    if len(name.encode()) <= MAX_IDENTIFIER:
        return name
    tag = '%08x' % (zlib.crc32(database.encode()) & 0xffffffff)
    keep = MAX_IDENTIFIER - len(suffix.encode()) - len(tag) - 1
    head = database.encode()[:keep].decode('utf-8', 'ignore')
    return '%s_%s%s' % (head, tag, suffix)


# Set on a scratch database once it validated: a scratch database without it, found while we
# hold the restore lock, is what a killed or failed run left behind.
VALIDATED_MARK = 'hotelbot.ops: validated restore'


def lock_key(database):
    """A stable 63-bit key for pg_advisory_lock from the database name."""
    return int(hashlib.sha256(('hotelbot.ops restore ' + database).encode()).hexdigest()[:15], 16)


# --------------------------------------------------------------------------- restore

class Restore:
    """One restore of `src` over `database`; see restore() for the steps."""

    def __init__(self, params, database, src, bin_dir=None, maintenance_database='postgres',
                 clock=time.time, maintenance_work_mem='512MB', allow_no_data=False):
        self.params = params
        self.allow_no_data = allow_no_data
        self.maintenance_work_mem = maintenance_work_mem
        self.database = database
        self.src = src
        self.bin_dir = bin_dir
        self.maintenance_database = maintenance_database
        self.stamp = datetime.datetime.fromtimestamp(clock(), datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
        self.admin = None
        self.steps = []

    def step(self, name, started):
        self.steps.append(dict(step=name, seconds=round(time.monotonic() - started, 3)))

    def open_admin(self):
        self.admin = connect(self.params, database=self.maintenance_database)
        with self.admin.cursor() as cur:
            cur.execute('SELECT pg_try_advisory_lock(%s)', (lock_key(self.database),))
            if not cur.fetchone()[0]:
                raise OpsError('another restore of database %r is in progress (its lock is held); '
                               'nothing was touched' % self.database)
            cur.execute('SELECT 1 FROM pg_database WHERE datname = %s', (self.database,))
            if cur.fetchone() is None:
                raise OpsError('database %r does not exist on the server' % self.database)

    def admin_exec(self, statement, args=None):
        with self.admin.cursor() as cur:
            cur.execute(statement, args)
            return cur.fetchall() if cur.description else None

    def create_scratch(self, scratch):
        owner, encoding, collate, ctype = self.admin_exec(
            'SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype '
            'FROM pg_database WHERE datname = %s', (self.database,))[0]
        self.admin_exec(sql.SQL('CREATE DATABASE {} TEMPLATE template0 OWNER {} ENCODING {} '
                                'LC_COLLATE {} LC_CTYPE {}').format(
            identifier(scratch), identifier(owner), sql.Literal(encoding), sql.Literal(collate),
            sql.Literal(ctype)))

    def leftovers(self, scratch):
        """Scratch databases of this database that never validated (a killed or failed run's)."""
        prefix = scratch[:-len(self.stamp)]
        rows = self.admin_exec(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) "
            "AND coalesce(shobj_description(oid, 'pg_database'), '') NOT LIKE %s ORDER BY datname",
            (prefix, VALIDATED_MARK + '%'))
        return [name for (name,) in rows]

    def mark_validated(self, scratch):
        self.admin_exec(sql.SQL('COMMENT ON DATABASE {} IS {}').format(
            identifier(scratch), sql.Literal('%s of %s at %s' % (VALIDATED_MARK, self.src, self.stamp))))

    def drop(self, name):
        self.admin_exec(sql.SQL('DROP DATABASE IF EXISTS {} WITH (FORCE)').format(identifier(name)))

    def load(self, scratch, backup, jobs):
        """Restore into the (new, empty) scratch database; returns how it was loaded."""
        # Nobody reads the scratch database yet: index builds may use more memory, and
        # commits need not wait for the WAL flush (a crash just fails the restore).
        session = dict(maintenance_work_mem=self.maintenance_work_mem, synchronous_commit='off')
        step = 'restore into scratch database %s' % scratch
        if backup['format'] == 'plain':
            run_client(self.params, scratch, [program(self.bin_dir, 'psql'), '-X', '-q', '-v', 'ON_ERROR_STOP=1',
                                              '--single-transaction', '-f', self.src], step, session_options=session)
            return dict(method='psql --single-transaction', jobs=1)
        if jobs and jobs > 1:
            # The scratch database is dropped if anything fails, so the load need not be one
            # transaction: big tables are split over `jobs` COPY connections (see pg_load).
            loader = ParallelLoad(self.params, scratch, self.src, bin_dir=self.bin_dir, workers=jobs, session_options=session)
            tables = loader.run(backup['listing'])
            return dict(method='parallel copy', jobs=jobs, tables=tables, indexes=loader.indexes)
        run_client(self.params, scratch, [program(self.bin_dir, 'pg_restore'), '--exit-on-error', '--single-transaction',
                                          '--dbname', scratch, self.src], step, session_options=session)
        return dict(method='pg_restore --single-transaction', jobs=1)

    def analyze(self, database):
        """Planner statistics; they survive the rename, so the swap does not wait for them."""
        conn = connect(self.params, database=database)
        try:
            conn.execute('ANALYZE')
        finally:
            conn.close()

    def validate(self, scratch, expected_rows, verify_queries):
        """Row counts against the manifest and the caller's queries; returns what was checked."""
        found = {}
        conn = connect(self.params, database=scratch)
        try:
            with conn.cursor() as cur:
                for table, rows in sorted(expected_rows.items()):
                    schema, _sep, name = table.rpartition('.')
                    target = identifier(schema, name) if schema else identifier(name)
                    try:
                        cur.execute(sql.SQL('SELECT count(*) FROM {}').format(target))
                    except DATABASE_ERRORS as err:
                        raise OpsError('validate: table %s missing or unreadable in the restored copy: %s'
                                       % (table, first_line(err)))
                    count = cur.fetchone()[0]
                    found[table] = count
                    if count != rows:
                        raise OpsError('validate: %s has %d rows in the restored copy, the manifest says %d'
                                       % (table, count, rows))
                for query in verify_queries or []:
                    try:
                        cur.execute(query)
                        row = cur.fetchone()
                    except DATABASE_ERRORS as err:
                        raise OpsError('validate: verify query failed: %s: %s' % (query, first_line(err)))
                    if not row or row[0] is not True:
                        raise OpsError('validate: verify query did not return true: %s (got %r)' % (query, row))
        finally:
            conn.close()
        return found

    def swap(self, scratch, previous):
        """Make scratch live; the live database becomes `previous`. Undone if the second rename fails."""
        live = identifier(self.database)
        comment = self.admin_exec("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                                  (self.database,))[0][0]
        self.admin_exec(sql.SQL('ALTER DATABASE {} WITH ALLOW_CONNECTIONS false').format(live))
        try:
            self.admin_exec('SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
                            'WHERE datname = %s AND pid <> pg_backend_pid()', (self.database,))
            self.wait_disconnected(self.database)
            self.admin_exec(sql.SQL('ALTER DATABASE {} RENAME TO {}').format(live, identifier(previous)))
        except Exception:
            self.admin_exec(sql.SQL('ALTER DATABASE {} WITH ALLOW_CONNECTIONS true').format(live))
            raise
        try:
            self.admin_exec(sql.SQL('ALTER DATABASE {} RENAME TO {}').format(identifier(scratch), live))
        except Exception:
            self.admin_exec(sql.SQL('ALTER DATABASE {} RENAME TO {}').format(identifier(previous), live))
            self.admin_exec(sql.SQL('ALTER DATABASE {} WITH ALLOW_CONNECTIONS true').format(live))
            raise
        # The live database keeps its own comment (not our mark); the kept copy stays
        # connectable, for inspection or to swap back.
        self.admin_exec(sql.SQL('COMMENT ON DATABASE {} IS {}').format(live, sql.Literal(comment)))
        self.admin_exec(sql.SQL('ALTER DATABASE {} WITH ALLOW_CONNECTIONS true').format(identifier(previous)))

    def wait_disconnected(self, name, timeout=10.0):
        """Until the terminated sessions on database name are gone (a rename needs none left)."""
        def gone(_deadline):
            left = self.admin_exec('SELECT count(*) FROM pg_stat_activity WHERE datname = %s '
                                   'AND pid <> pg_backend_pid()', (name,))[0][0]
            return True if not left else None
        try:
            poll.poll(gone, timeout, poll.SESSIONS)
        except poll.PollTimeout:
            raise OpsError('swap: sessions on %r did not end within %ss' % (name, timeout))

    def prune(self, previous, keep_previous):
        """Drop the oldest <db>__pre_restore_* copies beyond keep_previous; returns their names."""
        prefix = previous[:-len(self.stamp)]  # stamps have a fixed length, so older copies share it
        rows = self.admin_exec('SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY datname DESC',
                               (prefix,))
        dropped = []
        for (name,) in rows[keep_previous:]:
            self.drop(name)
            dropped.append(name)
        return dropped

    def close(self):
        if self.admin is not None:
            self.admin.close()


def current_step(job):
    done = [entry['step'] for entry in job.steps]
    for name in ('verify', 'restore', 'validate', 'analyze', 'swap'):
        if name not in done:
            return name
    return 'analyze'


PHASES = ('all', 'prepare', 'swap')


def restore(params, database, src, confirm=False, jobs=2, verify_queries=None, keep_previous=1,
            bin_dir=None, allow_other_database=False, maintenance_database='postgres', check_mode=False,
            phase='all', scratch_database=None, maintenance_work_mem='512MB', allow_no_data=False):
    """Verify src, restore it into a scratch database, validate, then swap it in for database.

    phase 'prepare' stops after validation and leaves the scratch database (the app keeps
    serving from the live one meanwhile); phase 'swap' then swaps that scratch database in
    (the only moment the app needs to be stopped). 'all' does both.
    """
    timer = Timer()
    maintenance_work_mem = validate_size(maintenance_work_mem, 'maintenance_work_mem')
    job = Restore(params, database, src, bin_dir=bin_dir, maintenance_database=maintenance_database,
                  maintenance_work_mem=maintenance_work_mem, allow_no_data=allow_no_data)
    result = dict(changed=False, database=database, src=src, phase=phase, steps=job.steps, warnings=[])
    try:
        if phase == 'swap':
            _swap_phase(job, result, scratch_database, confirm, keep_previous, check_mode)
        else:
            _prepare_phase(job, result, confirm, jobs, verify_queries, allow_other_database, check_mode)
            if phase == 'all' and not check_mode:
                _swap_phase(job, result, result['scratch_database'], confirm, keep_previous, check_mode)
        return result
    except DATABASE_ERRORS as err:
        raise OpsError('%s failed: %s' % (current_step(job), first_line(err)), changed=result['changed'],
                       **dict((k, v) for k, v in result.items() if k != 'changed'))
    except OpsError as err:
        raise OpsError(err.msg, changed=result['changed'], **dict(
            (k, v) for k, v in result.items() if k != 'changed'))
    finally:
        job.close()
        result['elapsed_s'] = timer.elapsed()


@postgres_work
def restore_task(task):
    """The module's work (its SPEC is in modules/pg_restore.py)."""
    p = task.params
    return restore(p, p['database'], p['src'], confirm=p['confirm'], jobs=p['jobs'], verify_queries=p['verify_queries'],
                   keep_previous=p['keep_previous'], bin_dir=p['bin_dir'],
                   allow_other_database=p['allow_other_database'], maintenance_database=p['maintenance_database'],
                   check_mode=task.check_mode, phase=p['phase'], scratch_database=p['scratch_database'],
                   maintenance_work_mem=p['maintenance_work_mem'], allow_no_data=p['allow_no_data'])


def _prepare_phase(job, result, confirm, jobs, verify_queries, allow_other_database, check_mode):
    """verify, lock, restore into scratch, validate; the scratch database is dropped on failure."""
    started = time.monotonic()
    backup = verify_backup(job.src, job.database, job.params, job.bin_dir, allow_other_database, job.allow_no_data)
    job.step('verify', started)
    result.update(format=backup['format'], sha256=backup['sha256'], toc_entries=backup['toc_entries'],
                  expected_rows=backup['expected_rows'], tables_without_data=backup['tables_without_data'])
    if backup['data_note']:
        result['warnings'].append(backup['data_note'])
    job.open_admin()
    if jobs and jobs > 1 and backup['format'] != 'plain':
        # every COPY connection, index build and pg_restore --jobs worker is a connection, plus pg_restore's own
        with job.admin.cursor() as cursor:
            free, facts = free_connections(cursor)
        jobs, warning = cap_jobs('jobs', jobs, free, facts)
        if warning:
            result['warnings'].append(warning)
    scratch = scratch_name(job.database, job.stamp, 'restore')
    result.update(scratch_database=scratch, previous_database=scratch_name(job.database, job.stamp, 'pre_restore'))
    result['dropped_leftovers'] = job.leftovers(scratch)
    if check_mode:
        msg = 'would restore %s into %s and validate it%s; the live database would be kept as %s' % (
            job.src, scratch, ', then swap it in' if result['phase'] == 'all' else '', result['previous_database'])
        if result['dropped_leftovers']:
            msg += '; it would drop %s, left by an earlier run that did not finish' % ', '.join(result['dropped_leftovers'])
        if backup['data_note']:
            msg += '. Note: ' + backup['data_note']
        result.update(changed=True, msg=msg)
        return
    if not confirm and result['phase'] == 'all':
        raise OpsError('restoring over %r replaces the live database: set confirm: true (the backup '
                       'verified; nothing was touched)' % job.database)
    for name in result['dropped_leftovers']:
        job.drop(name)
        result['changed'] = True
    started = time.monotonic()
    job.create_scratch(scratch)
    try:
        result['load'] = job.load(scratch, backup, jobs)
        job.step('restore', started)
        started = time.monotonic()
        result['row_counts'] = job.validate(scratch, backup['expected_rows'], verify_queries)
        job.step('validate', started)
        started = time.monotonic()
        job.analyze(scratch)
        job.mark_validated(scratch)
        job.step('analyze', started)
    except (OpsError,) + DATABASE_ERRORS as err:
        job.drop(scratch)
        if isinstance(err, OpsError):
            raise
        raise OpsError('%s failed: %s' % (current_step(job), first_line(err)))
    result['changed'] = True


def _swap_phase(job, result, scratch, confirm, keep_previous, check_mode):
    """swap the validated scratch database in, ANALYZE, prune old copies."""
    if not scratch:
        raise OpsError('phase swap needs scratch_database (returned by phase prepare)')
    if job.admin is None:
        job.open_admin()
    found = job.admin_exec("SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
                           "WHERE datname = %s", (scratch,))
    if not found:
        raise OpsError('swap: scratch database %r does not exist (was phase prepare run?)' % scratch)
    if not found[0][0].startswith(VALIDATED_MARK):
        raise OpsError('swap: scratch database %r never passed validation (a run that did not finish?); '
                       'it is not swapped in' % scratch)
    # The prepared copy carries its stamp; the kept live copy gets the same one.
    stamp = scratch[-len(job.stamp):]
    previous = scratch[:-len(job.stamp)].replace('__restore_', '__pre_restore_') + stamp
    if len(previous.encode()) > MAX_IDENTIFIER:
        previous = scratch_name(job.database, stamp, 'pre_restore')
    result.update(scratch_database=scratch, previous_database=previous)
    if check_mode:
        result.update(changed=True, msg='would swap %s in for %s, keeping it as %s' % (scratch, job.database, previous))
        return
    if not confirm:
        raise OpsError('swapping %r in for %r replaces the live database: set confirm: true' % (scratch, job.database))
    started = time.monotonic()
    job.swap(scratch, previous)
    job.step('swap', started)
    result['changed'] = True
    job.stamp = stamp
    result['dropped_previous'] = job.prune(previous, keep_previous)
