"""Unit tests of module_utils.pg_load that need no server: TOC parsing and cutting COPY streams at rows."""
import os
import threading
import time

import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import pg_load
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError

LISTING = """;
; Archive created at 2026-11-22 21:15:00 UTC
;     dbname: hotel_voice_bot
;
; Selected TOC Entries:
;
215; 1259 16390 TABLE public bot_messages hotelbot
216; 1259 16398 SEQUENCE public bot_messages_id_seq hotelbot
3364; 0 16390 TABLE DATA public bot_messages hotelbot
3365; 0 16401 TABLE DATA public my table hotelbot
3366; 0 0 SEQUENCE SET public bot_messages_id_seq hotelbot
3210; 2606 16405 CONSTRAINT public bot_messages bot_messages_pkey hotelbot
"""

HEADER = (b'--\n-- PostgreSQL database dump\n--\n\n'
          b'\\restrict Zx9kQ3fG8s1Lq\n\n'
          b'-- Dumped from database version 15.18\n-- Dumped by pg_dump version 15.18\n\n'
          b'SET statement_timeout = 0;\n'
          b'SET lock_timeout = 0;\n'
          b"SET client_encoding = 'UTF8';\n"
          b'SET standard_conforming_strings = on;\n'
          b"SELECT pg_catalog.set_config('search_path', '', false);\n"
          b'SET check_function_bodies = false;\n'
          b'SET xmloption = content;\n'
          b'SET client_min_messages = warning;\n'
          b'SET row_security = off;\n'
          b"SET default_tablespace = '';\n"
          b'\n--\n-- Data for Name: msgs; Type: TABLE DATA; Schema: public; Owner: hotelbot\n--\n\n')
COPY = b'COPY public.msgs (id, body) FROM stdin;\n'
TRAILER = b'\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict Zx9kQ3fG8s1Lq\n\n'


def rows(count, width=30):
    """COPY text rows, each ending in a newline, with escapes that look like markers inside values."""
    return [b'%d\trow \\\\. %s \\\\.\\n\\t\xc3\xa4\n' % (i, b'x' * (i % width)) for i in range(count)]


def reader_of(data, pieces=7):
    """A CopyReader over a pipe that a thread feeds with `data` in odd-sized writes, then closes."""
    rfd, wfd = os.pipe()

    def feed():
        try:
            step = max(1, len(data) // pieces)
            for start in range(0, len(data), step):
                os.write(wfd, data[start:start + step])
        except OSError:
            pass  # the reader closed its end
        finally:
            os.close(wfd)
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    reader = pg_load.CopyReader(rfd)
    reader.thread = writer
    return reader


def close(reader):
    os.close(reader.fd)
    reader.thread.join(5)


# ---------------------------------------------------------------- TOC

def test_split_toc_separates_table_data_and_drops_comments():
    data, others = pg_load.split_toc(LISTING)
    assert data == ['3364; 0 16390 TABLE DATA public bot_messages hotelbot',
                    '3365; 0 16401 TABLE DATA public my table hotelbot']
    assert others == ['215; 1259 16390 TABLE public bot_messages hotelbot',
                      '216; 1259 16398 SEQUENCE public bot_messages_id_seq hotelbot',
                      '3366; 0 0 SEQUENCE SET public bot_messages_id_seq hotelbot',
                      '3210; 2606 16405 CONSTRAINT public bot_messages bot_messages_pkey hotelbot']


def test_split_toc_of_an_archive_without_data():
    assert pg_load.split_toc('; nothing\n\n215; 1259 16390 TABLE public t o\n') == (
        [], ['215; 1259 16390 TABLE public t o'])


@pytest.mark.parametrize('line, name', [
    ('3364; 0 16418 TABLE DATA public bot_messages hotelbot', 'public.bot_messages'),
    ('3365; 0 16401 TABLE DATA public my table hotelbot', 'public.my table'),
    ('12; 0 7 TABLE DATA billing invoices_2026 postgres', 'billing.invoices_2026'),
])
def test_entry_name(line, name):
    assert pg_load.entry_name(line) == name


@pytest.mark.parametrize('statement, table', [
    ('COPY public.bot_messages (id, body) FROM stdin;', 'public.bot_messages'),
    ('COPY "s 2"."my ""t"" tbl" (id, "Col") FROM stdin;', '"s 2"."my ""t"" tbl"'),
    ('COPY public."my table" (id) FROM stdin;', 'public."my table"'),
    ('COPY weird FROM stdin;', None),
    (None, None),
])
def test_copy_table_is_the_unambiguous_name(statement, table):
    assert pg_load.copy_table(statement) == table


# ---------------------------------------------------------------- end marker

@pytest.mark.parametrize('block, offset', [
    (b'\\.\n', 0),
    (b'\\.\n\n-- complete\n', 0),
    (b'1\ta\n2\tb\n\\.\n', 8),
    (b'1\ta\n\\.\n\n\\unrestrict x\n', 4),
    (b'1\ta\n2\tb\n', -1),
    (b'', -1),
    # escaped backslash-dot inside values is data, not the marker
    (b'1\t\\\\.\n2\tx\\\\.\n', -1),
    (b'1\t\\.x\n', -1),
    (b'\\\\.\n', -1),
    # a line that only starts with the marker is not the marker
    (b'1\ta\n\\.x\n', -1),
])
def test_end_of_data(block, offset):
    assert pg_load.end_of_data(block) == offset


@pytest.mark.parametrize('block, start, offset', [
    (b'1\ta\n\\.\n', 4, 4),      # the marker line begins exactly at start
    (b'1\ta\n\\.\n', 2, 4),
    (b'\\.\n1\ta\n', 1, -1),     # a marker line before start is not looked at
    (b'1\ta\n\\.\n', 5, -1),
])
def test_end_of_data_from_start(block, start, offset):
    assert pg_load.end_of_data(block, start=start) == offset


def _stream_without_end(monkeypatch, trailer):
    """A reader whose pipe holds the rows, the marker and `trailer`, its writer still open."""
    body = b''.join(rows(60))
    monkeypatch.setattr(pg_load, 'BLOCK_BYTES', len(body))
    monkeypatch.setattr(pg_load, 'MARKER_WINDOW', 256)
    rfd, wfd = os.pipe()
    os.write(wfd, HEADER + COPY + body + b'\\.\n' + trailer)
    reader = pg_load.CopyReader(rfd)
    assert reader.read_header()
    return reader, body, wfd


def test_end_marker_found_before_the_output_ends(monkeypatch):
    """The marker is near the end of what was read: found without waiting for the end of output."""
    reader, body, wfd = _stream_without_end(monkeypatch, TRAILER)
    try:
        blocks = reader.blocks()
        assert next(blocks) == body
        assert reader.done
        assert list(blocks) == []
    finally:
        os.close(wfd)
        os.close(reader.fd)


def test_end_marker_beyond_the_window_fails_as_truncated(monkeypatch):
    """Were more than the window to follow the marker, the restore fails; it never loads the trailer."""
    reader, body, wfd = _stream_without_end(monkeypatch, b'-- trailer line\n' * 40)
    try:
        blocks = reader.blocks()
        first = next(blocks)
        assert first.startswith(body) and not reader.done
        os.close(wfd)
        wfd = None
        with pytest.raises(OpsError, match='ended without its end marker'):
            list(blocks)
        assert reader.truncated
    finally:
        if wfd is not None:
            os.close(wfd)
        os.close(reader.fd)


# ---------------------------------------------------------------- CopyReader

def test_header_settings_statement_and_all_rows():
    body = b''.join(rows(200))
    reader = reader_of(HEADER + COPY + body + b'\\.\n' + TRAILER)
    try:
        assert reader.read_header() is True
        assert reader.statement == 'COPY public.msgs (id, body) FROM stdin'
        assert reader.settings == {'statement_timeout': '0', 'lock_timeout': '0', 'client_encoding': 'UTF8',
                                   'standard_conforming_strings': 'on', 'check_function_bodies': 'false',
                                   'xmloption': 'content', 'client_min_messages': 'warning',
                                   'row_security': 'off', 'default_tablespace': ''}
        assert b''.join(reader.blocks()) == body
        assert reader.done and not reader.truncated
        reader.drain()
    finally:
        close(reader)


def test_header_split_across_reads(monkeypatch):
    monkeypatch.setattr(pg_load, 'BLOCK_BYTES', 5)   # every read returns at most 5 bytes
    body = b''.join(rows(20))
    reader = reader_of(HEADER + COPY + body + b'\\.\n' + TRAILER, pieces=50)
    try:
        assert reader.read_header()
        assert reader.statement == 'COPY public.msgs (id, body) FROM stdin'
        assert reader.settings['client_encoding'] == 'UTF8'
        assert b''.join(reader.blocks()) == body
    finally:
        close(reader)


@pytest.mark.parametrize('block_bytes', [1, 7, 64, 333, 4096])
def test_blocks_are_whole_rows(monkeypatch, block_bytes):
    monkeypatch.setattr(pg_load, 'BLOCK_BYTES', block_bytes)
    expected = rows(300)
    reader = reader_of(HEADER + COPY + b''.join(expected) + b'\\.\n' + TRAILER, pieces=13)
    try:
        assert reader.read_header()
        blocks = list(reader.blocks())
    finally:
        close(reader)
    assert all(block and block.endswith(b'\n') for block in blocks)
    assert b''.join(blocks) == b''.join(expected)
    # each block is a run of complete rows: splitting them gives back exactly the rows
    assert [line + b'\n' for block in blocks for line in block[:-1].split(b'\n')] == expected
    if block_bytes < 100:
        assert len(blocks) > 10


def test_end_marker_at_the_start_of_a_block(monkeypatch):
    """The rows end exactly on a block boundary: the next block starts with the marker."""
    body = b''.join(rows(10))
    monkeypatch.setattr(pg_load, 'BLOCK_BYTES', len(body))
    rfd, wfd = os.pipe()
    os.write(wfd, HEADER + COPY)
    reader = pg_load.CopyReader(rfd)
    try:
        assert reader.read_header() and reader.pending == b''
        os.write(wfd, body)
        blocks = reader.blocks()
        assert next(blocks) == body            # a full block, the marker not yet read
        assert not reader.done
        os.write(wfd, b'\\.\n' + TRAILER)
        os.close(wfd)
        wfd = None
        assert list(blocks) == []              # the marker alone: no further block
        assert reader.done
    finally:
        os.close(rfd)
        if wfd is not None:
            os.close(wfd)


def test_end_marker_in_the_middle_of_a_block_and_trailer_ignored():
    body = b''.join(rows(5))
    reader = reader_of(HEADER + COPY + body + b'\\.\n' + TRAILER + b'5\tnot a row\n', pieces=1)
    try:
        assert reader.read_header()
        assert list(reader.blocks()) == [body]
        assert reader.done
    finally:
        close(reader)


def test_empty_table():
    reader = reader_of(HEADER + COPY + b'\\.\n' + TRAILER)
    try:
        assert reader.read_header()
        assert list(reader.blocks()) == []
        assert reader.done
    finally:
        close(reader)


@pytest.mark.parametrize('cut', [0, 1, 17])
def test_truncated_stream_without_end_marker_is_an_error(monkeypatch, cut):
    monkeypatch.setattr(pg_load, 'BLOCK_BYTES', 64)
    body = b''.join(rows(40))
    reader = reader_of(HEADER + COPY + body[:len(body) - cut])
    try:
        assert reader.read_header()
        received = []
        with pytest.raises(OpsError, match='ended without its end marker'):
            for block in reader.blocks():
                received.append(block)
    finally:
        close(reader)
    assert reader.truncated and not reader.done
    # what was handed out before the error were whole rows only, never a partial line
    handed = b''.join(received)
    assert body.startswith(handed) and (not handed or handed.endswith(b'\n'))


def test_insert_entry_is_not_a_copy():
    data = HEADER + b"INSERT INTO public.msgs VALUES (1, 'a');\nINSERT INTO public.msgs VALUES (2, 'b');\n" + TRAILER
    reader = reader_of(data)
    try:
        assert reader.read_header() is False
        assert reader.statement is None
    finally:
        close(reader)


@pytest.mark.parametrize('data', [b'', HEADER, HEADER + b'COPY public.msgs (id, body) FROM stdin'])
def test_output_ending_before_a_copy_line_is_not_a_copy(data):
    reader = reader_of(data)
    try:
        assert reader.read_header() is False
    finally:
        close(reader)


# ---------------------------------------------------------------- sink settings

def test_sink_settings_pass_archive_settings_and_session_options(monkeypatch):
    monkeypatch.delenv('PGOPTIONS', raising=False)
    params = dict(host='/tmp/sock', port=5432, user='bot', password=None, database='live', sslmode=None,
                  sslrootcert=None, passfile=None, connect_timeout=5, connect_params={})
    load = pg_load.ParallelLoad(params, 'live__restore_x', '/b.dump',
                                session_options=dict(synchronous_commit='off', maintenance_work_mem='512MB'))
    settings = load.sink_settings({'client_encoding': 'LATIN1', 'statement_timeout': '0', 'row_security': 'off',
                                   'synchronous_commit': 'on', 'search_path': 'a b', 'application_name': "it's",
                                   'default_tablespace': '', 'xmloption': 'content'})
    assert settings['client_encoding'] == 'LATIN1'
    options = settings['options'].split(' -c ')
    assert options[0].startswith('-c ')
    options[0] = options[0][3:]
    # our session options win over the archive's; unsafe or empty values are dropped
    assert sorted(options) == ['maintenance_work_mem=512MB', 'row_security=off', 'statement_timeout=0',
                               'synchronous_commit=off', 'xmloption=content']
    assert set(settings) == {'client_encoding', 'options'}


def test_sink_settings_keep_the_callers_options(monkeypatch):
    monkeypatch.setenv('PGOPTIONS', '-c search_path=ops')
    params = dict(host='h', port=5432, user='u', database='d', connect_params={})
    load = pg_load.ParallelLoad(params, 'd__restore_x', '/b.dump', session_options=dict(synchronous_commit='off'))
    assert load.sink_settings({})['options'] == '-c search_path=ops -c synchronous_commit=off'
    params['connect_params'] = {'options': '-c work_mem=8MB'}
    assert load.sink_settings({})['options'] == '-c work_mem=8MB -c synchronous_commit=off'


def test_sink_settings_without_settings(monkeypatch):
    monkeypatch.delenv('PGOPTIONS', raising=False)
    params = dict(host='h', port=5432, user='u', database='d', connect_params={})
    assert pg_load.ParallelLoad(params, 'd__restore_x', '/b.dump').sink_settings({}) == {}
    assert pg_load.ParallelLoad(params, 't', '/b', workers=1).workers == 2


# ---------------------------------------------------------------- fanning blocks out to COPY sinks

class FakeDiag:
    severity = 'ERROR'
    message_primary = 'invalid input syntax for type uuid: "x"'
    context = 'COPY msgs, line 7, column id: "x"'


class FakeCopyError(Exception):
    diag = FakeDiag()


class FakeConnection:
    """Stands in for a psycopg connection that runs one COPY FROM stdin (a unit test: no server).
    The first connection made can be slow (a pause per write) or fail after some bytes."""

    made = []

    def __init__(self, pause=0.0, fail_after=0):
        self.received = []
        self.pause = pause
        self.fail_after = fail_after
        self.cancelled = False
        self.closed = False
        self.finished = None
        self.settings = None

    def cursor(self):
        return self

    def copy(self, statement):
        self.statement = statement
        return self

    def __enter__(self):
        return self

    def __exit__(self, kind, value, trace):
        if self.finished is None:
            # what psycopg sends when the block ends: CopyDone, or CopyFail with the error
            self.finished = 'done' if kind is None else 'failed'
        return False

    def write(self, block):
        if self.cancelled:
            raise FakeCopyError('canceling statement due to user request')
        self.received.append(bytes(block))
        if self.fail_after and sum(len(b) for b in self.received) >= self.fail_after:
            raise FakeCopyError('invalid input syntax for type uuid: "x"')
        time.sleep(self.pause)

    def cancel(self):
        self.cancelled = True

    def close(self):
        self.closed = True


@pytest.fixture
def fake_connections(monkeypatch):
    made = []

    def factory(first_pause=0.0, first_fail_after=0):
        def connect(params, database=None, **settings):
            conn = FakeConnection(*((first_pause, first_fail_after) if not made else ()))
            conn.settings = dict(settings, database=database)
            made.append(conn)
            return conn
        monkeypatch.setattr(pg_load, 'connect', connect)
        return made
    return factory


def fan_out(data, workers=2):
    params = dict(host='h', port=5432, user='u', database='d', connect_params={})
    load = pg_load.ParallelLoad(params, 'd__restore_x', '/b.dump', workers=workers)
    reader = reader_of(data, pieces=50)
    sinks = []
    try:
        assert reader.read_header()
        return load.fan_out(reader, sinks, 'public.msgs')
    finally:
        close(reader)
        for sink in sinks:
            sink.kill()


def test_fan_out_delivers_every_row_once_in_whole_rows(fake_connections, monkeypatch):
    made = fake_connections()
    monkeypatch.setattr(pg_load, 'BLOCK_BYTES', 4096)
    monkeypatch.setattr(pg_load, 'SPREAD_AFTER_BYTES', 8192)
    expected = rows(20000)
    started = fan_out(HEADER + COPY + b''.join(expected) + b'\\.\n' + TRAILER, workers=3)
    assert started == len(made) and 1 <= started <= 3
    assert all(conn.statement == COPY.decode()[:-2] and conn.finished == 'done' and conn.closed for conn in made)
    assert all(conn.settings['database'] == 'd__restore_x' and conn.settings['client_encoding'] == 'UTF8'
               for conn in made)
    blocks = [block for conn in made for block in conn.received]
    assert all(block.endswith(b'\n') for block in blocks)
    got = [row + b'\n' for block in blocks for row in block[:-1].split(b'\n')]
    assert sorted(got) == sorted(expected)


def test_fan_out_gives_blocks_to_the_sink_that_is_free(fake_connections, monkeypatch):
    """The first connection is slow: the blocks go to the other one, not half to each in turn."""
    made = fake_connections(first_pause=0.05)
    monkeypatch.setattr(pg_load, 'BLOCK_BYTES', 8192)
    monkeypatch.setattr(pg_load, 'SPREAD_AFTER_BYTES', 8192)
    expected = rows(30000)
    assert fan_out(HEADER + COPY + b''.join(expected) + b'\\.\n' + TRAILER) == 2
    sizes = [sum(len(block) for block in conn.received) for conn in made]
    assert sum(sizes) == len(b''.join(expected))
    assert sizes[1] > 4 * sizes[0]


def test_a_small_table_uses_one_connection(fake_connections):
    made = fake_connections()
    expected = rows(100)
    assert fan_out(HEADER + COPY + b''.join(expected) + b'\\.\n' + TRAILER) == 1
    assert [b''.join(conn.received) for conn in made] == [b''.join(expected)]


def test_a_failing_sink_is_reported_and_nothing_hangs(fake_connections, monkeypatch):
    made = fake_connections(first_fail_after=20000)
    monkeypatch.setattr(pg_load, 'BLOCK_BYTES', 4096)
    monkeypatch.setattr(pg_load, 'SPREAD_AFTER_BYTES', 1 << 30)  # one sink only: when it fails, nobody reads
    with pytest.raises(OpsError, match=r'loading public\.msgs failed: ERROR:  invalid input syntax for type uuid: '
                                       r'"x" \| CONTEXT:  COPY msgs, line 7'):
        fan_out(HEADER + COPY + b''.join(rows(50000)) + b'\\.\n' + TRAILER)
    assert made[0].finished == 'failed' and made[0].closed


def test_a_truncated_stream_abandons_every_copy(fake_connections, monkeypatch):
    """The archive's data ends without its marker while two sinks are busy: an error, no hang,
    and neither COPY is completed (nothing commits)."""
    made = fake_connections(first_pause=0.01)
    monkeypatch.setattr(pg_load, 'BLOCK_BYTES', 4096)
    monkeypatch.setattr(pg_load, 'SPREAD_AFTER_BYTES', 8192)
    params = dict(host='h', port=5432, user='u', database='d', connect_params={})
    load = pg_load.ParallelLoad(params, 'd__restore_x', '/b.dump', workers=2)
    reader = reader_of(HEADER + COPY + b''.join(rows(30000)), pieces=50)
    sinks = []
    try:
        assert reader.read_header()
        with pytest.raises(OpsError, match='ended without its end marker'):
            load.fan_out(reader, sinks, 'public.msgs')
        assert len(sinks) == 2
    finally:
        close(reader)
        for sink in sinks:
            sink.kill()
    assert len(made) == 2
    assert all(conn.finished == 'failed' and conn.closed for conn in made)
    assert not any(sink.thread.is_alive() for sink in sinks)


def test_describe_error_without_diagnostics():
    assert pg_load.describe_error(OSError('connection reset\nmore')) == 'connection reset'
