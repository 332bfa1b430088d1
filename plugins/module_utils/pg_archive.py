# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a table's COPY data straight out of a pg_dump custom-format archive.

The parallel load used to get each table's rows from `pg_restore -f -`: pg_restore inflates
the data with zlib and writes it into a pipe 4 KiB at a time, and the module reads it back.
For a 744 MiB table that was 2.6 CPU seconds in pg_restore and 0.3 in the module, on a
machine where the restore is CPU-bound. Reading the archive here instead - the table of
contents once, then the table's data block at the offset pg_dump recorded - skips the pipe,
and with ISA-L's inflate (the `isal` package, when installed) the inflating costs half
of what zlib's does.

Only what this code has been checked against is read: archive version 1.14 (pg_dump 12 to
15), gzip-compressed, an entry whose data offset is recorded (pg_dump wrote to a file).
Anything else - a newer archive version, no compression, a data block that is not where the
TOC says - gives ArchiveError before any data, and the caller uses pg_restore for that
table as before. pg_restore still provides each table's COPY statement and session settings.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io
import zlib

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError

try:
    from isal import isal_zlib as inflate_module  # the same zlib streams, inflated about twice as fast
except ImportError:
    inflate_module = zlib

MAGIC = b'PGDMP'
SUPPORTED_VERSIONS = ((1, 14, 0),)
FORMAT_CUSTOM = 1
BLOCK_DATA = 1
OFFSET_SET = 2
# A TOC entry after its dump id (version 1.14): has data, tableoid, oid, tag, desc, section,
# defn, drop statement, copy statement, namespace, tablespace, table access method, owner,
# with oids (always "false").
ENTRY_FIELDS = ('int', 'str', 'str', 'str', 'str', 'int', 'str', 'str', 'str', 'str', 'str', 'str', 'str', 'str')
# pg_dump writes compressed data in chunks of a few KiB; a length beyond this is damage.
MAX_CHUNK_BYTES = 64 << 20


class ArchiveError(OpsError):
    """The archive is not one this reader handles (before any data: restore that table with
    pg_restore), or its data is damaged (while reading: the restore fails)."""


class _Cursor:
    """pg_dump's archive encoding: sign byte + little-endian ints, length-prefixed strings."""

    def __init__(self, handle, int_size=4, offset_size=8):
        self.handle = handle
        self.int_size = int_size
        self.offset_size = offset_size

    def byte(self):
        value = self.handle.read(1)
        if not value:
            raise ArchiveError('the archive ends inside its header')
        return value[0]

    def bytes(self, count):
        value = self.handle.read(count)
        if len(value) != count:
            raise ArchiveError('the archive ends inside its header')
        return value

    def int(self):
        sign = self.byte()
        value = int.from_bytes(self.bytes(self.int_size), 'little')
        return -value if sign else value

    def str(self):
        length = self.int()
        if length < 0:
            return None
        return self.bytes(length).decode('utf-8', 'replace')

    def offset(self):
        flag = self.byte()
        return flag, int.from_bytes(self.bytes(self.offset_size), 'little')


class CustomArchive:
    """The table of contents of a custom-format archive: data offsets by dump id."""

    def __init__(self, path):
        self.path = path
        self.offsets = {}
        with open(path, 'rb') as handle:
            cursor = _Cursor(handle)
            if handle.read(5) != MAGIC:
                raise ArchiveError('not a custom-format archive')
            version = (cursor.byte(), cursor.byte(), cursor.byte())
            if version not in SUPPORTED_VERSIONS:
                raise ArchiveError('archive version %d.%d.%d' % version)
            cursor.int_size = self.int_size = cursor.byte()
            cursor.offset_size = self.offset_size = cursor.byte()
            if cursor.byte() != FORMAT_CUSTOM:
                raise ArchiveError('not a custom-format archive')
            self.compression = cursor.int()
            for _field in range(7):  # creation time: sec, min, hour, day, month, year, isdst
                cursor.int()
            for _field in range(3):  # database name, server version, pg_dump version
                cursor.str()
            for _entry in range(cursor.int()):
                self._read_entry(cursor)

    def _read_entry(self, cursor):
        dump_id = cursor.int()
        for kind in ENTRY_FIELDS:
            getattr(cursor, kind)()
        while cursor.str() is not None:  # dependencies, ended by a NULL string
            pass
        flag, position = cursor.offset()
        if flag == OFFSET_SET:
            self.offsets[dump_id] = position

    def data(self, dump_id):
        """A raw file object reading entry `dump_id`'s data, inflated."""
        if dump_id not in self.offsets:
            raise ArchiveError('no data offset recorded for entry %d' % dump_id)
        if self.compression == 0:
            # uncompressed data is stored a row per chunk: pg_restore passes it on faster
            raise ArchiveError('the archive is not compressed')
        return EntryData(self, dump_id)


class EntryData(io.RawIOBase):
    """The inflated bytes of one data block: chunks of (length, bytes) ending with length 0."""

    def __init__(self, archive, dump_id):
        super(EntryData, self).__init__()
        self.handle = open(archive.path, 'rb')
        self.cursor = _Cursor(self.handle, archive.int_size, archive.offset_size)
        self.handle.seek(archive.offsets[dump_id])
        if self.cursor.byte() != BLOCK_DATA or self.cursor.int() != dump_id:
            self.handle.close()
            raise ArchiveError('the data of entry %d is not at its recorded offset' % dump_id)
        self.inflater = inflate_module.decompressobj()  # data() hands out compressed entries only
        self.pending = memoryview(b'')
        self.ended = False

    def readable(self):
        return True

    def _next_chunk(self):
        length = self.cursor.int()
        if length == 0:
            if not self.inflater.eof:
                raise ArchiveError('the compressed data ends early')
            self.ended = True
            return b''
        if not 0 < length <= MAX_CHUNK_BYTES:
            raise ArchiveError('damaged data block (a chunk of %d bytes)' % length)
        chunk = self.handle.read(length)
        if len(chunk) != length:
            raise ArchiveError('the archive ends inside a data block (truncated?)')
        try:
            return self.inflater.decompress(chunk)
        except (zlib.error, getattr(inflate_module, 'error', zlib.error)) as err:
            raise ArchiveError('could not uncompress data: %s' % err)

    def readinto(self, buffer):
        """Fill `buffer` (chunks are a few KiB; fewer, bigger reads keep the caller's loop short)."""
        filled = 0
        while filled < len(buffer):
            if not len(self.pending):
                if self.ended:
                    break
                self.pending = memoryview(self._next_chunk())
                continue
            count = min(len(buffer) - filled, len(self.pending))
            buffer[filled:filled + count] = self.pending[:count]
            self.pending = self.pending[count:]
            filled += count
        return filled

    def close(self):
        self.handle.close()
        super(EntryData, self).close()
