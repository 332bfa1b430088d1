#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: release_lock
short_description: One release operation per service at a time - a lease in DynamoDB or PostgreSQL
version_added: 0.1.0
description:
  - Takes or releases a named lease (for example V(ecs/hotel-voice-bot/hotel-voice-bot-service)) kept as one
    row in a PostgreSQL table or one item in a DynamoDB table (O(backend)), so that a second hot-patch or
    rollback of the same service is refused while the first runs.
  - B(Backends.) V(postgres) (the default here; the sections below describe its SQL) needs psycopg 3 and the
    database. V(dynamodb) is the ECS platform's own primitive, so an application rollback needs neither. A
    free lease is taken with one C(PutItem) whose C(ConditionExpression) lets only a missing or expired item
    through, and given back with one C(DeleteItem) conditional on its owner; a refusal returns the lease in
    the way (C(ReturnValuesOnConditionCheckFailure)), so nothing is read first. The same owner's renewal
    names the lease as read (owner and expiry), the heartbeat renews with a conditional C(UpdateItem), and a
    break is one C(TransactWriteItems) (the delete and its audit item C(#event/<id>) in the
    same table, together or not at all). Both behave the same - refusals naming the holder, O(wait),
    O(break_owner), the heartbeat, check mode - except that DynamoDB judges expiry by the clock of the machine
    running the module (keep it on NTP) and never creates its table (see the notes).
    V(fly) is the Fly platform's own primitive - the lock C(fly/<app>) is the Machine lease of the app's oldest
    Machine (its description, JSON, names the owner), taken and refreshed with C(POST .../lease) and its nonce,
    released with C(DELETE); a break records C(hotelbot.ops/lock-broken) in that Machine's metadata first.
    Kubernetes C(coordination.k8s.io) Leases are the next backend.
  - A lease has an O(owner), a O(purpose), when it was acquired and when it expires (O(ttl)). Another owner's
    lease is refused with a message naming its owner, purpose, since when it is held and when it expires; an
    expired lease is taken over (reported in RV(took_over)).
  - Taking the lease is a single C(INSERT ... ON CONFLICT DO UPDATE) statement whose C(WHERE) only lets an
    expired lease or the same owner's through, so of any number of concurrent acquires of the same name
    exactly one succeeds. Expiry is judged by the database server's clock (C(statement_timestamp)), never by
    the clocks of the machines running Ansible.
  - The table (O(schema).O(table)) is created on first use with C(CREATE TABLE IF NOT EXISTS), serialised by
    an advisory lock so concurrent first uses do not collide. The schema must exist.
  - Acquiring a lease the same owner already holds renews it (its expiry moves to now + O(ttl)), reporting
    RV(renewed=true) and C(changed=true) because the row changed; with O(renew=false) it is left as it is and
    nothing changes.
  - O(state=released) deletes the lease when O(owner) holds it. A lease held by another owner is refused
    unless O(break_owner) names that owner (or O(force=true)); releasing a lease nobody holds changes nothing.
    Releasing another owner's lease is recorded in the events table O(schema).O(table)C(_events) (name,
    event, the owner broken, its purpose and expiry, C(broken_by), C(at)), in the same statement as the delete.
  - B(Heartbeat.) After a successful acquire (not in check mode) the module starts a detached renewer
    process that moves the expiry to now + O(ttl) every O(ttl)/3 with one C(UPDATE ... WHERE name = ... AND
    owner = ... AND expires_at > statement_timestamp()), on a short connection of its own. It stops when the
    lease is no longer this owner's (released, broken, lapsed) or when the B(holder) is gone - the
    C(ansible-playbook) (or C(ansible)) process running the task, named by the action plugin and checked by
    pid and start time. So a live run keeps a short lease, and a killed run's lease lapses within one O(ttl).
  - The holder is only visible where the task runs on the controller (a C(local) connection, as in the
    collection's inventories). Elsewhere there is no heartbeat, RV(heartbeat) is null and the message says
    so; the lease then lasts O(ttl), which must be longer than the whole operation.
author:
  - hotelbot.ops maintainers (@hotelbot)
extends_documentation_fragment:
  - hotelbot.ops.postgres
  - hotelbot.ops.aws
  - hotelbot.ops.fly
attributes:
  check_mode:
    support: full
    description:
      - Reports what would happen (acquire, renew, take over, be refused, release) from the current lease,
        on a read-only session. Writes nothing and does not create the table (the result says it would).
  diff_mode:
    support: full
    description: The lease holder before and after.
options:
  name:
    description:
      - The lock name; one release operation per name at a time. Use one name per service, for example
        V(ecs/<cluster>/<service>).
    type: str
    required: true
  state:
    description:
      - V(acquired) takes the lease (or renews it when O(owner) already holds it).
      - V(released) gives it back.
    type: str
    choices: [acquired, released]
    default: acquired
  backend:
    description:
      - Where the lease lives. V(postgres) - a table in O(database) (the PostgreSQL options). V(dynamodb) - the
        DynamoDB table O(table) (the AWS options, the same as the ECS modules'; the module is in the action group
        C(hotelbot.ops.aws) too).
      - V(fly) - a Fly Machine lease on the app O(name) names (C(fly/<app>)), with the Fly options (the module is in
        the action group C(hotelbot.ops.fly) too).
      - The playbooks take it from C(hotelbot_lock_backend), by default V(dynamodb) on ECS.
    type: str
    choices: [postgres, dynamodb, fly]
    default: postgres
  database:
    description:
      - The PostgreSQL database of the lease table, or a connection string (see the PostgreSQL options).
      - Required with O(backend=postgres); the other backends need no database (and do not use it).
    type: str
    required: false
    aliases: [db, login_db]
  connect_timeout:
    description: Seconds to wait for a connection to PostgreSQL or to the DynamoDB endpoint.
    type: int
    default: 10
  owner:
    description:
      - Who holds the lease. Required, except for O(state=released) with O(force=true).
      - Each Ansible task runs in a new process, so the module cannot make up an identity that stays the same
        for a whole run. Set a value unique to the run once at the start of the play and pass it to every
        C(release_lock) task of that run, for example user, host and start time with
        M(ansible.builtin.set_fact) as in the examples, or the CI job id. Do not put a template using the
        current time straight into a play variable; it would be evaluated again, differently, on every use.
      - Two runs with the same owner share the lease; that is what renewal is, and it is why the owner must
        be unique per run.
    type: str
  purpose:
    description: Free text saying what the lease is for, shown to whoever is refused, for example V(hotpatch CHG-123).
    type: str
    default: ''
  ttl:
    description:
      - How long the lease lasts from now (on acquire and on renew). Seconds as a number, or a duration such
        as V(90s), V(30m), V(1h) or V(1h30m) (units s, m, h, d).
      - With the heartbeat (see the description) this is how long a lease outlives the last sign of life of
        its holder; the lease is renewed every O(ttl)/3 while the holder runs.
      - Without a heartbeat (RV(heartbeat) null), choose it longer than the whole operation; a lease that
        expires mid-operation can be taken over.
    type: raw
    default: 90s
  wait:
    description:
      - How long to wait for another owner's lease to be released or to expire, polling with backoff
        (0.5 s doubling up to 5 s). Same format as O(ttl).
      - V(0) refuses at once.
    type: raw
    default: 0
  renew:
    description:
      - When O(owner) already holds an unexpired lease, V(true) moves its expiry to now + O(ttl) (and updates
        O(purpose)), V(false) leaves it as it is (C(changed=false)).
    type: bool
    default: true
  fail_when_held:
    description:
      - Fail when another owner holds the lease. With V(false) the task succeeds with RV(acquired=false) and
        C(changed=false), so a play can skip its work quietly when another run is already acting.
    type: bool
    default: true
  force:
    description:
      - With O(state=released), delete the lease whoever holds it. Only for a lease whose run is known to be
        dead. Not allowed with O(state=acquired) (an unexpired lease is never taken over). Recorded in the
        events table when the lease was another owner's. Prefer O(break_owner).
    type: bool
    default: false
  break_owner:
    description:
      - Break the lease of this other owner (a run known to be dead), exactly as the refusal names it.
        Refused, changing nothing, when the lease is held by anyone else; nothing to do when nobody holds it.
        O(owner) is recorded as C(broken_by) in the events table.
      - With O(state=released) that is all; with O(state=acquired) the lock is then taken for O(owner), so a
        re-run after a killed one breaks and takes the lock in one task (C(broken) says what was broken).
      - The playbooks expose it as C(-e release_break_lock=<owner>).
      - Mutually exclusive with O(force).
    type: str
  _holder:
    description:
      - Internal, set by the C(release_lock) action plugin on a local connection - do not set it. The process
        the heartbeat follows, as C(pid) and C(start) (its start time from C(/proc/<pid>/stat)).
    type: dict
  schema:
    description: Schema of the lease table, taken literally (not SQL-parsed, no quoting needed). Must exist.
      Not used with O(backend=dynamodb).
    type: str
    default: public
  table:
    description:
      - Name of the lease table, taken literally (not SQL-parsed, no quoting needed); with O(backend=dynamodb),
        the DynamoDB table (string hash key C(name)), which must exist.
      - The playbooks take it from C(hotelbot_lock_table).
    type: str
    default: hotelbot_release_locks
notes:
  - With O(backend=dynamodb) create the table once -
    C(aws dynamodb create-table --table-name hotelbot_release_locks --attribute-definitions AttributeName=name,AttributeType=S
    --key-schema AttributeName=name,KeyType=HASH --billing-mode PAY_PER_REQUEST) - and give the role running the
    playbooks C(dynamodb:GetItem), C(dynamodb:PutItem), C(dynamodb:UpdateItem) and C(dynamodb:DeleteItem) on it
    (C(TransactWriteItems) is authorised by the C(PutItem) and C(DeleteItem) it holds). A missing table or
    permission fails with a message naming what to do.
  - With O(backend=postgres) the role connecting needs C(SELECT), C(INSERT), C(UPDATE) and C(DELETE) on the table, and C(CREATE) on the
    schema the first time (or create the table ahead as its owner; the statement is in the collection's
    C(docs/release_lock.md)).
  - Release in an C(always) section of a C(block) so that a failed run gives the lease back; a run that dies
    without releasing holds it until O(ttl) expires (at most one O(ttl) after its holder died, with the heartbeat).
  - The renewer is a fork of the module process, not a new program, so the connection settings never appear on
    a command line, in an environment or in a file. It sleeps between renewals and costs one short connection
    per renewal.
  - The session sets C(lock_timeout) to 30 seconds, so a stuck session holding the lease row makes the task
    fail instead of hanging.
seealso:
  - name: INSERT ... ON CONFLICT
    description: The upsert that decides which concurrent acquire wins.
    link: https://www.postgresql.org/docs/current/sql-insert.html#SQL-ON-CONFLICT
'''

EXAMPLES = r'''
- name: One identity for this run, evaluated once
  ansible.builtin.set_fact:
    release_owner: "{{ lookup('env', 'USER') }}@{{ inventory_hostname }}/{{ now(utc=true).strftime('%Y%m%dT%H%M%S') }}"

- name: Hot-patch the bot, one release operation at a time
  module_defaults:
    group/hotelbot.ops.postgres:
      host: db.internal
      user: hotelbot
      passfile: ~/.pgpass
      database: hotel_voice_bot
  block:
    - name: Take the release lock of the service
      hotelbot.ops.release_lock:
        name: ecs/hotel-voice-bot/hotel-voice-bot-service
        owner: "{{ release_owner }}"
        purpose: hotpatch CHG-123
        ttl: 45m
        wait: 2m

    - name: Deploy
      ansible.builtin.debug:
        msg: the actual work goes here
  always:
    - name: Give the release lock back, on success and on failure
      hotelbot.ops.release_lock:
        name: ecs/hotel-voice-bot/hotel-voice-bot-service
        owner: "{{ release_owner }}"
        state: released

- name: An automatic rollback that stands aside when another run is acting
  hotelbot.ops.release_lock:
    database: hotel_voice_bot
    name: ecs/hotel-voice-bot/hotel-voice-bot-service
    owner: "{{ release_owner }}"
    purpose: auto rollback
    fail_when_held: false
  register: lock

- name: Stop here when someone else holds it
  ansible.builtin.meta: end_host
  when: not lock.acquired

- name: The lock in DynamoDB (ECS), no database involved; AWS options as for the ECS modules
  hotelbot.ops.release_lock:
    backend: dynamodb
    table: hotelbot_release_locks
    region: eu-central-1
    name: ecs/hotel-voice-bot/hotel-voice-bot-service
    owner: "{{ release_owner }}"
    purpose: rollback

# Break a dead run's lease where the playbooks keep it: the same backend, table and database
# (hotelbot_lock_backend, hotelbot_lock_table, hotelbot_lock_database); docs/locking.md has the command.
- name: Break the lease of a run known to be dead (recorded in the events table)
  hotelbot.ops.release_lock:
    backend: dynamodb
    region: eu-central-1
    name: ecs/hotel-voice-bot/hotel-voice-bot-service
    owner: "{{ release_owner }}"
    state: released
    break_owner: alice@ci/20261122T2201
'''

RETURN = r'''
msg:
  description: One line saying what happened (or would happen in check mode), naming the holder.
  returned: always
  type: str
  sample: "acquired release lock 'ecs/hotel-voice-bot/hotel-voice-bot-service' for alice@ci/20261122T2201, expires in 1m30s;
    renewed every 30s while holder pid 4242 runs"
name:
  description: The lock name.
  returned: after validation
  type: str
backend:
  description: Where the lease is, O(backend) (so that a play can release it where it acquired it).
  returned: after validation
  type: str
  sample: dynamodb
table:
  description: The lease table, as C(schema.table) (O(backend=postgres)) or the DynamoDB table's name.
  returned: after validation
  type: str
  sample: public.hotelbot_release_locks
table_created:
  description: This task created the lease table (in check mode, it would).
  returned: when O(state=acquired)
  type: bool
acquired:
  description: O(owner) holds the lease now (in check mode, would hold it).
  returned: when O(state=acquired)
  type: bool
renewed:
  description: O(owner) already held the lease and its expiry was moved (in check mode, would be).
  returned: when O(state=acquired)
  type: bool
took_over:
  description: The expired lease of another owner that was taken over (owner, purpose, acquired_at, expires_at,
    expired, remaining_s), else null.
  returned: when O(state=acquired)
  type: dict
holder:
  description:
    - The lease holder - after acquiring, O(owner); when refused, the other owner; for O(state=released), the
      lease as it was before. C(owner), C(purpose), C(acquired_at) and C(expires_at) (UTC, ISO 8601),
      C(expired), and C(remaining_s) (seconds until expiry by the server's clock, negative once expired).
    - null when nobody held the lease on release.
  returned: always after connecting
  type: dict
  sample:
    owner: alice@ci/20261122T2201
    purpose: hotpatch CHG-123
    acquired_at: "2026-11-22T22:01:02Z"
    expires_at: "2026-11-22T22:31:02Z"
    expired: false
    remaining_s: 1799.98
lock:
  description: The whole lease row as in RV(holder) plus C(name), C(renewed_at), C(host) and C(os_user) (where
    the module ran), C(db_user) (the role) and C(client_addr) (as the server saw it). null when there is none
    (or nothing was written in check mode).
  returned: always after connecting
  type: dict
released:
  description: The lease was deleted (in check mode, would be).
  returned: when O(state=released)
  type: bool
waited_s:
  description: Seconds spent waiting for another owner's lease (see O(wait)).
  returned: when O(state=acquired)
  type: float
waited_for:
  description: The other owner's lease this task waited for before acquiring (as in RV(holder)), else null.
  returned: when O(state=acquired)
  type: dict
heartbeat:
  description:
    - The renewer started for the lease - C(pid) (the renewer process), C(every_s) (seconds between renewals)
      and C(holder_pid) (the process whose life it follows).
    - null in check mode, when nothing was acquired, and when there is no heartbeat (the message says why).
  returned: when O(state=acquired)
  type: dict
  sample:
    pid: 5151
    every_s: 30.0
    holder_pid: 4242
broken:
  description:
    - Another owner's lease this task released (as in RV(holder)) plus C(event) (V(broken) for O(break_owner),
      V(forced) for O(force)), C(broken_by), C(events_table), C(event_id) and C(at) (not in check mode); else null.
  returned: when O(state=released), or O(break_owner) is set
  type: dict
elapsed_s:
  description: Seconds the module took.
  returned: always
  type: float
'''

from ansible_collections.hotelbot.ops.plugins.module_utils.common import run
from ansible_collections.hotelbot.ops.plugins.module_utils.fly import fly_argument_spec
from ansible_collections.hotelbot.ops.plugins.module_utils.option_specs import aws_argument_spec, postgres_argument_spec
from ansible_collections.hotelbot.ops.plugins.module_utils.release_lock import (
    BACKENDS,
    DEFAULT_SCHEMA,
    DEFAULT_TABLE,
    DEFAULT_TTL,
    release_lock_task,
)


def _argument_spec():
    """The PostgreSQL options and the AWS ones (the module is in both action groups); connect_timeout
    is PostgreSQL's (an int) and serves the DynamoDB client too. database is needed only where the lease
    is in PostgreSQL (required_if below)."""
    spec = dict((key, value) for key, value in aws_argument_spec().items() if key != 'connect_timeout')
    spec.update(postgres_argument_spec())
    spec.update(fly_argument_spec())
    spec['database'] = dict(spec['database'], required=False)
    return spec


SPEC = dict(argument_spec=dict(
    _argument_spec(),
    backend=dict(type='str', default='postgres', choices=list(BACKENDS)),
    name=dict(type='str', required=True),
    state=dict(type='str', default='acquired', choices=['acquired', 'released']),
    owner=dict(type='str'),
    purpose=dict(type='str', default=''),
    ttl=dict(type='raw', default=DEFAULT_TTL),
    wait=dict(type='raw', default=0),
    renew=dict(type='bool', default=True),
    fail_when_held=dict(type='bool', default=True),
    force=dict(type='bool', default=False),
    break_owner=dict(type='str'),
    schema=dict(type='str', default=DEFAULT_SCHEMA),
    table=dict(type='str', default=DEFAULT_TABLE),
    # Internal, set by the action plugin: the process whose life the heartbeat follows.
    _holder=dict(type='dict'),
), required_if=[('backend', 'postgres', ['database'])])


def main():
    run(SPEC, release_lock_task)


if __name__ == '__main__':
    main()
