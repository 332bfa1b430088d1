"""Unit tests of module_utils.pg_archive on archives laid out here byte by byte (pg_dump's custom format).

The integration suite checks the reader against real pg_dump archives and pg_restore's own
output; these check the layout rules and every way an archive can be refused or damaged."""
import struct
import zlib

import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import pg_archive
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_archive import ArchiveError, CustomArchive

ROWS = b''.join(b'%d\tguest %d \\\\. \xc3\xa4\n' % (i, i) for i in range(5000)) + b'\\.\n\n\n'


def put_int(value):
    return bytes([1 if value < 0 else 0]) + struct.pack('<I', abs(value))


def put_str(value):
    if value is None:
        return put_int(-1)
    data = value.encode()
    return put_int(len(data)) + data


def entry(dump_id, desc, tag, offset=None):
    fields = [put_int(dump_id), put_int(1 if offset is not None else 0), put_str('1259'), put_str('16390'),
              put_str(tag), put_str(desc), put_int(3), put_str(''), put_str(''),
              put_str('COPY public.%s (id, name) FROM stdin;\n' % tag if offset is not None else ''),
              put_str('public'), put_str(''), put_str(''), put_str('hotelbot'), put_str('false'),
              put_str('215'), put_str(None)]
    flag, position = (2, offset) if offset is not None else (3, 0)
    return b''.join(fields) + bytes([flag]) + struct.pack('<Q', position)


def data_block(dump_id, payload, compression, chunk=4096):
    body = zlib.compress(payload, 6) if compression else payload
    out = bytes([1]) + put_int(dump_id)
    for start in range(0, len(body), chunk):
        out += put_int(len(body[start:start + chunk])) + body[start:start + chunk]
    return out + put_int(0)


def archive(tmp_path, payload=ROWS, compression=-1, version=(1, 14, 0), block=None, chunk=4096):
    """A custom-format archive: header, a TOC of two entries (one with data), the data block."""
    head = b'PGDMP' + bytes(version) + bytes([4, 8, 1]) + put_int(compression)
    head += b''.join(put_int(v) for v in (0, 15, 21, 22, 10, 126, 0))
    head += put_str('hotel_voice_bot') + put_str('15.18') + put_str('15.18') + put_int(2)
    probe = head + entry(215, 'TABLE', 'msgs') + entry(3364, 'TABLE DATA', 'msgs', offset=0)
    offset = len(probe)
    toc = head + entry(215, 'TABLE', 'msgs') + entry(3364, 'TABLE DATA', 'msgs', offset=offset)
    path = tmp_path / 'test.dump'
    path.write_bytes(toc + (block if block is not None else data_block(3364, payload, compression, chunk)))
    return str(path)


def read_all(data, size=1 << 16):
    out = bytearray()
    buf = bytearray(size)
    while True:
        count = data.readinto(buf)
        if not count:
            return bytes(out)
        out += buf[:count]


@pytest.fixture(params=['isal-if-installed', 'zlib'])
def inflate(request, monkeypatch):
    if request.param == 'zlib':
        monkeypatch.setattr(pg_archive, 'inflate_module', zlib)


@pytest.mark.parametrize('size', [7, 4096, 1 << 20])
def test_reads_the_data_block_inflated(tmp_path, inflate, size):
    reader = CustomArchive(archive(tmp_path))
    assert reader.offsets.keys() == {3364}
    data = reader.data(3364)
    try:
        assert read_all(data, size) == ROWS
        assert data.readinto(bytearray(10)) == 0
    finally:
        data.close()


def test_readinto_fills_the_buffer_across_chunks(tmp_path):
    data = CustomArchive(archive(tmp_path, chunk=100)).data(3364)
    try:
        buf = bytearray(50000)
        assert data.readinto(buf) == 50000 and bytes(buf) == ROWS[:50000]
    finally:
        data.close()


@pytest.mark.parametrize('change, message', [
    (lambda raw: b'PGDMX' + raw[5:], 'not a custom-format archive'),
    (lambda raw: raw[:5] + bytes([1, 15, 0]) + raw[8:], 'archive version 1.15.0'),
    (lambda raw: raw[:10] + bytes([3]) + raw[11:], 'not a custom-format archive'),   # directory/tar format byte
    (lambda raw: raw[:40], 'ends inside its header'),
])
def test_archives_this_reader_does_not_handle_are_refused(tmp_path, change, message):
    path = archive(tmp_path)
    with open(path, 'rb') as handle:
        raw = handle.read()
    with open(path, 'wb') as handle:
        handle.write(change(raw))
    with pytest.raises(ArchiveError, match=message):
        CustomArchive(path)


def test_no_data_offset_and_uncompressed_archives_are_left_to_pg_restore(tmp_path):
    reader = CustomArchive(archive(tmp_path))
    with pytest.raises(ArchiveError, match='no data offset recorded for entry 215'):
        reader.data(215)
    with pytest.raises(ArchiveError, match='not compressed'):
        CustomArchive(archive(tmp_path, compression=0)).data(3364)


def test_a_block_not_at_its_offset_is_refused(tmp_path):
    with pytest.raises(ArchiveError, match='not at its recorded offset'):
        CustomArchive(archive(tmp_path, block=data_block(9999, ROWS, -1))).data(3364)


@pytest.mark.parametrize('cut, message', [
    (lambda block: block[:len(block) // 2], 'ends inside a data block'),
    (lambda block: block[:6] + put_int(1 << 30) + block[11:], r'damaged data block \(a chunk of 1073741824 bytes\)'),
    (lambda block: block[:6] + put_int(3) + zlib.compress(ROWS)[:3] + put_int(0), 'compressed data ends early'),
    (lambda block: block[:6] + put_int(12) + b'\x78\x9c' + b'\xff' * 10 + put_int(0), 'could not uncompress data'),
])
def test_damaged_data_fails_while_reading(tmp_path, inflate, cut, message):
    data = CustomArchive(archive(tmp_path, block=cut(data_block(3364, ROWS, -1)))).data(3364)
    try:
        with pytest.raises(ArchiveError, match=message):
            read_all(data)
    finally:
        data.close()
