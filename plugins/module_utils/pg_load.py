# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parallel restore of an archive (custom or directory format) into a new, empty database.

pg_restore --jobs parallelises across objects only: one big table is still one COPY
stream, parsed by one server backend on one core, and that is most of a restore. The
scratch database lets us do better. Nobody reads it, it is dropped if anything fails, so
the data does not need to go in as one transaction: each table's COPY stream (read from a
gzip custom archive directly, see pg_archive; from pg_restore's output for every other
archive, so every format and compression pg_restore reads works) is cut at row boundaries and fanned out to `workers` connections, each running its own COPY
into the same table. Each block goes to whichever connection has finished its last one:
handed out strictly in turn, the slowest connection set the pace of all of them (the data
phase of a 744 MiB table with 2 connections: median 14.9 s that way, 12.0 s this way).
Then the indexes and key constraints of ordinary tables are built `workers` at a time (see
pg_indexes), and the rest of the post-data section (foreign keys, triggers, partitioned
tables' indexes) runs with pg_restore --jobs.

The order is pg_restore's own: pre-data, data, post-data. Data entries other than table
data (sequence values, large objects) go through pg_restore unchanged, and so does any
table data that is not a COPY (an archive made with --inserts). Memory stays flat: at
most a few blocks per worker are in flight.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import queue
import tempfile
import threading
import time

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, first_line
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_archive import ArchiveError, CustomArchive
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_indexes import IDENT, IndexBuilds
from ansible_collections.hotelbot.ops.plugins.module_utils.postgres import (
    CAPTURE,
    connect,
    connection_options,
    error_tail,
    libpq_env,
    program,
    run_client,
    start_program,
    stop_program,
)

BLOCK_BYTES = 1 << 20
# A table gets a second (third...) COPY connection once this much of it has been sent.
SPREAD_AFTER_BYTES = 8 << 20
# After a read shorter than this, wait a moment so the next read finds more in the pipe.
SHORT_READ_BYTES = 64 << 10
SHORT_READ_PAUSE = 0.001
# How far back from the end of what was read the end-of-data line is looked for.
MARKER_WINDOW = 64 << 10
TABLE_DATA = re.compile(r'^\d+; \d+ \d+ TABLE DATA ')
# Session settings pg_restore's script output starts with; applied to every loader connection.
SESSION_SET = re.compile(r"^SET ([a-z_]+) = ('[^'\\;]*'|[A-Za-z0-9_.-]+);$")
COPY_STATEMENT = re.compile(r'^COPY .+ FROM stdin;$')
COPY_TABLE = re.compile(r'^COPY (?P<table>{i}\.{i}) '.format(i=IDENT))
END_OF_DATA = b'\\.\n'


def toc_lines(listing):
    """The entries of `pg_restore --list` output (comment lines dropped)."""
    return [line for line in listing.splitlines() if line.strip() and not line.startswith(';')]


def split_toc(listing):
    """(table data entries, every other entry) of a TOC listing."""
    lines = toc_lines(listing)
    return [line for line in lines if TABLE_DATA.match(line)], [line for line in lines if not TABLE_DATA.match(line)]


def entry_name(line):
    """'public bot_messages' from '3364; 0 16418 TABLE DATA public bot_messages hotelbot'."""
    rest = TABLE_DATA.sub('', line).rsplit(' ', 1)[0]
    return rest.replace(' ', '.', 1)


def copy_table(statement):
    """The table of a COPY statement as pg_dump quoted it ('public.t', '"s 2"."My t"'), or None.
    Unlike a TOC line, whose fields are split by spaces, it is unambiguous."""
    found = COPY_TABLE.match(statement or '')
    return found.group('table') if found else None


def end_of_data(block, end=None, start=0):
    """Offset of the end-of-data line ('\\.') in block[:end], a run of whole lines, or -1.
    Only lines that begin at or after `start` are looked at."""
    end = len(block) if end is None else end
    if start == 0 and block.startswith(END_OF_DATA, 0, end):
        return 0
    found = block.find(b'\n' + END_OF_DATA, max(0, start - 1), end)
    return found + 1 if found >= 0 else -1


class Sink:
    """One connection running `COPY ... FROM stdin`, and the thread that feeds it.

    The thread takes the next block from a queue the sinks of a table share, so a block goes
    to whichever connection is free, and a slow one never holds up the others. An in-process
    connection, not a psql per sink: measured here, the load then costs 1.3-1.5 CPU seconds
    less per 744 MiB (no second pipe, no line-by-line reading in psql)."""

    def __init__(self, params, database, statement, settings, blocks):
        self.statement = statement
        self.blocks = blocks
        self.connection = connect(params, database=database, **settings)
        self.error = None
        self.stopped = False
        self.closing = False
        self.thread = threading.Thread(target=self.feed, name='copy-sink', daemon=True)
        self.thread.start()

    def feed(self):
        try:
            with self.connection.cursor() as cursor:
                with cursor.copy(self.statement) as copy:
                    while True:
                        if self.closing:
                            raise OpsError('abandoned')  # leaves the COPY with an error: nothing commits
                        try:
                            block = self.blocks.get(timeout=0.1)
                        except queue.Empty:
                            continue
                        if block is None:
                            break
                        copy.write(block)
        except Exception as err:  # pylint: disable=broad-except
            # reported by finish(), in the caller's thread
            self.error = err
        finally:
            self.stopped = True

    def finish(self):
        """Wait for the thread and close the connection: the error that stopped it, or None."""
        self.thread.join()
        try:
            self.connection.close()
        except Exception:  # pylint: disable=broad-except
            pass
        return None if self.error is None else describe_error(self.error)

    def kill(self):
        self.closing = True
        if not self.stopped:
            try:
                self.connection.cancel()  # a write blocked on a busy server returns at once
            except Exception:  # pylint: disable=broad-except
                pass
        self.finish()


def describe_error(err):
    """The server's message and where in the COPY it happened, like psql prints it."""
    diag = getattr(err, 'diag', None)
    primary = getattr(diag, 'message_primary', None)
    if not primary:
        return first_line(err)
    severity = getattr(diag, 'severity', None) or 'ERROR'
    context = getattr(diag, 'context', None)
    return '%s:  %s%s' % (severity, primary, (' | CONTEXT:  ' + context.strip().replace('\n', ' | ')) if context else '')


def _grow_pipe(fd):
    """Ask for 1 MiB pipe buffers (Linux): fewer wake-ups between the processes."""
    try:
        import fcntl
        fcntl.fcntl(fd, getattr(fcntl, 'F_SETPIPE_SZ', 1031), BLOCK_BYTES)
    except (ImportError, OSError, ValueError):
        pass


class CopyReader:
    """pg_restore's script output for one TABLE DATA entry: a header, the COPY line, rows, '\\.'."""

    def __init__(self, fd):
        self.fd = fd
        self.settings = {}
        self.statement = None
        self.pending = b''
        self.done = False
        self.truncated = False

    def read_header(self):
        """Read up to the COPY line; False if the entry is not a COPY (nothing was loaded then)."""
        data = b''
        while True:
            cut = data.find(b'\n')
            if cut < 0:
                chunk = os.read(self.fd, BLOCK_BYTES)
                if not chunk:
                    return False
                data += chunk
                continue
            line, data = data[:cut].decode('utf-8', 'replace'), data[cut + 1:]
            setting = SESSION_SET.match(line)
            if setting:
                self.settings[setting.group(1)] = setting.group(2).strip("'")
            elif COPY_STATEMENT.match(line):
                self.statement = line[:-1]
                self.pending = data
                return True
            elif line and not line.startswith(('--', '\\', 'SELECT pg_catalog.set_config(')):
                return False

    def blocks(self, source=None):
        """Blocks of whole rows, about BLOCK_BYTES each, until the end-of-data line; read from
        `source` (a raw file object) when given, else from the rest of pg_restore's output.

        pg_restore writes a few KiB at a time. Reading into one reused buffer, and pausing
        briefly after a short read so the next one finds more, keeps this loop to a few
        thousand reads per GiB instead of a hundred thousand."""
        own_source = source is None  # a source handed in is the caller's to close
        if own_source:
            source = os.fdopen(os.dup(self.fd), 'rb', buffering=0)
        buf = bytearray(max(2 * BLOCK_BYTES, 2 * len(self.pending)))
        view = memoryview(buf)
        size = len(self.pending)
        view[:size] = self.pending
        self.pending = b''
        need = BLOCK_BYTES
        try:
            while not self.done:
                got = -1
                while size < need and got:
                    if size == len(buf):  # a row longer than the buffer
                        view.release()
                        buf.extend(bytes(len(buf)))
                        view = memoryview(buf)
                    got = source.readinto(view[size:])
                    size += got
                    if 0 < got < SHORT_READ_BYTES:
                        time.sleep(SHORT_READ_PAUSE)
                cut = buf.rfind(b'\n', 0, size) + 1
                # After the marker pg_restore writes a short trailer and exits, so until the
                # output ends the marker can only be near the end of what was read. Searching
                # every whole block cost 0.5 CPU s per 700 MiB. Were the marker ever missed
                # (a trailer longer than the window), the end would find no marker and fail as
                # truncated: a refused restore, never a wrong one.
                marker = end_of_data(buf, cut, 0 if got == 0 else max(0, cut - MARKER_WINDOW))
                if marker >= 0:
                    self.done = True
                    cut = marker
                elif got == 0:
                    self.truncated = True
                    raise OpsError('the COPY data ended without its end marker (truncated archive?)')
                if not cut:
                    need = size + 1
                    continue
                block = bytes(view[:cut])
                view[:size - cut] = bytes(view[cut:size])  # the partial row left over: small
                size -= cut
                need = BLOCK_BYTES
                if block:
                    yield block
        finally:
            view.release()
            if own_source:
                source.close()

    def drain(self):
        while os.read(self.fd, BLOCK_BYTES):
            pass


def _list_file(lines, directory, name):
    path = os.path.join(directory, name)
    with open(path, 'w') as handle:
        handle.write('\n'.join(lines) + '\n')
    return path


class ParallelLoad:
    """Restore archive `src` into the empty database `target` with `workers` connections."""

    def __init__(self, params, target, src, bin_dir=None, workers=2, session_options=None):
        self.params = params
        self.target = target
        self.src = src
        self.bin_dir = bin_dir
        self.workers = max(2, int(workers))
        self.session_options = session_options or {}
        self.tables = []
        self.indexes = dict(built=0, as_unique_index=0)
        try:
            self.archive = CustomArchive(src) if os.path.isfile(src) else None
        except (ArchiveError, OSError):
            self.archive = None  # pg_restore reads every table's data

    def pg_restore(self, *args):
        return [program(self.bin_dir, 'pg_restore')] + list(args)

    def run(self, listing):
        table_data, others = split_toc(listing)
        tmp = tempfile.mkdtemp(prefix='hotelbot-restore-')
        try:
            others_list = _list_file(others, tmp, 'others.list')
            step = 'restore into scratch database %s' % self.target
            run_client(self.params, self.target, self.pg_restore(
                '--exit-on-error', '--section=pre-data', '--single-transaction', '-L', others_list,
                '--dbname', self.target, self.src), step + ' (pre-data)', self.session_options)
            self.load_tables(table_data, tmp)
            run_client(self.params, self.target, self.pg_restore(
                '--exit-on-error', '--section=data', '-L', others_list, '--dbname', self.target, self.src),
                step + ' (other data)', self.session_options)
            builds = IndexBuilds(self.params, self.target, self.src, bin_dir=self.bin_dir, workers=self.workers,
                                 session_options=self.session_options)
            planned, rest = builds.plan(others, os.path.join(tmp, 'builds.list'))
            self.indexes = dict(built=len(planned), as_unique_index=builds.run(planned))
            run_client(self.params, self.target, self.pg_restore(
                '--exit-on-error', '--section=post-data', '--jobs', str(self.workers), '-L', _list_file(rest, tmp, 'rest.list'),
                '--dbname', self.target, self.src), step + ' (indexes and constraints)', self.session_options)
        finally:
            for name in os.listdir(tmp):
                os.unlink(os.path.join(tmp, name))
            os.rmdir(tmp)
        return self.tables

    def load_tables(self, table_data, tmp):
        for index, line in enumerate(table_data):
            self.load_table(line, _list_file([line], tmp, 'table-%d.list' % index))

    def sink_settings(self, settings):
        """Connection settings of a COPY sink: the archive's session settings plus ours."""
        options = dict(self.session_options)
        extra = {}
        for name, value in settings.items():
            if name == 'client_encoding':
                extra['client_encoding'] = value
            elif re.match(r'^[A-Za-z0-9_.-]+$', value):
                options.setdefault(name, value)
        combined = connection_options(self.params, options)
        if combined:
            extra['options'] = combined
        return extra

    def load_table(self, line, list_file):
        name = entry_name(line)
        argv = self.pg_restore('--data-only', '-L', list_file, '-f', '-', self.src)
        errors = tempfile.TemporaryFile()
        source = start_program(argv, libpq_env(self.params, database=self.target), stdout=CAPTURE, stderr=errors, bufsize=0)
        _grow_pipe(source.stdout.fileno())
        sinks = []
        rows = None
        try:
            reader = CopyReader(source.stdout.fileno())
            if not reader.read_header():
                stop_program(source)
                self.fallback(line, list_file, name)
                return
            name = copy_table(reader.statement) or name
            rows = self.archive_rows(line)
            if rows is not None:
                # pg_restore gave the COPY statement and session settings; the rows come from the archive
                stop_program(source)
                reader.pending = b''
            cut_short = None
            try:
                connections = self.fan_out(reader, sinks, name, rows)
            except OpsError as err:
                if isinstance(err, ArchiveError) or (rows is not None and reader.truncated):
                    raise OpsError('restore: reading the data of %s from the archive failed: %s' % (name, err.msg))
                if not reader.truncated:
                    raise
                # pg_restore closed its output early: its own error says why
                cut_short = err.msg
            else:
                if rows is None:
                    reader.drain()
            status = source.wait() if rows is None else 0
            if status != 0 or cut_short:
                errors.seek(0)
                raise OpsError('restore: reading the data of %s from the archive failed (exit %s): %s'
                               % (name, status, error_tail(errors.read()) or cut_short or 'no error output'))
        finally:
            stop_program(source)  # and whatever it started; a no-op kill once it has been reaped
            source.stdout.close()
            errors.close()
            for sink in sinks:
                sink.kill()
            if rows is not None:
                rows.close()
        self.tables.append(dict(table=name, mode='copy', connections=connections,
                                read='archive' if rows is not None else 'pg_restore'))

    def archive_rows(self, line):
        """The entry's inflated data straight from the archive, or None to keep pg_restore's output."""
        if self.archive is None:
            return None
        try:
            return self.archive.data(int(line.split(';', 1)[0]))
        except (ArchiveError, OSError, ValueError):
            return None

    def fan_out(self, reader, sinks, name, rows=None):
        """Queue blocks for the sinks; start another sink (up to `workers`) only when a table
        proves big and a block is waiting because every sink is busy."""
        settings = self.sink_settings(reader.settings)
        blocks = queue.Queue(maxsize=1)

        def new_sink():
            return Sink(self.params, self.target, reader.statement, settings, blocks)
        sinks.append(new_sink())
        sent = 0
        for block in reader.blocks(rows):
            if not self.hand_over(blocks, block, sinks, sent >= SPREAD_AFTER_BYTES, new_sink):
                break  # every sink stopped: their errors say why, below
            sent += len(block)
        started = len(sinks)
        for sink in sinks:
            if not sink.stopped:
                blocks.put(None)
        failures = []
        while sinks:
            failure = sinks.pop().finish()
            if failure:
                failures.append(failure)
        if failures:
            raise OpsError('restore: loading %s failed: %s' % (name, failures[0]))
        return started

    def hand_over(self, blocks, block, sinks, spread, new_sink):
        """Put a block on the queue; False if no sink is left to take it."""
        try:
            blocks.put_nowait(block)
            return True
        except queue.Full:
            if spread and len(sinks) < self.workers:
                sinks.append(new_sink())
        while not all(sink.stopped for sink in sinks):
            try:
                blocks.put(block, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def fallback(self, line, list_file, name):
        """Table data that is not a COPY (INSERT statements): pg_restore restores that entry."""
        run_client(self.params, self.target, self.pg_restore(
            '--exit-on-error', '--data-only', '--single-transaction', '-L', list_file, '--dbname', self.target,
            self.src), 'restore: the data of %s' % name, self.session_options)
        self.tables.append(dict(table=name, mode='pg_restore', connections=1))
