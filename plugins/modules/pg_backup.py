#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: pg_backup
short_description: Back up a PostgreSQL database with pg_dump, atomically, with a checksum and a manifest
version_added: 0.1.0
description:
  - Runs C(pg_dump) to the custom format by default (the directory format with parallel O(jobs), or
    plain SQL when asked). The format and compression are explicit options, never guessed from a
    file name.
  - The dump is written to a temporary name (C(<final>.partial-<pid>-<start time>-<random>), naming
    the module process that writes it) in the same directory, read back with C(pg_restore) (table of
    contents and every data block; for plain SQL, the closing line pg_dump writes when it finished)
    and fsynced (every file and the directory, for the directory format). If pg_dump fails or is
    killed, the temporary file is removed and the task fails naming the step and the last lines of
    its error output.
  - Beside the dump go a C(<final>.sha256) file in C(sha256sum) format (C(sha256sum -c) in the
    directory verifies it; for the directory format it lists every file of the dump) and a
    C(<final>.manifest.json) with the database, server and pg_dump versions, size, creation time,
    row counts of O(verify_tables), the table-of-contents entry count and what the dump leaves out.
    Both are written and fsynced under temporary names too; then the dump, the C(.sha256) and the
    manifest are renamed, the manifest last. The manifest is the commit point - O(keep),
    M(hotelbot.ops.pg_restore) and the rollback preflight take nothing without one for a backup.
  - A full disk (or quota) at any step fails with one line, C(no space left on <dir> writing <what>;
    nothing was kept), and leaves nothing final-named behind.
  - pg_dump dies with the module (Linux parent-death signal), so a killed task does not leave it
    holding a connection and a snapshot. A run removes the temporary files of backups of the same
    database whose writing process is gone (RV(removed_partials)); never one a live process writes.
  - What the dump holds is read from the dump itself (its table of contents; for plain SQL, pg_dump's
    comments). Tables whose data O(extra_args) leave out (C(--exclude-table-data), C(-T), C(-t), C(-n),
    C(-N) ...) are listed in the manifest (C(tables_without_data), with the selection options as
    C(data_selection)); their row counts are not claimed; M(hotelbot.ops.pg_restore) warns about them
    before it starts. A backup without any table data (C(--schema-only), C(--section=pre-data),
    everything excluded) is refused unless O(allow_no_data=true).
  - The row counts are taken in the transaction whose snapshot pg_dump uses
    (the C(pg_export_snapshot) function and C(--snapshot)), so they match the data in the dump exactly.
  - Connection settings reach pg_dump and pg_restore only through the environment (C(PGHOST),
    C(PGPASSWORD), ...), added to the module's own environment; the password is never on a
    command line. Any database name works (for example C(hotel "bot")).
  - Runbook erratum - C(pg_dump > file.sql) has no integrity check and C(supabase db dump) dumps
    the schema only unless asked for data; this module dumps schema and data and checks the result.
  - Every run that is not in check mode writes a new backup, so it always reports C(changed).
author:
  - hotelbot.ops maintainers (@hotelbot)
extends_documentation_fragment:
  - hotelbot.ops.postgres
attributes:
  check_mode:
    support: full
    description:
      - Connects, reads the database size, checks the free space where the backup would go and
        returns what would be written and pruned. Creates nothing, not even O(dest), and changes
        nothing on the server.
      - The space check is conservative - it compares with the size of the database on the
        server, and a compressed dump is usually much smaller.
  diff_mode:
    support: none
    description: A backup adds files; there is nothing to diff.
options:
  dest:
    description:
      - Directory for the backup; the name is generated as C(<database-slug>-<UTC timestamp>.<ext>)
        with C(ext) V(dump) (custom), V(dir) (directory format, a directory) or V(sql) (plain).
      - The slug is the database name when it is safe in a file name; otherwise unsafe characters
        are replaced and a short hash of the exact name is added.
      - Created (mode 0700) when missing.
      - Exactly one of O(dest) and O(path) is required.
    type: path
  path:
    description:
      - Explicit path of the dump. An existing backup there is never overwritten.
    type: path
  format:
    description: pg_dump output format.
    type: str
    choices: [custom, directory, plain]
    default: custom
  compress:
    description:
      - Compression. A level V(0)-V(9), or with pg_dump 16 or later a method spec such as
        V(zstd:3), V(lz4) or V(gzip:9).
      - Default is pg_dump's own (compressed for custom and directory format).
      - Not supported with O(format=plain).
    type: str
  jobs:
    description:
      - Dump this many tables in parallel (1 or more). Only with O(format=directory).
      - pg_dump opens a connection per job plus one; O(jobs) is capped at the server's free connections
        (C(max_connections) less the reserved and those in use), with a warning.
    type: int
  verify_tables:
    description:
      - Tables whose row counts go into the manifest (SQL syntax, C(schema.table); double-quote
        mixed case). A table that does not exist fails the task before anything is written.
    type: list
    elements: str
    default: []
  keep:
    description:
      - Keep the newest O(keep) backups of this database in the backup directory and remove older
        ones with their C(.sha256) and manifest. The backup just written is always kept, so 1 is the least.
      - Only backups with a manifest written by this module for this database are considered;
        other files are never touched.
    type: int
  pg_dump_path:
    description:
      - The pg_dump program to run. Default is O(bin_dir)C(/pg_dump), else C(pg_dump) on
        E(PATH), else C(/usr/lib/postgresql/<server major>/bin/pg_dump).
      - A pg_dump older than the server fails the task (pg_dump cannot dump a newer server).
      - pg_restore is looked for next to it, in O(bin_dir), on E(PATH), then in the server's
        version directory.
    type: path
  bin_dir:
    description: Directory holding pg_dump and pg_restore.
    type: path
  extra_args:
    description:
      - Further pg_dump arguments, appended (for example C(--exclude-table-data=audit_log)).
      - Options the module sets (file, format, jobs, compression, snapshot, database, connection)
        and anything carrying a password are refused.
      - Options that leave data out are recorded in the manifest; see the description.
    type: list
    elements: str
    default: []
  allow_no_data:
    description:
      - Write a backup that holds no table data at all (for example O(extra_args=[--schema-only])).
        Without it such a backup is refused, since restoring it would empty every table.
    type: bool
    default: false
seealso:
  - name: pg_dump
    description: The PostgreSQL documentation of pg_dump.
    link: https://www.postgresql.org/docs/current/app-pgdump.html
'''

EXAMPLES = r'''
- name: Back up the bot's database before a rollback, keep the last 7
  hotelbot.ops.pg_backup:
    host: db.internal
    user: hotelbot
    password: "{{ vault_pg_password }}"
    database: hotel_voice_bot
    dest: /var/backups/hotelbot
    verify_tables: [public.bot_messages]
    keep: 7
  register: backup

- name: Directory format, 4 parallel jobs, zstd (pg_dump 16+)
  hotelbot.ops.pg_backup:
    host: db.internal
    user: hotelbot
    passfile: /etc/hotelbot/pgpass
    database: hotel_voice_bot
    dest: /var/backups/hotelbot
    format: directory
    jobs: 4
    compress: "zstd:3"

- name: Plain SQL to an explicit file
  hotelbot.ops.pg_backup:
    database: hotel_voice_bot
    path: /tmp/hotel_voice_bot.sql
    format: plain

- name: Is there room for a backup? (creates nothing)
  hotelbot.ops.pg_backup:
    database: hotel_voice_bot
    dest: /var/backups/hotelbot
  check_mode: true
'''

RETURN = r'''
path:
  description: The backup written.
  returned: success and not check mode
  type: str
  sample: /var/backups/hotelbot/hotel_voice_bot-20261122T211500Z.dump
sha256:
  description: SHA-256 of the dump file; for the directory format, of the C(.sha256) listing of its files.
  returned: success and not check mode
  type: str
size_bytes:
  description: Size of the dump (all files, for the directory format).
  returned: success and not check mode
  type: int
format:
  description: The format written (or that would be).
  returned: success
  type: str
  sample: custom
manifest:
  description: The manifest written beside the dump.
  returned: success and not check mode
  type: dict
  sample:
    tool: hotelbot.ops.pg_backup
    manifest_version: 1
    file: hotel_voice_bot-20261122T211500Z.dump
    format: custom
    database: hotel_voice_bot
    server_version: "15.18 (Debian 15.18-0+deb12u1)"
    pg_dump_version: "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    size_bytes: 41231
    sha256: 9f2c...
    created_at: "2026-11-22T21:15:00.123456+00:00"
    row_counts: {public.bot_messages: 1000}
    toc_entries: 12
    toc_note: entries of pg_restore --list; every data block was read back by pg_restore
    extra_args: [--exclude-table-data=public.audit_log]
    data_selection: {exclude_table_data: [public.audit_log]}
    holds_data: true
    tables_without_data: [public.audit_log]
manifest_path:
  description: Path of the manifest.
  returned: success and not check mode
  type: str
sha256_path:
  description: Path of the C(.sha256) file.
  returned: success and not check mode
  type: str
pruned:
  description: Backups removed by O(keep) (with their sidecars).
  returned: success and not check mode
  type: list
  elements: str
removed_partials:
  description: Temporary files of earlier runs for this database whose writing process was gone, removed.
  returned: success and not check mode
  type: list
  elements: str
jobs:
  description: The O(jobs) pg_dump ran with (capped at the server's free connections).
  returned: success and not check mode
  type: int
dump_seconds:
  description: Seconds pg_dump ran.
  returned: success and not check mode
  type: float
command:
  description: The pg_dump argv (it holds no connection settings and no password).
  returned: success
  type: list
  elements: str
would_write:
  description: Check mode - the path a run would write.
  returned: check mode
  type: str
would_prune:
  description: Check mode - backups a run would remove because of O(keep).
  returned: check mode
  type: list
  elements: str
free_bytes:
  description: Check mode - free bytes where the backup would go.
  returned: check mode
  type: int
database_size_bytes:
  description: Check mode - C(pg_database_size) of the database.
  returned: check mode
  type: int
elapsed_s:
  description: Seconds the module took.
  returned: always
  type: float
'''

from ansible_collections.hotelbot.ops.plugins.module_utils.common import run
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_backup import FORMATS, backup_task
from ansible_collections.hotelbot.ops.plugins.module_utils.postgres import postgres_argument_spec

SPEC = dict(
    argument_spec=dict(
        postgres_argument_spec(),
        dest=dict(type='path'),
        path=dict(type='path'),
        format=dict(type='str', default='custom', choices=list(FORMATS)),
        compress=dict(type='str'),
        jobs=dict(type='int', context=dict(min=1)),
        verify_tables=dict(type='list', elements='str', default=[]),
        # at least the backup just written is kept
        keep=dict(type='int', context=dict(min=1)),
        pg_dump_path=dict(type='path'),
        bin_dir=dict(type='path'),
        extra_args=dict(type='list', elements='str', default=[]),
        allow_no_data=dict(type='bool', default=False),
    ),
    mutually_exclusive=[('dest', 'path')],
    required_one_of=[('dest', 'path')],
)


def main():
    run(SPEC, backup_task)


if __name__ == '__main__':
    main()
