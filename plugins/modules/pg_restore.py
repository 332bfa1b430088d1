#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: pg_restore
short_description: Restore a PostgreSQL backup without ever writing to the live database
version_added: 0.1.0
description:
  - Refuses to start unless the backup's sha256 matches its C(.sha256) sidecar, its manifest reads
    and names this database, and its table of contents reads (custom/directory format) or it ends
    with pg_dump's completion line (plain SQL).
  - Restores into a scratch database beside the live one (C(<db>__restore_<stamp>)). Custom and
    directory archives are loaded in parallel (see O(jobs)) - each table's rows, read straight from
    a gzip-compressed custom archive (by C(pg_restore) for other archives), are split over several
    C(COPY) connections, then indexes and
    constraints are built with C(pg_restore --jobs) - or, with O(jobs=1), by C(pg_restore
    --exit-on-error --single-transaction). Plain SQL runs with C(psql) and C(ON_ERROR_STOP) in one
    transaction.
  - Validates the copy - row counts against the manifest and any O(verify_queries) - runs C(ANALYZE)
    on it, and only then swaps by rename - new connections blocked, sessions on the live database
    ended, live renamed to C(<db>__pre_restore_<stamp>), scratch renamed to live.
  - The old database is kept (O(keep_previous) copies), so the swap can be undone by renaming back.
    Any failure before the swap drops the scratch database and leaves the live one untouched; the
    message names the step.
  - A backup whose manifest says it leaves table data out (M(hotelbot.ops.pg_backup) with
    C(--exclude-table-data) and the like) is restored with a warning, before anything starts, naming
    the tables that will be empty (RV(tables_without_data)); one without any table data is refused
    unless O(allow_no_data=true).
  - One restore per database at a time (an advisory lock); a second one is refused. A scratch
    database that never validated, found while holding that lock, is what a killed or failed run
    left behind; it is dropped (RV(dropped_leftovers)). Phase V(swap) only swaps in a copy that validated.
  - The connecting role needs C(CREATEDB) and must own the database (or be superuser) to rename it
    and end its sessions.
author:
  - hotelbot.ops maintainers (@hotelbot)
requirements:
  - isal (optional; inflates a custom archive's table data about twice as fast as zlib)
extends_documentation_fragment:
  - hotelbot.ops.postgres
attributes:
  check_mode:
    support: full
    description: Verifies the backup and the server, takes the lock, and says what it would do; changes nothing.
  diff_mode:
    support: none
    description: The result names the databases before and after instead.
options:
  src:
    description:
      - The backup - a custom-format file, a directory-format directory or a plain SQL file - with
        C(<src>.sha256) and C(<src>.manifest.json) beside it (as M(hotelbot.ops.pg_backup) writes them).
    type: path
    required: true
  confirm:
    description: Required to replace the live database (the old one is kept).
    type: bool
    default: false
  jobs:
    description:
      - Connections for restoring a custom or directory archive. With 2 or more, a table's data goes
        through up to O(jobs) C(COPY) connections at once (a second one starts when the table has sent
        8 MiB and every connection is busy, so small tables use one; each block of rows goes to whichever
        connection is free), and indexes and constraints are built O(jobs) at a time, the longest first
        (a plain primary key or unique constraint as its unique index, attached afterwards, so it
        does not wait for the table's other builds). The load
        is not one transaction, which is safe because it goes into the scratch database, which is dropped
        if anything fails.
      - 1 (the least) restores with C(pg_restore --single-transaction).
      - More jobs than the server has cores only adds contention.
      - Capped at the server's free connections (C(max_connections) less the reserved and those in use,
        one kept for pg_restore itself), with a warning.
    type: int
    default: 2
  verify_queries:
    description: SQL queries run on the restored copy before the swap; each must return C(true) in its first column.
    type: list
    elements: str
    default: []
  keep_previous:
    description: How many C(<db>__pre_restore_*) copies to keep (the newest, 0 or more); older ones are dropped after a successful swap.
    type: int
    default: 1
  allow_other_database:
    description: Restore a backup whose manifest names another database.
    type: bool
    default: false
  maintenance_database:
    description: Database to connect to for CREATE/RENAME/DROP DATABASE.
    type: str
    default: postgres
  bin_dir:
    description: Directory of C(pg_restore) and C(psql); default is the PATH.
    type: path
  phase:
    description:
      - V(all) verifies, restores, validates and swaps in one go.
      - V(prepare) stops after validation and leaves the scratch database (returned as
        RV(scratch_database)); the application keeps serving from the live database meanwhile.
      - V(swap) swaps a prepared scratch database in - the only step during which the application
        needs to be stopped. Needs O(scratch_database) and O(confirm=true).
    type: str
    choices: [all, prepare, swap]
    default: all
  scratch_database:
    description: The scratch database phase V(prepare) returned, for phase V(swap).
    type: str
  maintenance_work_mem:
    description:
      - C(maintenance_work_mem) for the restore session into the scratch database (index builds);
        the restore also runs with C(synchronous_commit=off), since nothing reads the copy yet.
      - A PostgreSQL size - V(64MB), V(1GB), or an integer number of kB; anything else fails before
        anything is touched.
    type: str
    default: 512MB
  allow_no_data:
    description: Restore a backup whose manifest says it holds no table data (every table would be empty).
    type: bool
    default: false
seealso:
  - module: hotelbot.ops.pg_backup
  - module: hotelbot.ops.pg_check
'''

EXAMPLES = r'''
- name: Restore last night's backup over the live database (kept as hotel_voice_bot__pre_restore_<stamp>)
  hotelbot.ops.pg_restore:
    host: db.internal
    user: hotelbot_admin
    password: "{{ vault_db_admin_password }}"
    database: hotel_voice_bot
    src: /var/backups/hotelbot/hotel_voice_bot-20261122T030000Z.dump
    confirm: true
    verify_queries:
      - SELECT count(*) > 0 FROM public.bot_messages
'''

RETURN = r'''
database:
  description: The live database.
  returned: always
  type: str
previous_database:
  description: What the live database was renamed to (kept), or would be in check mode.
  returned: when the backup verified
  type: str
scratch_database:
  description: The scratch database the backup was restored into (left in place by phase V(prepare)).
  returned: when the backup verified
  type: str
format:
  description: The backup's format (custom, directory, plain).
  returned: when the backup verified
  type: str
sha256:
  description: The backup's verified checksum.
  returned: when the backup verified
  type: str
toc_entries:
  description: Entries in the backup's table of contents (null for plain SQL).
  returned: when the backup verified
  type: int
expected_rows:
  description: Row counts the manifest records (only of tables whose data the backup holds).
  returned: when the backup verified
  type: dict
tables_without_data:
  description: Tables whose data the backup leaves out (empty after the restore), as its manifest records them.
  returned: when the backup verified
  type: list
  elements: str
load:
  description:
    - How the data went in - C(method) (V(parallel copy), V(pg_restore --single-transaction) or
      V(psql --single-transaction)), C(jobs), and for the parallel copy one entry per table with its C(mode)
      (V(copy), or V(pg_restore) for table data that is not a COPY), the C(connections) it used, and for a
      COPY where its rows were C(read) from (V(archive) - the module reads and inflates a custom archive's data
      itself, which costs half the CPU - or V(pg_restore) for directory, uncompressed or newer-version archives).
    - For the parallel copy, C(indexes) counts the index and constraint builds the module ran itself
      (C(built); those of partitioned tables and partitions are left to C(pg_restore --jobs)) and how many
      of them were key constraints built as a unique index (C(as_unique_index)).
  returned: after a restore into the scratch database
  type: dict
  sample: {method: parallel copy, jobs: 2, tables: [{table: public.bot_messages, mode: copy, connections: 2, read: archive}],
           indexes: {built: 4, as_unique_index: 2}}
row_counts:
  description: Row counts found in the restored copy (equal to RV(expected_rows), or the restore failed).
  returned: success
  type: dict
steps:
  description: Each step done (verify, restore, validate, analyze, swap) with its seconds.
  returned: always
  type: list
  elements: dict
dropped_leftovers:
  description: Scratch databases of this database left by an earlier run that never validated; dropped
    (in check mode, would be dropped).
  returned: when the backup verified
  type: list
  elements: str
dropped_previous:
  description: Older C(__pre_restore_) copies dropped by O(keep_previous).
  returned: success
  type: list
  elements: str
elapsed_s:
  description: Seconds the module took.
  returned: always
  type: float
'''

from ansible_collections.hotelbot.ops.plugins.module_utils.common import run
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_restore import PHASES, restore_task
from ansible_collections.hotelbot.ops.plugins.module_utils.postgres import postgres_argument_spec

SPEC = dict(
    argument_spec=dict(
        postgres_argument_spec(),
        src=dict(type='path', required=True),
        confirm=dict(type='bool', default=False),
        jobs=dict(type='int', default=2, context=dict(min=1)),
        verify_queries=dict(type='list', elements='str', default=[]),
        keep_previous=dict(type='int', default=1, context=dict(min=0)),
        allow_other_database=dict(type='bool', default=False),
        maintenance_database=dict(type='str', default='postgres'),
        bin_dir=dict(type='path'),
        phase=dict(type='str', choices=list(PHASES), default='all'),
        scratch_database=dict(type='str'),
        maintenance_work_mem=dict(type='str', default='512MB'),
        allow_no_data=dict(type='bool', default=False),
    ),
    required_if=[('phase', 'swap', ['scratch_database'])],
)


def main():
    run(SPEC, restore_task)


if __name__ == '__main__':
    main()
