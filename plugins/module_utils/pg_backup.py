# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_backup logic: pg_dump to a temporary name, validate, fsync, rename, sidecars, retention.

A backup is complete only when all three exist side by side:
  <name>.<ext>             the dump (a file, or a directory for the directory format)
  <name>.<ext>.sha256      sha256sum format; `sha256sum -c` in the directory verifies it
  <name>.<ext>.manifest.json  renamed last: the commit point, and how retention, pg_restore and
                           preflight recognise backups of ours (tool == MANIFEST_TOOL)
All three are written under temporary names (<final>.partial-<writer pid>-<its start time>-<random>)
and fsynced; only then are they renamed, the manifest last (see publish). A failed pg_dump, a full
disk or a failed fsync leaves nothing final-named behind. pg_dump dies with the module (a
parent-death signal), and a later run removes the partials of this database whose writer is gone.

What the dump holds is read from its own table of contents: tables whose data pg_dump left out
(--exclude-table-data, -T, -t, -n, --schema-only ...) are listed in the manifest, row counts are
recorded only for tables whose data is in the dump, and a dump with no table data at all is
refused unless allow_no_data says it is meant.

Row counts in the manifest are taken in the transaction whose snapshot pg_dump uses
(pg_export_snapshot() + --snapshot), so they describe exactly the data in the dump.

Client programs get connection settings only through the environment (libpq_env), and
commands are argv lists, never shell strings.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import uuid

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, Timer
from ansible_collections.hotelbot.ops.plugins.module_utils import postgres

MANIFEST_TOOL = 'hotelbot.ops.pg_backup'
MANIFEST_VERSION = 1
FORMATS = dict(custom=('c', 'dump'), directory=('d', 'dir'), plain=('p', 'sql'))
CHUNK = 1024 * 1024
STDERR_LINES = 15
PLAIN_TRAILER = b'PostgreSQL database dump complete'
COMPRESS_SPEC = re.compile(r'^(none|gzip|lz4|zstd)(:[A-Za-z0-9=,_-]+)?$')
# extra_args that would fight what the module controls, or put a secret on the command line.
REFUSED_LONG = ('--file', '--format', '--dbname', '--password', '--snapshot', '--jobs', '--compress',
                '--host', '--port', '--username', '--no-password')
REFUSED_SHORT = ('-f', '-F', '-d', '-W', '-j', '-Z', '-h', '-p', '-U', '-w')
PASSWORD_IN_ARG = re.compile(r'password\s*=|://[^/\s@]*:[^/\s@]*@', re.I)
# pg_dump options that choose what goes into the dump -> the key the manifest records them under.
SELECTION_LONG = {
    '--schema-only': 'schema_only', '--data-only': 'data_only', '--no-unlogged-table-data': 'no_unlogged_table_data',
    '--table': 'tables', '--table-and-children': 'tables',
    '--exclude-table': 'exclude_tables', '--exclude-table-and-children': 'exclude_tables',
    '--exclude-table-data': 'exclude_table_data', '--exclude-table-data-and-children': 'exclude_table_data',
    '--schema': 'schemas', '--exclude-schema': 'exclude_schemas', '--section': 'sections',
    '--filter': 'filter_files',
}
SELECTION_FLAGS = ('schema_only', 'data_only', 'no_unlogged_table_data')
SELECTION_SHORT = dict(s='schema_only', a='data_only', t='tables', T='exclude_tables', n='schemas',
                       N='exclude_schemas')
# pg_dump's short options that take a value (the rest are flags, which getopt lets one combine: -sv).
SHORT_WITH_VALUE = 'dfFhjnNpStTUZeE'
# Leftovers of a run: <final>.partial-<writer pid>-<writer start time>-<random>.
PARTIAL = re.compile(r'^(?P<final>.+)\.partial-(?P<pid>[0-9]+)-(?P<start>[0-9]+)-[0-9a-f]{8}$')
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_SPACE_TEXT = (b'No space left on device', b'Disk quota exceeded')


# --------------------------------------------------------------------------- naming

def slug(database):
    """A file-name-safe form of a database name; names that needed changing get a short hash
    of the exact name so two different databases never share a slug."""
    safe = re.sub(r'[^A-Za-z0-9_.-]+', '-', database).strip('-.') or 'db'
    safe = safe[:48]
    if safe == database:
        return safe
    return '%s-%s' % (safe, hashlib.sha256(database.encode('utf-8')).hexdigest()[:8])


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def generated_path(dest, database, fmt, now=None):
    """dest/<slug>-<UTC timestamp>.<ext>; a -N suffix when that name is taken in the same second."""
    now = now or utc_now()
    ext = FORMATS[fmt][1]
    stem = '%s-%s' % (slug(database), now.strftime('%Y%m%dT%H%M%SZ'))
    candidate = os.path.join(dest, '%s.%s' % (stem, ext))
    number = 1
    while _taken(candidate):
        number += 1
        candidate = os.path.join(dest, '%s-%d.%s' % (stem, number, ext))
    return candidate


def _taken(path):
    return any(os.path.lexists(p) for p in (path, path + '.sha256', path + '.manifest.json'))


def sidecar_paths(path):
    return path + '.sha256', path + '.manifest.json'


def process_start(pid):
    """A process's start time (clock ticks since boot, /proc/<pid>/stat field 22): with the pid it
    names one process, even after the pid is reused. 0 where /proc is not readable; None if gone."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return int(handle.read().rsplit(')', 1)[1].split()[19])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        return 0


def partial_name(path):
    """The temporary name of what will be `path`: it names its writer, so a later run can tell
    a partial whose writer died from one being written."""
    pid = os.getpid()
    return '%s.partial-%d-%d-%s' % (path, pid, process_start(pid) or 0, uuid.uuid4().hex[:8])


def writer_gone(pid, start):
    """True only when the process that wrote a partial certainly no longer runs."""
    if start == 0:
        return False  # written where start times are not known: never removed
    return process_start(pid) != start


def backup_names(database, path=None):
    """A predicate: is this final name (a dump or a sidecar) one this run's database could own?"""
    if path:
        base = os.path.basename(path)
        names = (base,) + tuple(os.path.basename(p) for p in sidecar_paths(base))
        return lambda name: name in names
    exts = '|'.join(ext for flag, ext in FORMATS.values())
    pattern = re.compile(r'^%s-[0-9]{8}T[0-9]{6}Z(-[0-9]+)?\.(%s)(\.sha256|\.manifest\.json)?$'
                         % (re.escape(slug(database)), exts))
    return lambda name: bool(pattern.match(name))


def stale_partials(directory, owns):
    """Partials in directory of names `owns` accepts whose writer is gone (a killed run's)."""
    stale = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return stale
    for name in names:
        found = PARTIAL.match(name)
        if found and owns(found.group('final')) and writer_gone(int(found.group('pid')), int(found.group('start'))):
            stale.append(os.path.join(directory, name))
    return stale


# --------------------------------------------------------------------------- options

def parse_compress(value, fmt, pg_dump_major):
    """The --compress argument for pg_dump, or None for pg_dump's default."""
    if value is None or value == '':
        return None
    text = str(value).strip()
    if fmt == 'plain':
        raise OpsError('compress is not supported with format=plain: plain SQL is written uncompressed so psql '
                       'can read it; use format=custom (compressed by default) or compress the file afterwards')
    if text.isdigit():
        level = int(text)
        if not 0 <= level <= 9:
            raise OpsError('compress must be a level 0-9 or a method spec like zstd:3, got %s' % text)
        return str(level)
    if not COMPRESS_SPEC.match(text):
        raise OpsError('compress must be a level 0-9 or a method spec (gzip, lz4, zstd or none, optionally '
                       'with :level), got %r' % text)
    if pg_dump_major < 16:
        raise OpsError('compress=%s needs pg_dump 16 or later (method specs); the pg_dump used is version %d, '
                       'which takes a level 0-9 only' % (text, pg_dump_major))
    return text


def check_extra_args(extra_args):
    """Refuse extra_args that set the file, format, connection or a password."""
    for arg in extra_args or []:
        text = str(arg)
        name = text.split('=', 1)[0]
        if text.startswith('--'):
            if name in REFUSED_LONG:
                raise OpsError('extra_args must not contain %s: the module sets it (use the module options; '
                               'connection settings and passwords go through the environment)' % name)
        elif text[:2] in REFUSED_SHORT:
            raise OpsError('extra_args must not contain %s: the module sets it (use the module options; '
                           'connection settings and passwords go through the environment)' % text[:2])
        if PASSWORD_IN_ARG.search(text):
            raise OpsError('extra_args must not contain a password or connection string; use the password or '
                           'passfile option')
    return [str(a) for a in extra_args or []]


def long_option(name):
    """A long option as pg_dump's getopt_long reads it: an unambiguous prefix stands for the option."""
    if name in SELECTION_LONG:
        return name
    matches = [option for option in SELECTION_LONG if option.startswith(name)] if len(name) > 3 else []
    return matches[0] if len(matches) == 1 else name


def dump_selection(extra_args):
    """What extra_args choose to dump: {manifest key: True or [values as given]}, only those given."""
    selection = {}

    def record(key, value=None):
        if key in SELECTION_FLAGS:
            selection[key] = True
        else:
            selection.setdefault(key, []).append(value)
    args = list(extra_args or [])
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == '--':
            break
        if arg.startswith('--'):
            name, has_value, value = arg.partition('=')
            key = SELECTION_LONG.get(long_option(name))
            if key and key not in SELECTION_FLAGS and not has_value and index < len(args):
                value, index = args[index], index + 1
            if key:
                record(key, value)
        elif arg.startswith('-') and len(arg) > 1:
            for position, letter in enumerate(arg[1:], 1):
                if letter in SHORT_WITH_VALUE:
                    value = arg[position + 1:]
                    if not value and index < len(args):
                        value, index = args[index], index + 1
                    if letter in SELECTION_SHORT:
                        record(SELECTION_SHORT[letter], value)
                    break
                if letter in SELECTION_SHORT:
                    record(SELECTION_SHORT[letter])
    return selection


def dumps_no_data(selection):
    """The options alone say the dump can hold no table data (--schema-only, sections without data)."""
    sections = selection.get('sections')
    return bool(selection.get('schema_only')) or (sections is not None and 'data' not in sections)


def no_data_message(extra_args):
    return ('extra_args %s leave no table data in the backup: restoring it would empty every table; '
            'set allow_no_data: true if a backup without data is meant; nothing was kept' % ' '.join(extra_args))


def validate_options(fmt, jobs, compress_value):
    """What the SPEC cannot say (its choices and ranges refuse the rest): options that only go
    with some formats."""
    if fmt not in FORMATS:
        raise OpsError('format must be one of %s, got %r' % (', '.join(FORMATS), fmt))
    if jobs is not None and fmt != 'directory':
        raise OpsError('jobs needs format=directory: pg_dump dumps in parallel only into a directory '
                       '(got format=%s)' % fmt)
    if fmt == 'plain' and compress_value not in (None, ''):
        parse_compress(compress_value, fmt, 99)


# --------------------------------------------------------------------------- programs

def parse_version(text):
    """(major, minor) from 'pg_dump (PostgreSQL) 15.18 (Debian ...)' or '16beta1'."""
    match = re.search(r'\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?', text or '') or re.search(r'(\d+)\.(\d+)', text or '')
    if not match:
        raise OpsError('cannot read the version from %r' % (text or '').strip()[:200])
    return int(match.group(1)), int(match.group(2) or 0)


def find_program(name, explicit=None, bin_dir=None, server_major=None, sibling_of=None):
    """The program to run: explicit path, bin_dir/name, next to sibling_of, PATH, then
    /usr/lib/postgresql/<server major>/bin/name."""
    if explicit:
        candidates = [explicit]
    elif bin_dir:
        candidates = [os.path.join(bin_dir, name)]
    else:
        candidates = []
        if sibling_of:
            candidates.append(os.path.join(os.path.dirname(sibling_of), name))
        found = shutil.which(name)
        if found:
            candidates.append(found)
        if server_major:
            candidates.append('/usr/lib/postgresql/%d/bin/%s' % (server_major, name))
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise OpsError('%s not found (looked at %s); install the PostgreSQL client programs or set %s'
                   % (name, ', '.join(candidates) or 'PATH', 'pg_dump_path or bin_dir'))


def program_version(path, env):
    try:
        returncode, out, errors = postgres.run_program([path, '--version'], env, '%s --version' % path, timeout=30)
    except OSError as err:
        raise OpsError('cannot run %s --version: %s' % (path, err))
    if returncode != 0:
        raise OpsError('%s --version failed (exit %d): %s' % (path, returncode, tail(errors)))
    out = out.decode('utf-8', 'replace')
    return out.strip(), parse_version(out)


def tail(text, secrets=(), lines=STDERR_LINES):
    """The last lines of a program's output, secrets masked."""
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    text = '\n'.join((text or '').strip().splitlines()[-lines:])
    for secret in secrets:
        if secret:
            text = text.replace(secret, '********')
    return text


def exit_reason(returncode):
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = 'signal %d' % -returncode
        return 'killed by %s' % name
    return 'exit status %d' % returncode


def dump_command(pg_dump, fmt, target, snapshot=None, compress=None, jobs=None, extra_args=None):
    """pg_dump argv. No connection settings and no database: those come from the environment."""
    argv = [pg_dump, '--format=%s' % FORMATS[fmt][0], '--file=%s' % target, '--no-password']
    if snapshot:
        argv.append('--snapshot=%s' % snapshot)
    if compress is not None:
        argv.append('--compress=%s' % compress)
    if jobs:
        argv.append('--jobs=%d' % jobs)
    return argv + list(extra_args or [])


# --------------------------------------------------------------------------- files

def fsync_path(path, directory=False):
    flags = os.O_RDONLY
    if directory:
        flags |= getattr(os, 'O_DIRECTORY', 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path):
    """fsync a file, or every file of a directory and the directory itself."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            for name in files:
                fsync_path(os.path.join(root, name))
            for name in dirs:
                fsync_path(os.path.join(root, name), directory=True)
        fsync_path(path, directory=True)
    else:
        fsync_path(path)


def remove(path):
    """Remove a file or directory if it exists; True when something was removed."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
        return True
    if os.path.lexists(path):
        os.unlink(path)
        return True
    return False


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()


def tree_files(path):
    """Relative paths of every file under a directory, sorted (deterministic)."""
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in files:
            found.append(os.path.relpath(os.path.join(root, name), path))
    return sorted(found)


def checksum(path, name):
    """(sha256, sidecar text, size in bytes) for a dump at path that will be called name.

    A file: its sha256 and one sha256sum line. A directory: one sha256sum line per file
    (name/relative path, sorted), so `sha256sum -c` checks every file; the sha256 is that of
    this listing.
    """
    if os.path.isdir(path):
        lines, size = [], 0
        for rel in tree_files(path):
            full = os.path.join(path, rel)
            size += os.path.getsize(full)
            lines.append('%s  %s/%s\n' % (file_sha256(full), name, rel.replace(os.sep, '/')))
        text = ''.join(lines)
        return hashlib.sha256(text.encode('utf-8')).hexdigest(), text, size
    digest = file_sha256(path)
    return digest, '%s  %s\n' % (digest, name), os.path.getsize(path)


def write_synced(path, data):
    """Write bytes to path (a new temporary name) and fsync them."""
    with open(path, 'xb') as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def is_no_space(err):
    return isinstance(err, OSError) and err.errno in NO_SPACE


def no_space(directory, what):
    return OpsError('no space left on %s writing %s; nothing was kept' % (directory, what), step='write')


def publish(partial, target, sha_text, manifest):
    """Make a validated, fsynced dump a backup: both sidecars written and fsynced under temporary
    names, then the dump, its checksum and its manifest renamed, the manifest last - the one commit
    point: retention, pg_restore and preflight take only a dump with its manifest for a backup.
    On any failure nothing final-named is left (a full disk says so in one line)."""
    directory = os.path.dirname(target)
    sha_path, manifest_path = sidecar_paths(target)
    temps = [(partial, target), (partial_name(sha_path), sha_path), (partial_name(manifest_path), manifest_path)]
    data = [sha_text.encode('utf-8'), (json.dumps(manifest, indent=2, sort_keys=True) + '\n').encode('utf-8')]
    renamed = []
    what = 'the checksum file'
    try:
        write_synced(temps[1][0], data[0])
        what = 'the manifest'
        write_synced(temps[2][0], data[1])
        what = 'the directory entries'
        fsync_path(directory, directory=True)
        for tmp, final in temps:
            os.rename(tmp, final)
            renamed.append(final)
        fsync_path(directory, directory=True)
    except BaseException as err:
        for final in reversed(renamed):  # the manifest first: no commit point survives the cleanup
            remove(final)
        for tmp, final in temps:
            remove(tmp)
        if is_no_space(err):
            raise no_space(directory, what)
        raise
    return sha_path, manifest_path


def plain_complete(path):
    """pg_dump ends a finished plain dump with '-- PostgreSQL database dump complete'."""
    with open(path, 'rb') as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 4096))
        return PLAIN_TRAILER in handle.read()


def free_bytes(path):
    """Free bytes for an unprivileged writer at path, or at its nearest existing parent."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    stat = os.statvfs(probe)
    return stat.f_bavail * stat.f_frsize


# --------------------------------------------------------------------------- manifests / retention

def read_manifest(path):
    """The manifest (a JSON object) at path; OpsError saying why when it cannot be read or is
    something else. Retention skips such a file; a restore refuses the backup."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError) as err:
        raise OpsError('no readable manifest %s (%s)' % (path, err))
    if not isinstance(data, dict):
        raise OpsError('manifest %s is not a JSON object' % path)
    return data


def our_backups(directory, database):
    """[(created_at, dump path, manifest)] of complete backups of database in directory, newest first.

    Ours = a *.manifest.json with tool == MANIFEST_TOOL, this database, and a plain file name
    that sits beside it. Anything else in the directory is never considered.
    """
    found = []
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for name in names:
        if not name.endswith('.manifest.json'):
            continue
        try:
            manifest = read_manifest(os.path.join(directory, name))
        except OpsError:
            continue  # not a backup of ours to count or prune
        if manifest.get('tool') != MANIFEST_TOOL or manifest.get('database') != database:
            continue
        dump_name = manifest.get('file')
        if (not isinstance(dump_name, str) or '/' in dump_name or os.sep in dump_name
                or dump_name in ('', '.', '..') or name != dump_name + '.manifest.json'):
            continue
        found.append((str(manifest.get('created_at', '')), os.path.join(directory, dump_name), manifest))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return found


def to_prune(directory, database, keep, just_written=None):
    """Dump paths that keep=N would remove: all but the newest N (the one just written is always kept)."""
    if keep is None:
        return []
    backups = [path for created, path, manifest in our_backups(directory, database)]
    if just_written:
        backups = [just_written] + [p for p in backups if p != just_written]
    return backups[keep:]


def prune(paths):
    """Remove dumps with their sidecars: the dump first, the manifest last (a manifest left by an
    interrupted prune still names its leftovers for the next run)."""
    pruned = []
    for path in paths:
        sha_path, manifest_path = sidecar_paths(path)
        for part in (path, sha_path, manifest_path):
            remove(part)
        pruned.append(path)
    if paths:
        fsync_path(os.path.dirname(paths[0]) or '.', directory=True)
    return pruned


# --------------------------------------------------------------------------- database

def resolve_tables(cursor, tables):
    """[(name as given, schema, table, oid)] via to_regclass (SQL identifier syntax; quote mixed case)."""
    resolved = []
    for name in tables or []:
        cursor.execute(
            'SELECT n.nspname, c.relname, c.oid::int8 FROM pg_catalog.pg_class c '
            'JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = pg_catalog.to_regclass(%s)',
            (name,))
        row = cursor.fetchone()
        if row is None:
            raise OpsError('verify_tables: table %s does not exist in the database (names use SQL syntax: '
                           'schema.table, double quotes for mixed case)' % name)
        resolved.append((name, row[0], row[1], row[2]))
    return resolved


def user_tables(cursor):
    """{oid: (schema, table)} of the tables whose rows pg_dump dumps unless told otherwise
    (ordinary tables, not temporary, not of a system schema or an extension)."""
    cursor.execute(
        "SELECT c.oid::int8, n.nspname, c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND c.relpersistence <> 't' "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)' "
        "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass "
        "AND d.objid = c.oid AND d.deptype = 'e')")
    return dict((oid, (schema, table)) for oid, schema, table in cursor.fetchall())


# A TOC line of table data: '<dump id>; 0 <table oid> TABLE DATA <schema> <table> <owner>'.
TOC_TABLE_DATA = re.compile(rb'^[0-9]+; [0-9]+ ([0-9]+) TABLE DATA ')
# pg_dump's comment before each table's data in a plain dump.
PLAIN_TABLE_DATA = re.compile(rb'^-- Data for Name: (.*); Type: TABLE DATA; Schema: (.*); Owner: ')


def plain_table_data(path):
    """{(schema, table)} whose data a plain dump holds, from pg_dump's comment before each."""
    found = set()
    with open(path, 'rb') as handle:
        for line in handle:
            if line.startswith(b'-- Data for Name: '):
                match = PLAIN_TABLE_DATA.match(line)
                if match:
                    found.add((match.group(2).decode('utf-8', 'replace'), match.group(1).decode('utf-8', 'replace')))
    return found


def tables_without_data(tables, dumped):
    """Sorted 'schema.table' of tables ({oid: (schema, table)}) whose data the dump does not hold.
    dumped: the oids of a TOC's TABLE DATA entries, or for a plain dump (schema, table) pairs."""
    return sorted('%s.%s' % name for oid, name in tables.items() if oid not in dumped and name not in dumped)


def count_rows(cursor, resolved):
    counts = {}
    for name, schema, table, oid in resolved:
        cursor.execute(postgres.sql.SQL('SELECT count(*) FROM {}').format(postgres.identifier(schema, table)))
        counts['%s.%s' % (schema, table)] = cursor.fetchone()[0]
    return counts


def server_facts(cursor):
    cursor.execute("SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
                   "current_database(), pg_catalog.pg_database_size(current_database())")
    version, version_num, database, size = cursor.fetchone()
    return dict(server_version=version, server_major=version_num // 10000, database=database,
                database_size_bytes=size)


# --------------------------------------------------------------------------- the backup

class Backup:
    """One pg_backup run. params are the module's parameters."""

    def __init__(self, params, base_env=None):
        self.p = params
        self.secrets = [params.get('password')] if params.get('password') else []
        self.env = postgres.libpq_env(params, base=base_env)
        self.fmt = params.get('format') or 'custom'
        validate_options(self.fmt, params.get('jobs'), params.get('compress'))
        self.extra_args = check_extra_args(params.get('extra_args'))
        postgres.check_table_names('verify_tables', params.get('verify_tables'), 'nothing was written')
        if dumps_no_data(dump_selection(self.extra_args)) and not params.get('allow_no_data'):
            raise OpsError(no_data_message(self.extra_args))
        if bool(params.get('dest')) == bool(params.get('path')):
            raise OpsError('give exactly one of dest (a directory; the file name is generated) or path')

    # ---- pieces
    def target(self, database):
        if self.p.get('path'):
            path = os.path.abspath(self.p['path'])
            if _taken(path):
                raise OpsError('%s (or its .sha256 / .manifest.json) already exists; refusing to overwrite a backup'
                               % path)
            return path
        return generated_path(os.path.abspath(self.p['dest']), database, self.fmt)

    def programs(self, server_major):
        pg_dump = find_program('pg_dump', self.p.get('pg_dump_path'), self.p.get('bin_dir'), server_major)
        dump_version_text, dump_version = program_version(pg_dump, self.env)
        if dump_version[0] < server_major:
            raise OpsError('%s is version %d.%d, older than the server (major %d); pg_dump cannot dump a newer '
                           'server: set bin_dir or pg_dump_path to pg_dump %d or later'
                           % (pg_dump, dump_version[0], dump_version[1], server_major, server_major))
        pg_restore = None
        if self.fmt != 'plain':
            pg_restore = find_program('pg_restore', None, self.p.get('bin_dir'), server_major, sibling_of=pg_dump)
        return pg_dump, dump_version_text, dump_version, pg_restore

    # ---- check mode
    def plan(self):
        conn = postgres.connect(self.p)
        try:
            with conn.cursor() as cursor:
                facts = server_facts(cursor)
                tables = resolve_tables(cursor, self.p.get('verify_tables'))
        finally:
            conn.close()
        pg_dump, dump_version_text, dump_version, pg_restore = self.programs(facts['server_major'])
        compress = parse_compress(self.p.get('compress'), self.fmt, dump_version[0])
        target = self.target(facts['database'])
        directory = os.path.dirname(target)
        free = free_bytes(directory)
        result = dict(
            changed=True, would_write=target, format=self.fmt, free_bytes=free,
            database_size_bytes=facts['database_size_bytes'], server_version=facts['server_version'],
            pg_dump_version=dump_version_text, pg_dump=pg_dump,
            command=dump_command(pg_dump, self.fmt, target + '.partial-XXXX', '<snapshot>', compress,
                                 self.p.get('jobs'), self.extra_args),
            verify_tables=['%s.%s' % (schema, table) for name, schema, table, oid in tables],
            would_prune=to_prune(directory, facts['database'], self.p.get('keep'), target),
            dest_exists=os.path.isdir(directory),
            msg='would write %s (%s format) from database %s (%d bytes on the server; %d bytes free at %s). '
                'The space check is conservative: it compares with the database size, and a compressed dump is '
                'usually much smaller.' % (target, self.fmt, facts['database'], facts['database_size_bytes'],
                                           free, directory),
        )
        if free < facts['database_size_bytes']:
            details = dict((k, v) for k, v in result.items() if k not in ('changed', 'msg'))
            raise OpsError('not enough free space for the backup: %d bytes free at %s, database %s is %d bytes '
                           '(a conservative check: a compressed dump is usually smaller)'
                           % (free, directory, facts['database'], facts['database_size_bytes']), **details)
        return result

    # ---- the real thing
    def create(self):
        conn = postgres.connect(self.p, autocommit=False)
        partial = None
        try:
            conn.isolation_level = postgres.psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.cursor() as cursor:
                # The first statement starts the transaction whose snapshot pg_dump will share.
                cursor.execute('SELECT pg_catalog.pg_export_snapshot()')
                snapshot = cursor.fetchone()[0]
                facts = server_facts(cursor)
                tables = resolve_tables(cursor, self.p.get('verify_tables'))
                pg_dump, dump_version_text, dump_version, pg_restore = self.programs(facts['server_major'])
                compress = parse_compress(self.p.get('compress'), self.fmt, dump_version[0])
                jobs, warnings = self.capped_jobs(cursor)
                row_counts = count_rows(cursor, tables)
                dumpable = user_tables(cursor)
                target = self.target(facts['database'])
                directory = os.path.dirname(target)
                if not os.path.isdir(directory):
                    os.makedirs(directory, mode=0o700)
                removed = [path for path in stale_partials(directory, backup_names(facts['database'], self.p.get('path')))
                           if remove(path)]
                partial = partial_name(target)
                argv = dump_command(pg_dump, self.fmt, partial, snapshot, compress, jobs, self.extra_args)
                dump_timer = Timer()
                env = postgres.libpq_env(self.p, database=facts['database'], base=self.env)
                self.run_step('pg_dump', argv, env, partial)
                dump_seconds = dump_timer.elapsed()
            conn.rollback()  # read-only: nothing to keep; releases the snapshot
        except BaseException:
            if partial:
                remove(partial)
            raise
        finally:
            conn.close()

        name = os.path.basename(target)
        try:
            toc_entries, toc_note, dumped = self.validate(partial, pg_restore, env)
            without_data = tables_without_data(dumpable, dumped)
            holds_data = not dumpable or len(without_data) < len(dumpable)
            if not holds_data and not self.p.get('allow_no_data'):
                raise OpsError(no_data_message(self.extra_args), step='validate')
            fsync_tree(partial)
            digest, sidecar, size = checksum(partial, name)
        except BaseException as err:
            remove(partial)
            if is_no_space(err):
                raise no_space(directory, 'the dump')
            raise
        for table in sorted(set(row_counts) & set(without_data)):
            del row_counts[table]  # the dump does not hold its rows: no count to claim
            warnings.append('verify_tables %s: its data is not in the backup (extra_args %s), so no row count is '
                            'recorded for it' % (table, ' '.join(self.extra_args)))
        manifest = dict(
            tool=MANIFEST_TOOL, manifest_version=MANIFEST_VERSION, file=name, format=self.fmt,
            compress=compress, jobs=jobs,
            database=facts['database'], server_version=facts['server_version'],
            pg_dump_version=dump_version_text, size_bytes=size, sha256=digest,
            created_at=utc_now().isoformat(), dump_seconds=dump_seconds,
            row_counts=row_counts, toc_entries=toc_entries, toc_note=toc_note,
            extra_args=self.extra_args, data_selection=dump_selection(self.extra_args),
            holds_data=holds_data, tables_without_data=without_data,
        )
        sha_path, manifest_path = publish(partial, target, sidecar, manifest)
        pruned = prune(to_prune(directory, facts['database'], self.p.get('keep'), target))
        return dict(changed=True, path=target, sha256=digest, size_bytes=size, format=self.fmt,
                    manifest=manifest, manifest_path=manifest_path, sha256_path=sha_path, pruned=pruned,
                    removed_partials=removed, dump_seconds=dump_seconds, command=argv, jobs=jobs, warnings=warnings)

    def capped_jobs(self, cursor):
        """(jobs, warnings): pg_dump --jobs opens a connection per job plus its own; no more than are free."""
        jobs = self.p.get('jobs')
        if not jobs:
            return jobs, []
        free, facts = postgres.free_connections(cursor)
        jobs, warning = postgres.cap_jobs('jobs', jobs, free, facts)
        return jobs, [warning] if warning else []

    def run_step(self, step, argv, env, partial=None, stdout=None):
        """Run a client program; OpsError naming the step and its stderr tail when it fails.
        The program dies with the module (a killed module must not leave pg_dump holding its
        connection and snapshot, and writing a partial no later run would dare remove)."""
        try:
            # Only stderr's tail is kept: it can be long (--verbose) and is never read whole.
            returncode, unused_stdout, stderr = postgres.run_program(
                argv, env, step, stdout=stdout if stdout is not None else postgres.DEVNULL)
        except OSError as err:
            raise OpsError('%s could not be started (%s): %s' % (step, argv[0], err))
        if returncode != 0:
            if partial:
                remove(partial)
                if any(text in stderr for text in NO_SPACE_TEXT):
                    raise no_space(os.path.dirname(partial), 'the dump')
            raise OpsError('%s failed (%s); no backup was written: %s'
                           % (step, exit_reason(returncode), tail(stderr, self.secrets) or '(no output)'),
                           step=step, returncode=returncode)
        return stderr

    def validate(self, partial, pg_restore, env):
        """(TOC entry count, note, what holds table data). Reads the dump back; a truncated or damaged
        dump fails here. The last is a set of table oids, or for plain SQL of (schema, table)."""
        if self.fmt == 'plain':
            if not plain_complete(partial):
                raise OpsError('validate failed: the plain dump does not end with pg_dump\'s "dump complete" line '
                               '(truncated?); no backup was written', step='validate')
            return (None, 'plain SQL has no table of contents; checked that pg_dump wrote its closing line',
                    plain_table_data(partial))
        dumped = set()
        with tempfile.TemporaryFile() as listing:
            self.run_step('pg_restore --list', [pg_restore, '--list', partial], env, stdout=listing)
            listing.seek(0)
            entries = 0
            for line in listing:
                if line.strip() and not line.startswith(b';'):
                    entries += 1
                    found = TOC_TABLE_DATA.match(line)
                    if found:
                        dumped.add(int(found.group(1)))
        # --list reads the table of contents only; this reads every data block back.
        self.run_step('pg_restore (read back)', [pg_restore, '--file=%s' % os.devnull, partial], env)
        return entries, 'entries of pg_restore --list; every data block was read back by pg_restore', dumped


def backup(params, check_mode=False, base_env=None):
    """A plan in check mode, else a new backup."""
    timer = Timer()
    job = Backup(params, base_env=base_env)
    result = job.plan() if check_mode else job.create()
    result['elapsed_s'] = timer.elapsed()
    return result


@postgres.postgres_work
def backup_task(task):
    """The module's work (its SPEC is in modules/pg_backup.py)."""
    return backup(task.params, check_mode=task.check_mode)
