# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A release lease in PostgreSQL: one hot-patch or rollback per service at a time.

A lease is one row (name -> owner, purpose, acquired_at, expires_at, ...) in a table
created on first use. Taking it is one INSERT ... ON CONFLICT DO UPDATE whose WHERE
only lets the same owner (renewal) or an expired lease through, so of two concurrent
acquires exactly one gets a row back. Every time comparison uses the server's clock
(statement_timestamp()), never the caller's.

A lease is short (90 s by default) and kept alive by a heartbeat: after a successful
acquire a detached renewer process moves the expiry every ttl/3 while the holder (the
ansible-playbook process, named by the action plugin) lives and the lease is still ours.
A dead run's lease therefore lapses within one ttl, and nothing extends it beyond what the
holder's liveness justifies. Releasing another owner's lease (break_owner, force) is
recorded in an events table beside the lease table.

The lease lives where the user asks (option backend): in PostgreSQL (this file's SQL, psycopg 3), or in
a store of the platform's own that arbitrates by conditional writes (DynamoDB for ECS,
release_lock_dynamodb.py; Kubernetes Leases and Fly Machine leases work the same way). Such a store
only reads and writes; acquire_optimistic()/release_optimistic() below decide with the same rules and
messages as the PostgreSQL path, and the heartbeat renews either. An application rollback on ECS
therefore needs neither PostgreSQL nor psycopg.

The pure helpers (messages, validation, liveness, the heartbeat loop) are importable without a
server; acquire()/release()/renew_lease() talk to PostgreSQL through psycopg 3. release_lock_task
is the module's work (its SPEC is in modules/release_lock.py); it runs in the module process or,
on a local connection, in the controller's worker (plugins/action/release_lock.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import datetime
import gc
import getpass
import os
import shlex
import signal
import socket
import time

from ansible_collections.hotelbot.ops.plugins.module_utils import poll
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, first_line
from ansible_collections.hotelbot.ops.plugins.module_utils.duration import format_duration, parse_duration
from ansible_collections.hotelbot.ops.plugins.module_utils.release_lock_fly import FlyLeases
from ansible_collections.hotelbot.ops.plugins.module_utils.url import url_secrets_any


# Each backend's library is imported when that backend is used, not with this file: the action plugin
# imports it in the ansible-playbook process, on the critical path of every run, and psycopg and botocore
# cost 0.3 s there that a Fly lock (or an ECS one, in DynamoDB) does not need.
def _postgres():
    """module_utils.postgres (psycopg 3, guarded): the PostgreSQL backend's connection and SQL helpers."""
    from ansible_collections.hotelbot.ops.plugins.module_utils import postgres
    return postgres


def _dynamodb():
    """module_utils.release_lock_dynamodb (botocore, guarded): the DynamoDB backend."""
    from ansible_collections.hotelbot.ops.plugins.module_utils import release_lock_dynamodb
    return release_lock_dynamodb


def connect(params, **settings_override):
    """A psycopg 3 connection of the module's connection options (module_utils.postgres.connect)."""
    return _postgres().connect(params, **settings_override)


def identifier(*names):
    """psycopg's composable for a (possibly schema-qualified) identifier."""
    return _postgres().identifier(*names)


DEFAULT_SCHEMA = 'public'
DEFAULT_TABLE = 'hotelbot_release_locks'
DEFAULT_TTL = '90s'
BACKENDS = ('postgres', 'dynamodb', 'fly')
# What a run with PostgreSQL down or psycopg missing can do instead (ECS: its own primitive).
SWITCH_HINT = ('to take the lock without PostgreSQL, use backend=dynamodb (in the playbooks: '
               '-e hotelbot_lock_backend=dynamodb; docs/locking.md)')
# The heartbeat renews this many times per ttl, so two failed renewals in a row still leave one.
RENEWALS_PER_TTL = 3
# One renewal must not hang the renewer behind a stuck session.
RENEW_SESSION = {'lock_timeout': '5s', 'statement_timeout': '10s'}
EVENTS_SUFFIX = '_events'
# Longer than any release operation, short enough for PostgreSQL's intervals and for a person to wait out.
MAX_TTL_S = 7 * 86400
MAX_NAME_LENGTH = 500
# The renewer's process name (ps -o comm, pgrep): it is a fork of a module or of an ansible-playbook worker.
RENEWER_NAME = b'hotelbot-renew'
PR_SET_NAME = 15  # linux/prctl.h
# Signals whose handlers the renewer must not inherit from the process it was forked from.
RESET_SIGNALS = ('SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGCHLD', 'SIGALRM')
# A lease row can change between our two reads only under a concurrent delete; retry then.
RACE_RETRIES = 5

COLUMNS = ('name', 'owner', 'purpose', 'acquired_at', 'renewed_at', 'expires_at', 'host', 'os_user',
           'db_user', 'client_addr')

OWNER_HINT = ("pass owner: a value unique to this run and the same for all its tasks, for example set once "
              "at the start of the play with set_fact: release_owner: \"{{ lookup('env', 'USER') }}@"
              "{{ inventory_hostname }}/{{ now(utc=true).strftime('%Y%m%dT%H%M%S') }}\"")


# --------------------------------------------------------------------------- pure helpers

def utc_text(value):
    """An aware datetime as 2026-11-22T22:01:02Z (None stays None)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def validate(params):
    """Checked, normalised settings from module params; OpsError with a plain message otherwise."""
    name = params.get('name')
    if name is None or not str(name).strip():
        raise OpsError('name must not be empty (for example ecs/<cluster>/<service>)')
    if len(name) > MAX_NAME_LENGTH:
        raise OpsError('name is %d characters long; at most %d' % (len(name), MAX_NAME_LENGTH))
    # Not required in the spec (the other backends need no database), so an empty one is refused here.
    if (params.get('backend') or 'postgres') == 'postgres' and params.get('database') is not None \
            and not str(params['database']).strip():
        raise OpsError('database must not be empty')
    state = params.get('state') or 'acquired'
    owner = params.get('owner')
    owner = owner.strip() if isinstance(owner, str) else owner
    force = bool(params.get('force'))
    break_owner = params.get('break_owner')
    break_owner = break_owner.strip() if isinstance(break_owner, str) else break_owner
    if params.get('break_owner') is not None and not break_owner:
        raise OpsError('break_owner must not be empty: pass the owner of the lease to break, as the refusal names it')
    if break_owner and force:
        raise OpsError('break_owner and force are mutually exclusive: break_owner releases only that owner\'s lease')
    if not owner and not (state == 'released' and force):
        what = 'to acquire a release lock' if state == 'acquired' else 'to release a lock (or force=true)'
        raise OpsError('owner is required %s: %s' % (what, OWNER_HINT))
    ttl = seconds_of(params.get('ttl', DEFAULT_TTL), 'ttl')
    wait = seconds_of(params.get('wait', 0) or 0, 'wait')
    if ttl < 1:
        raise OpsError('ttl must be at least 1 second, not %r' % params.get('ttl'))
    if ttl > MAX_TTL_S:
        raise OpsError('ttl must be at most %s, not %r' % (format_duration(MAX_TTL_S), params.get('ttl')))
    if wait > MAX_TTL_S:
        raise OpsError('wait must be at most %s, not %r' % (format_duration(MAX_TTL_S), params.get('wait')))
    if force and state == 'acquired':
        raise OpsError('force only applies to state=released (an unexpired lease of another owner is never '
                       'taken over; release it with force=true first)')
    for option in ('schema', 'table'):
        if not str(params.get(option) or '').strip():
            raise OpsError('%s must not be empty' % option)
    backend = params.get('backend') or 'postgres'
    if backend not in BACKENDS:
        raise OpsError('backend must be one of %s, not %r' % (', '.join(BACKENDS), backend))
    event_prefix = _dynamodb().EVENT_PREFIX if backend == 'dynamodb' else None
    if event_prefix and name.startswith(event_prefix[0]):
        raise OpsError('name must not start with %r with backend=dynamodb (the table keeps its events under %r)'
                       % (event_prefix[0], event_prefix))
    return dict(backend=backend, name=name, state=state, owner=owner or None, purpose=params.get('purpose') or '', ttl=ttl,
                wait=wait, renew=params.get('renew', True), fail_when_held=params.get('fail_when_held', True),
                force=force, break_owner=break_owner or None, schema=params.get('schema') or DEFAULT_SCHEMA,
                table=params.get('table') or DEFAULT_TABLE, holder=holder_param(params.get('_holder')))


def seconds_of(value, option):
    """A duration option (the collection's one grammar, duration.parse_duration) in seconds, or OpsError."""
    try:
        return parse_duration(value, option)
    except ValueError as err:
        if str(value).strip().startswith('-'):
            raise OpsError('%s must not be negative, not %r' % (option, value))
        raise OpsError(str(err))


def holder_param(value):
    """The internal _holder option as {pid, start} (start None without /proc), or None."""
    if not value:
        return None
    try:
        pid = int(value['pid'])
        start = value.get('start')
        return dict(pid=pid, start=None if start is None else int(start))
    except (KeyError, TypeError, ValueError):
        raise OpsError('_holder is internal (set by the release_lock action plugin): {pid, start}, not %r' % (value,))


def holder_text(lease):
    """'alice@ci/123 for 'hotpatch CHG-1' since 2026-...Z (expires in 27m)' from a lease dict."""
    text = lease['owner']
    if lease.get('purpose'):
        text += ' for %r' % lease['purpose']
    text += ' since %s' % lease['acquired_at']
    if lease.get('expired'):
        text += ' (expired %s ago at %s)' % (format_duration(-lease['remaining_s']), lease['expires_at'])
    else:
        text += ' (expires in %s, at %s)' % (format_duration(lease['remaining_s']), lease['expires_at'])
    return text


def held_message(name, lease, waited=0.0, advice=True):
    """The refusal when another owner holds an unexpired lease."""
    text = 'release lock %r is held by %s' % (name, holder_text(lease))
    if waited:
        text += ' after waiting %s' % format_duration(waited)
    if advice:
        text += '; ' + break_advice(lease)
    return text


def break_advice(lease):
    """What to do about a lease in the way, the playbook way (the owner quoted for a shell)."""
    return ('it lapses by itself within its ttl once that run is dead (a live run renews it); to break it now, '
            're-run the playbook with -e %s' % shlex.quote('release_break_lock=%s' % lease['owner']))


def public(lease):
    """The lease as returned to the user (holder/took_over/lock)."""
    if lease is None:
        return None
    return dict((key, lease.get(key)) for key in COLUMNS + ('expired', 'remaining_s') if key in lease)


def holder_summary(lease):
    """The short holder dict: owner, purpose, acquired_at, expires_at, expired."""
    if lease is None:
        return None
    return dict(owner=lease['owner'], purpose=lease['purpose'], acquired_at=lease['acquired_at'],
                expires_at=lease['expires_at'], expired=lease['expired'], remaining_s=lease['remaining_s'])


def client_info():
    """Where the module runs: host name and OS user, recorded in the lease for people reading it."""
    try:
        user = getpass.getuser()
    except Exception:  # pylint: disable=broad-except
        user = None
    return dict(host=socket.gethostname(), os_user=user)


# --------------------------------------------------------------------------- SQL

CREATE_TABLE = '''CREATE TABLE IF NOT EXISTS {table} (
    name        text PRIMARY KEY,
    owner       text NOT NULL,
    purpose     text NOT NULL DEFAULT '',
    acquired_at timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    host        text,
    os_user     text,
    db_user     text NOT NULL DEFAULT current_user,
    client_addr inet
)'''

# The row plus what the server's clock says about it.
SELECT_COLUMNS = ('l.name, l.owner, l.purpose, l.acquired_at, l.renewed_at, l.expires_at, l.host, l.os_user, '
                  'l.db_user, l.client_addr, l.expires_at <= statement_timestamp() AS expired, '
                  'extract(epoch FROM l.expires_at - statement_timestamp())::float8 AS remaining_s')

SELECT_LEASE = 'SELECT ' + SELECT_COLUMNS + ' FROM {table} AS l WHERE l.name = %(name)s'

# The arbiter: exactly one of two concurrent acquires gets a row back. A new name is
# inserted; an existing row is only overwritten when it has expired or is ours.
UPSERT = ('INSERT INTO {table} AS l (name, owner, purpose, acquired_at, renewed_at, expires_at, host, '
          'os_user, db_user, client_addr) '
          'VALUES (%(name)s, %(owner)s, %(purpose)s, statement_timestamp(), statement_timestamp(), '
          'statement_timestamp() + make_interval(secs => %(ttl)s::float8), %(host)s, %(os_user)s, current_user, '
          'inet_client_addr()) '
          'ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, purpose = EXCLUDED.purpose, '
          'acquired_at = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > statement_timestamp() '
          'THEN l.acquired_at ELSE EXCLUDED.acquired_at END, '
          'renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at, host = EXCLUDED.host, '
          'os_user = EXCLUDED.os_user, db_user = EXCLUDED.db_user, client_addr = EXCLUDED.client_addr '
          'WHERE l.expires_at <= statement_timestamp() OR l.owner = EXCLUDED.owner '
          'RETURNING ' + SELECT_COLUMNS)

DELETE_LEASE = 'DELETE FROM {table} AS l WHERE l.name = %(name)s RETURNING ' + SELECT_COLUMNS

# The audit of released leases that were not the releaser's own (break_owner, force).
CREATE_EVENTS = '''CREATE TABLE IF NOT EXISTS {table} (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    event       text NOT NULL,
    owner       text NOT NULL,
    purpose     text NOT NULL DEFAULT '',
    acquired_at timestamptz,
    renewed_at  timestamptz,
    expires_at  timestamptz,
    broken_by   text NOT NULL,
    at          timestamptz NOT NULL DEFAULT statement_timestamp(),
    host        text,
    os_user     text,
    db_user     text NOT NULL DEFAULT current_user,
    client_addr inet DEFAULT inet_client_addr()
)'''

# Delete another owner's lease and record it, in one statement: no break without its audit row.
BREAK_LEASE = ('WITH gone AS (DELETE FROM {locks} AS l WHERE l.name = %(name)s AND l.owner = %(broken)s RETURNING l.*) '
               'INSERT INTO {events} (name, event, owner, purpose, acquired_at, renewed_at, expires_at, broken_by, '
               'host, os_user) SELECT name, %(event)s, owner, purpose, acquired_at, renewed_at, expires_at, '
               '%(broken_by)s, %(host)s, %(os_user)s FROM gone RETURNING id, at')

# The heartbeat: moves the expiry only while the lease is still this owner's and unexpired,
# so a released, broken or lapsed lease is never brought back.
RENEW_LEASE = ('UPDATE {table} AS l SET renewed_at = statement_timestamp(), '
               'expires_at = statement_timestamp() + make_interval(secs => %(ttl)s::float8) '
               'WHERE l.name = %(name)s AND l.owner = %(owner)s AND l.expires_at > statement_timestamp() '
               'RETURNING l.expires_at')


def _sql(template, table):
    return _postgres().sql.SQL(template).format(table=table)


def _row(cursor_row, description):
    lease = dict(zip([d.name for d in description], cursor_row))
    for key in ('acquired_at', 'renewed_at', 'expires_at'):
        lease[key] = utc_text(lease[key])
    if lease.get('client_addr') is not None:
        lease['client_addr'] = str(lease['client_addr'])
    lease['remaining_s'] = round(float(lease['remaining_s']), 3)
    lease['expired'] = bool(lease['expired'])
    return lease


def _fetch(conn, template, table, values):
    cursor = conn.execute(_sql(template, table), values)
    row = cursor.fetchone()
    return None if row is None else _row(row, cursor.description)


def table_exists(conn, schema, table):
    """True when schema.table exists; OpsError when the schema does not."""
    found = conn.execute('SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s), '
                         'to_regclass(%s) IS NOT NULL', (schema, '%s.%s' % (_quote(schema), _quote(table)))).fetchone()
    if not found[0]:
        raise OpsError('schema %s does not exist in database %s; create it or choose another with schema='
                       % (_quote(schema), conn.info.dbname))
    return bool(found[1])


def _quote(name):
    return '"%s"' % name.replace('"', '""')


def ensure_table(conn, schema, table, ddl=None, comment='Release leases of hotelbot.ops.release_lock: one release '
                 'operation per name'):
    """Create the lease table (or another of ours, from ddl) if missing; True when this call created it.

    Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalogs, so
    creators serialise on a transaction-scoped advisory lock named after the table.
    """
    if table_exists(conn, schema, table):
        return False
    qualified = '%s.%s' % (_quote(schema), _quote(table))
    postgres = _postgres()
    sql, errors = postgres.sql, postgres.psycopg.errors
    try:
        with conn.transaction():
            conn.execute('SELECT pg_advisory_xact_lock(hashtext(%s))', ('hotelbot.ops.release_lock:' + qualified,))
            if table_exists(conn, schema, table):
                return False
            conn.execute(_sql(ddl or CREATE_TABLE, identifier(schema, table)))
            conn.execute(sql.SQL('COMMENT ON TABLE {} IS {}').format(identifier(schema, table), sql.Literal(comment)))
    except (errors.UniqueViolation, errors.DuplicateTable):
        return False  # created by someone not taking our advisory lock
    except errors.InsufficientPrivilege as err:
        raise OpsError('cannot create the lease table %s in database %s: %s; create it once as its owner '
                       '(see the module documentation) or grant CREATE on schema %s'
                       % (qualified, conn.info.dbname, first_line(err), _quote(schema)))
    return True


# --------------------------------------------------------------------------- acquire

def _try_acquire(conn, table, settings, values):
    """One attempt in one transaction: (outcome, before, after).

    outcome is 'held' (another owner's unexpired lease: before is it), 'kept' (ours,
    renew=false), 'acquired', 'renewed', 'took_over' or 'race' (the lease vanished
    between our reads; try again).
    """
    with conn.transaction():
        before = _fetch(conn, SELECT_LEASE + ' FOR UPDATE', table, values)
        if before is not None and not before['expired'] and before['owner'] != settings['owner']:
            return 'held', before, None
        if before is not None and not before['expired'] and not settings['renew']:
            return 'kept', before, before
        after = _fetch(conn, UPSERT, table, values)
        if after is None:
            # Someone inserted the name after our first read and the upsert refused:
            # the row is committed now, so this read sees it (READ COMMITTED).
            current = _fetch(conn, SELECT_LEASE, table, values)
            return ('race' if current is None else 'held'), current, None
    if before is None or before['owner'] != settings['owner']:
        return ('took_over' if before is not None else 'acquired'), before, after
    return ('renewed' if not before['expired'] else 'acquired'), before, after


def _plan_acquire(conn, table, settings, values, exists):
    """What acquire would do, read only (check mode): (outcome, before, after-ish)."""
    if not exists:
        return 'acquired', None, None
    before = _fetch(conn, SELECT_LEASE, table, values)
    if before is None:
        return 'acquired', None, None
    if not before['expired'] and before['owner'] != settings['owner']:
        return 'held', before, None
    if not before['expired'] and not settings['renew']:
        return 'kept', before, before
    if before['owner'] != settings['owner']:
        return 'took_over', before, None
    return ('renewed' if not before['expired'] else 'acquired'), before, None


def _take(conn, table, settings, values):
    """_try_acquire, tried again while the lease vanishes between its reads (at most RACE_RETRIES times)."""
    for _retry in range(RACE_RETRIES):
        answer = _try_acquire(conn, table, settings, values)
        if answer[0] != 'race':
            return answer
    return _try_acquire(conn, table, settings, values)


def acquire(conn, settings, check_mode=False, sleep=time.sleep, clock=time.monotonic, progress=None):
    """Take (or renew) the lease, waiting up to settings['wait'] while another owner holds it (poll.LOCK);
    the result dict, or OpsError when held and fail_when_held. Check mode reads once and never waits."""
    table = identifier(settings['schema'], settings['table'])
    values = dict(name=settings['name'], owner=settings['owner'], purpose=settings['purpose'],
                  ttl=float(settings['ttl']))
    values.update(client_info())
    if check_mode:
        created = not table_exists(conn, settings['schema'], settings['table'])
    else:
        created = ensure_table(conn, settings['schema'], settings['table'])
    started = clock()
    attempts = []

    def attempt(_deadline):
        if check_mode:
            attempts.append(_plan_acquire(conn, table, settings, values, not created))
            return attempts[-1]
        attempts.append(_take(conn, table, settings, values))
        return None if attempts[-1][0] == 'held' else attempts[-1]

    def waiting(waited_s):
        if progress:
            progress('waiting for release lock %r held by %s (%s so far)'
                     % (settings['name'], attempts[-1][1]['owner'], format_duration(waited_s)))

    try:
        outcome, before, after = poll.poll(attempt, settings['wait'], poll.LOCK, progress=waiting,
                                           sleep=sleep, clock=clock)
    except poll.PollTimeout:
        outcome, before, after = attempts[-1]
    waited = round(clock() - started, 3)
    result = acquire_result(settings, outcome, before, after, created, waited, check_mode)
    first_held = next((held for what, held, _after in attempts if what == 'held'), None)
    result['waited_for'] = holder_summary(first_held) if result['acquired'] else None
    return result


def acquire_result(settings, outcome, before, after, created, waited, check_mode):
    name = settings['name']
    if outcome == 'race':
        raise OpsError('release lock %r changed hands %d times while taking it; try again' % (name, RACE_RETRIES))
    result = dict(changed=False, name=name, table=table_label(settings),
                  table_created=created, acquired=False, renewed=False, took_over=None, waited_s=waited)
    prefix = 'would ' if check_mode else ''
    if outcome == 'held':
        result.update(holder=holder_summary(before), lock=public(before), changed=created and not check_mode,
                      diff=dict(before=holder_summary(before), after=holder_summary(before)))
        mode = 'check mode: ' if check_mode else ''
        waited = waited if settings['wait'] else 0  # only say "after waiting" when asked to wait
        if settings['fail_when_held']:
            raise OpsError(mode + held_message(name, before, waited), changed=result['changed'],
                           **dict((k, v) for k, v in result.items() if k != 'changed'))
        result['msg'] = mode + held_message(name, before, waited, advice=False) + \
            ' (fail_when_held=false: not acquired)'
        return result
    mine = after if after is not None else before
    result['acquired'] = True
    result['changed'] = outcome != 'kept' or (created and not check_mode)
    result['renewed'] = outcome == 'renewed'
    if outcome == 'took_over':
        result['took_over'] = holder_summary(before)
    if mine is not None:
        result['holder'] = holder_summary(mine)
        result['lock'] = public(mine)
    else:  # check mode, nothing written: what the lease would say
        result['holder'] = dict(owner=settings['owner'], purpose=settings['purpose'], acquired_at=None,
                                expires_at=None, expired=False, remaining_s=settings['ttl'])
        result['lock'] = None
    result['diff'] = dict(before=holder_summary(before) or {}, after=result['holder'])
    if outcome == 'kept':
        result['msg'] = 'release lock %r already held by %s (renew=false: expiry unchanged)' % (
            name, holder_text(before))
    elif outcome == 'renewed':
        result['msg'] = '%srenew release lock %r for %s: expires in %s' % (
            prefix, name, settings['owner'], format_duration(settings['ttl']))
    elif outcome == 'took_over':
        result['msg'] = '%stake over the expired release lock %r from %s' % (prefix, name, holder_text(before))
    else:
        result['msg'] = '%sacquire release lock %r for %s, expires in %s' % (
            prefix, name, settings['owner'], format_duration(settings['ttl']))
    if not check_mode:
        result['msg'] = _past(result['msg'])
    if created:
        verb = 'would create' if check_mode else 'created'
        result['msg'] += '; %s the lease table %s' % (verb, result['table'])
    return result


def table_label(settings):
    """Where the leases are, for results and messages: schema.table, or the DynamoDB table's name."""
    if settings.get('backend') == 'dynamodb':
        return settings['table']
    if settings.get('backend') == 'fly':
        return 'Fly Machine lease of %s' % settings['name'][len('fly/'):]
    return '%s.%s' % (settings['schema'], settings['table'])


def _past(message):
    for verb, done in (('renew ', 'renewed '), ('take over ', 'took over '), ('acquire ', 'acquired ')):
        if message.startswith(verb):
            return done + message[len(verb):]
    return message


# --------------------------------------------------------------------------- release

def release(conn, settings, check_mode=False):
    """Delete our lease, or another owner's named by break_owner (or any with force), recording a release
    of someone else's lease in the events table; the result dict, or OpsError naming the actual holder."""
    name = settings['name']
    table = identifier(settings['schema'], settings['table'])
    events = settings['table'] + EVENTS_SUFFIX
    values = dict(name=name)
    breaking = settings['break_owner']
    result = dict(changed=False, name=name, table='%s.%s' % (settings['schema'], settings['table']),
                  released=False, broken=None, holder=None, lock=None)
    nothing = ' (nothing to break)' if breaking else ''
    if not table_exists(conn, settings['schema'], settings['table']):
        if breaking and settings['state'] == 'released':
            # No lease was ever taken here: this is not where the runs keep theirs.
            raise OpsError('release lock %r: no lease table %s in database %s, so no lease of %s to break here; '
                           'point database (hotelbot_lock_database) or backend (hotelbot_lock_backend) at where the '
                           'playbooks take their locks' % (name, result['table'], conn.info.dbname, breaking),
                           **dict((k, v) for k, v in result.items() if k != 'changed'))
        result['msg'] = 'release lock %r is not held (no lease table %s yet)%s' % (name, result['table'], nothing)
        result['diff'] = dict(before={}, after={})
        return result
    if (breaking or settings['force']) and not check_mode:
        ensure_table(conn, settings['schema'], events, CREATE_EVENTS,
                     'Releases of other owners\' leases by hotelbot.ops.release_lock (break_owner, force)')
    with conn.transaction():
        before = _fetch(conn, SELECT_LEASE + ('' if check_mode else ' FOR UPDATE'), table, values)
        result['holder'] = holder_summary(before)
        result['lock'] = public(before)
        if before is None:
            result['msg'] = 'release lock %r is not held%s' % (name, nothing)
            result['diff'] = dict(before={}, after={})
            return result
        fields = dict((k, v) for k, v in result.items() if k != 'changed')
        refuse_release(name, before, settings, breaking, fields)
        other = before['owner'] != settings['owner']
        if other:
            result['broken'] = dict(holder_summary(before), event='broken' if breaking else 'forced',
                                    broken_by=breaker(settings), events_table='%s.%s' % (settings['schema'], events))
        if not check_mode and other:
            audit = break_lease(conn, settings, before, result['broken']['event'], result['broken']['broken_by'])
            result['broken'].update(audit)
        elif not check_mode:
            _fetch(conn, DELETE_LEASE, table, values)
    result.update(changed=True, released=True, diff=dict(before=holder_summary(before), after={}))
    result['msg'] = release_message(name, before, result['broken'], check_mode)
    return result


def breaker(settings):
    """Who breaks a lease, for the audit: the owner option, else the OS user and host."""
    if settings['owner']:
        return settings['owner']
    info = client_info()
    return '%s@%s' % (info['os_user'] or '?', info['host'])


def break_lease(conn, settings, lease, event, broken_by):
    """Delete lease (still that owner's) and insert its audit row in one statement: {event_id, at}."""
    statement = _postgres().sql.SQL(BREAK_LEASE).format(locks=identifier(settings['schema'], settings['table']),
                                                        events=identifier(settings['schema'], settings['table'] + EVENTS_SUFFIX))
    values = dict(name=settings['name'], broken=lease['owner'], event=event, broken_by=broken_by)
    values.update(client_info())
    row = conn.execute(statement, values).fetchone()
    if row is None:  # cannot happen under our FOR UPDATE; never report a break that did not happen
        raise OpsError('release lock %r changed hands while breaking it; nothing was broken' % settings['name'])
    return dict(event_id=row[0], at=utc_text(row[1]))


def release_message(name, before, broken, check_mode):
    """The message of a release: our own lease, or another owner's broken (and where that is recorded)."""
    if broken is None:
        verb = 'would release' if check_mode else 'released'
        return '%s release lock %r held by %s' % (verb, name, holder_text(before))
    how = 'break_owner' if broken['event'] == 'broken' else 'force=true'
    verb = 'would break' if check_mode else 'broke'
    text = '%s release lock %r held by %s (%s, by %s)' % (verb, name, holder_text(before), how, broken['broken_by'])
    if not check_mode:
        text += '; recorded in %s (id %s)' % (broken['events_table'], broken['event_id'])
    return text


# --------------------------------------------------------------------------- heartbeat

def renewal_period(ttl):
    """Seconds between two renewals of a lease of ttl seconds."""
    return float(ttl) / RENEWALS_PER_TTL


def process_start(pid, proc='/proc'):
    """A live process's start time (clock ticks since boot, field 22 of /proc/<pid>/stat), or None when
    there is no such process or it is a zombie (killed, not yet reaped: dead for our purpose)."""
    try:
        with open(os.path.join(proc, str(int(pid)), 'stat')) as handle:
            text = handle.read()
    except (OSError, ValueError):
        return None
    fields = text[text.rfind(')') + 2:].split()  # the command name in (...) may hold spaces
    if len(fields) < 20 or fields[0] in ('Z', 'X', 'x'):
        return None
    return int(fields[19])


def holder_identity(pid, proc='/proc'):
    """{pid, start} of the process whose life a lease follows; start is None where there is no /proc."""
    return dict(pid=int(pid), start=process_start(pid, proc) if os.path.isdir(proc) else None)


def holder_alive(holder, proc='/proc', kill=os.kill):
    """True while the holder process runs: the same pid with the same start time (a reused pid is another
    process). Without a start time (no /proc where it was taken) only the pid is checked."""
    if holder.get('start') is not None:
        return process_start(holder['pid'], proc) == holder['start']
    try:
        kill(holder['pid'], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process, alive
    return True


def renew_lease(params, settings):
    """One renewal on its own short connection (or client): True while the lease is still ours and unexpired."""
    if settings.get('backend') == 'dynamodb':
        return _dynamodb().DynamoDBLeases(params, settings['table']).renew(settings['name'], settings['owner'],
                                                                           float(settings['ttl']))
    if settings.get('backend') == 'fly':
        return FlyLeases(params, settings['name']).renew(settings['name'], settings['owner'], float(settings['ttl']))
    postgres = _postgres()
    conn = connect(params, options=postgres.connection_options(params, RENEW_SESSION))
    try:
        row = conn.execute(_sql(RENEW_LEASE, identifier(settings['schema'], settings['table'])),
                           dict(name=settings['name'], owner=settings['owner'], ttl=float(settings['ttl']))).fetchone()
        return row is not None
    except postgres.DATABASE_ERRORS as err:
        raise OpsError('PostgreSQL error renewing release lock %r: %s' % (settings['name'], first_line(err)))
    finally:
        conn.close()


# What a renewal that failed this time raises (each backend's own errors come as OpsError).
RENEW_ERRORS = (OpsError, OSError, ValueError)


def heartbeat(renew, alive, every, sleep=time.sleep):
    """The renewer's loop: every `every` seconds, if the holder is alive, renew; stop (and say why) when the
    holder is gone or the lease is no longer ours. A failed renewal (database unreachable) is tried again
    next period: two may fail before the lease lapses, and a lapsed lease is never renewed (RENEW_LEASE)."""
    while True:
        sleep(every)
        if not alive():
            return 'holder gone'
        try:
            if not renew():
                return 'lease no longer ours'
        except RENEW_ERRORS:
            continue


def _detach():
    """The renewer lets go of everything of the process it was forked from (a module, or an
    ansible-playbook worker): cwd, stdio (Ansible waits for them to close), every other inherited fd
    (the worker's result queue among them), its signal handlers, and its objects' finalizers."""
    # Objects inherited from the parent (a worker's queue connections, say) are never collected here:
    # a finalizer closing "its" fd number could close the renewer's own database socket.
    gc.freeze()
    for name in RESET_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    os.chdir('/')
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, open_fd_limit())
    _name_process(RENEWER_NAME)


def open_fd_limit():
    """One more than the highest file descriptor this process may have open."""
    try:
        return max(65536, os.sysconf('SC_OPEN_MAX'))
    except (ValueError, OSError):
        return 65536


def _name_process(name):
    """Name this process (its /proc/<pid>/comm, what ps -o comm and pgrep show), where Linux's prctl is."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def start_heartbeat(params, settings, holder, every):
    """Start the detached renewer and return its pid (None when it did not start).

    A double fork with a new session, so that it outlives the module process or the worker and belongs
    to neither; _detach() lets go of what it inherited; it ends with os._exit, so the parent's exit
    handlers (AnsibleModule's, a worker's atexit and multiprocessing cleanup) never run in it.
    It is a fork, not a new program: the connection settings stay in memory, never on a command line,
    in the environment or in a file.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked processes
        code = 0
        try:
            os.close(read_end)
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                os.close(write_end)
                _detach()
                try:
                    heartbeat(lambda: renew_lease(params, settings), lambda: holder_alive(holder), every)
                except BaseException:  # pylint: disable=broad-except
                    code = 1
            else:
                os.write(write_end, str(grandchild).encode())
        except BaseException:  # pylint: disable=broad-except
            code = 1
        finally:
            os._exit(code)  # never back into the module or the worker
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end, 'rb') as handle:
        data = handle.read()
    return int(data) if data.strip() else None


def keep_alive(params, settings, result, check_mode, start=start_heartbeat, alive=holder_alive):
    """After a successful acquire (or renewal) start the renewer; (heartbeat dict or None, warning or None)."""
    if check_mode or not (result.get('acquired') and result.get('changed')):
        return None, None  # nothing taken, or renew=false kept the lease as it was
    holder = settings['holder']
    plain = 'the lease lasts its ttl of %s and is not renewed' % format_duration(settings['ttl'])
    if holder is None:
        return None, ('no heartbeat: no holder process was given (the task runs through the release_lock action '
                      'plugin on a local connection to have one); ' + plain)
    if not alive(holder):
        return None, ('no heartbeat: holder pid %d is not visible where the module runs; %s' % (holder['pid'], plain))
    every = renewal_period(settings['ttl'])
    pid = start(params, settings, holder, every)
    if pid is None:
        return None, 'no heartbeat: the renewer did not start; ' + plain
    return dict(pid=pid, every_s=round(every, 3), holder_pid=holder['pid']), None


# --------------------------------------------------------------------------- optimistic stores
# A store that arbitrates by conditional writes (DynamoDB today; a Kubernetes Lease's resourceVersion and
# a Fly Machine lease's nonce are the same idea): read the lease, decide as the PostgreSQL path does, then
# write naming exactly the lease read. A write that finds something else changed nothing: read again.
# A store that can also claim (write over no lease or an expired one) and give back (delete only its
# own), each returning the lease in the way, skips the read on the usual take and release.

def refuse_release(name, before, settings, breaking, fields):
    """The refusals of a release, the same in every store: breaking a lease that the named dead run
    does not hold, or giving back a lease that another run holds (without force)."""
    if breaking and before['owner'] != breaking:
        raise OpsError('release lock %r is held by %s, not by %s: not broken, nothing changed'
                       % (name, holder_text(before), breaking), **fields)
    if not breaking and before['owner'] != settings['owner'] and not settings['force']:
        raise OpsError('release lock %r is held by %s, not by %s: not released; %s'
                       % (name, holder_text(before), settings['owner'], break_advice(before)), **fields)


def lease_view(lease, now):
    """A store's lease (epoch seconds) as the results show a lease: UTC texts, expired, remaining_s."""
    if lease is None:
        return None
    view = dict((key, lease.get(key)) for key in ('name', 'owner', 'purpose', 'host', 'os_user'))
    for key in ('acquired_at', 'renewed_at', 'expires_at'):
        value = lease.get(key)
        view[key] = None if value is None else utc_text(
            datetime.datetime.fromtimestamp(value, datetime.timezone.utc))
    view['remaining_s'] = round(lease['expires_at'] - now, 3)
    view['expired'] = lease['expires_at'] <= now
    return view


def _new_lease(settings, now, acquired_at):
    """The lease this task writes for its owner: renewed now, expiring ttl from now."""
    lease = dict(name=settings['name'], owner=settings['owner'], purpose=settings['purpose'], acquired_at=acquired_at,
                 renewed_at=now, expires_at=now + settings['ttl'])
    lease.update(client_info())
    return lease


def _try_acquire_optimistic(store, settings, check_mode):
    """One attempt: (outcome, before, after) as _try_acquire.

    Where the store can claim (one conditional write that succeeds only where there is no lease or an
    expired one, and returns what it replaced or what refused it), a free lease costs that one call and
    nothing is read first. A refused claim is decided as a read would be: another owner's lease is held,
    our own is renewed or kept. A claim cannot renew: it would reset acquired_at, and renew=false writes
    nothing. Stores without claim, and check mode, read first."""
    if check_mode or not hasattr(store, 'claim'):
        before = store.read(settings['name'])
    else:
        now = store.clock()
        lease = _new_lease(settings, now, now)
        claimed, before = store.claim(lease, now)
        if claimed:
            took_over = before is not None and before['owner'] != settings['owner']
            return 'took_over' if took_over else 'acquired', lease_view(before, now), lease_view(lease, now)
        if before is None:
            return 'race', None, None  # refused, and gone by the time it was read
    now = store.clock()
    seen = lease_view(before, now)
    if seen is not None and not seen['expired'] and before['owner'] != settings['owner']:
        return 'held', seen, None
    if seen is not None and not seen['expired'] and not settings['renew']:
        return 'kept', seen, seen
    ours = seen is not None and not seen['expired'] and before['owner'] == settings['owner']
    if seen is not None and before['owner'] != settings['owner']:
        outcome = 'took_over'
    else:
        outcome = 'renewed' if ours else 'acquired'
    if check_mode:
        return outcome, seen, None
    lease = _new_lease(settings, now, before['acquired_at'] if ours else now)
    if not store.write(lease, before):
        return 'race', None, None
    return outcome, seen, lease_view(lease, now)


def acquire_optimistic(store, settings, check_mode=False, sleep=time.sleep, clock=time.monotonic, progress=None):
    """acquire() for a store with conditional writes: the same waiting, results and messages."""
    started = clock()
    attempts = []

    def attempt(_deadline):
        for _retry in range(RACE_RETRIES + 1):
            answer = _try_acquire_optimistic(store, settings, check_mode)
            if answer[0] != 'race':
                break
        attempts.append(answer)
        return None if answer[0] == 'held' and not check_mode else answer

    def waiting(waited_s):
        if progress:
            progress('waiting for release lock %r held by %s (%s so far)'
                     % (settings['name'], attempts[-1][1]['owner'], format_duration(waited_s)))

    try:
        outcome, before, after = poll.poll(attempt, settings['wait'], poll.LOCK, progress=waiting, sleep=sleep,
                                           clock=clock)
    except poll.PollTimeout:
        outcome, before, after = attempts[-1]
    result = acquire_result(settings, outcome, before, after, False, round(clock() - started, 3), check_mode)
    first_held = next((held for what, held, _after in attempts if what == 'held'), None)
    result['waited_for'] = holder_summary(first_held) if result['acquired'] else None
    return result


def release_optimistic(store, settings, check_mode=False):
    """release() for a store with conditional writes: our lease, or another owner's named by break_owner (or
    any with force) deleted together with its audit record; OpsError naming the actual holder."""
    for _retry in range(RACE_RETRIES + 1):
        result = _try_release_optimistic(store, settings, check_mode)
        if result is not None:
            return result
    raise OpsError('release lock %r changed hands %d times while releasing it; try again'
                   % (settings['name'], RACE_RETRIES))


def _try_release_optimistic(store, settings, check_mode):
    """One attempt: the result, or None when the lease changed after it was read (decide again).

    Where the store can give back (one conditional delete of the lease if it is ours, returning it, or
    the other owner's lease that refused it), giving back our own lease is that one call. Breaking,
    force and check mode read first: what they do depends on whose lease it is."""
    name = settings['name']
    breaking = settings['break_owner']
    given_back = False
    if check_mode or breaking or settings['force'] or not hasattr(store, 'give_back'):
        stored = store.read(name)
    else:
        given_back, stored = store.give_back(name, settings['owner'])
    before = lease_view(stored, store.clock())
    result = dict(changed=False, name=name, table=table_label(settings), released=False, broken=None,
                  holder=holder_summary(before), lock=public(before))
    if before is None:
        nothing = ' (nothing to break)' if breaking else ''
        result.update(msg='release lock %r is not held in %s%s' % (name, table_label(settings), nothing),
                      diff=dict(before={}, after={}))
        return result
    if not given_back:
        refuse_release(name, before, settings, breaking, dict((k, v) for k, v in result.items() if k != 'changed'))
        if before['owner'] != settings['owner']:
            result['broken'] = dict(holder_summary(before), event='broken' if breaking else 'forced',
                                    broken_by=breaker(settings), events_table=table_label(settings))
        if not check_mode and not _remove(store, stored, result['broken']):
            return None
    result.update(changed=True, released=True, diff=dict(before=holder_summary(before), after={}))
    result['msg'] = release_message(name, before, result['broken'], check_mode)
    return result


def _remove(store, stored, broken):
    """Delete the lease as read - with its audit record when it is another owner's (broken, which gets the
    record's id and time) - or False when it changed since it was read (nothing written)."""
    if broken is None:
        return store.delete(stored)
    audit = store.break_lease(stored, dict(broken, **client_info()))
    if audit is None:
        return False
    broken.update(event_id=audit['event_id'],
                  at=utc_text(datetime.datetime.fromtimestamp(audit['at'], datetime.timezone.utc)))
    return True


def run_optimistic(store, params, check_mode=False, sleep=time.sleep, start=None, progress=None):
    """Validate, then acquire (break first with break_owner, start the heartbeat) or release, in store."""
    settings = validate(params)

    def take():
        result = acquire_optimistic(store, settings, check_mode, sleep=sleep, progress=progress)
        return with_heartbeat(params, settings, result, check_mode, start or start_heartbeat)

    return release_or_take(settings, lambda: release_optimistic(store, settings, check_mode), take)


def release_or_take(settings, release_it, take_it):
    """What a task does with the lease, in every store: release it (state=released), or take it - breaking
    first the dead run's lease that break_owner names (refused, changing nothing, when someone else holds
    it), so that a re-run after a killed one is one task. release_it/take_it: the store's own steps."""
    if settings['state'] == 'released':
        return release_it()
    broken = release_it() if settings['break_owner'] else None
    result = take_it()
    if broken:
        result['broken'] = broken['broken']
        result['msg'] = '%s; %s' % (broken['msg'], result['msg'])
    return result


def with_heartbeat(params, settings, result, check_mode, start):
    """After an acquire: start the renewer and say so (or why not) in the message."""
    result['heartbeat'], warning = keep_alive(params, settings, result, check_mode, start=start)
    if result['heartbeat']:
        result['msg'] += '; renewed every %s while holder pid %d runs' % (
            format_duration(result['heartbeat']['every_s']), result['heartbeat']['holder_pid'])
    if warning:  # said in the message (a `warnings` result key is deprecated in ansible-core 2.19)
        result['msg'] += '; ' + warning
    return result


# --------------------------------------------------------------------------- entry point

def release_lock_task(task):
    """The module's work (its SPEC is in modules/release_lock.py): the lease where backend says, which the
    result names (a play releases where it acquired)."""
    backend = task.params.get('backend') or 'postgres'
    try:
        if backend == 'dynamodb':
            store = _dynamodb().DynamoDBLeases(task.params, task.params.get('table') or DEFAULT_TABLE)
            result = run_optimistic(store, task.params, check_mode=task.check_mode, progress=task.progress)
        elif backend == 'fly':
            result = run_optimistic(FlyLeases(task.params, task.params.get('name') or ''), task.params,
                                    check_mode=task.check_mode, progress=task.progress)
        elif not _postgres().HAS_PSYCOPG:
            from ansible.module_utils.basic import missing_required_lib
            raise OpsError('%s; %s' % (missing_required_lib('psycopg (version 3)'), SWITCH_HINT))
        else:
            result = _postgres_task(task)
    except OpsError as err:
        err.result['backend'] = backend
        raise
    result['backend'] = backend
    return result


def _postgres_task(task):
    return _postgres().postgres_work(_run_postgres)(task)


def _run_postgres(task):
    return run_release_lock(task.params, check_mode=task.check_mode, progress=task.progress)


def _hide_secrets(task):
    """Secrets inside options, whatever the backend: a password in database, a proxy's in endpoint_url."""
    database = task.params.get('database')
    # A connection string given as database is hidden with every backend, even where it is not used; a
    # plain database name holds no secret, and then a Fly or DynamoDB lock does not import psycopg for it.
    if (task.params.get('backend') in (None, 'postgres') or task.params.get('connect_params')
            or (isinstance(database, str) and ('=' in database or '://' in database))):
        _postgres().hide_secrets(task)
    endpoint = task.params.get('endpoint_url')
    task.hide(*(url_secrets_any(endpoint) if endpoint else []))
    task.hide(task.params.get('api_token'), os.environ.get('FLY_API_TOKEN'), any_length=True)


release_lock_task.hide_secrets = _hide_secrets


def run_release_lock(params, check_mode=False, sleep=time.sleep, start=start_heartbeat, progress=None):
    """Validate, connect, acquire (and start the heartbeat) or release."""
    settings = validate(params)
    try:
        conn = connect(params)
    except OpsError as err:
        err.msg += '; ' + SWITCH_HINT
        raise
    try:
        if check_mode:
            conn.execute('SET default_transaction_read_only = on')
        # Never hang behind a stuck session holding the lease row or the table.
        conn.execute("SET lock_timeout = '30s'")
        result = release_or_take(settings, lambda: release(conn, settings, check_mode),
                                 lambda: acquire(conn, settings, check_mode, sleep=sleep, progress=progress))
    except _postgres().DATABASE_ERRORS as err:
        raise OpsError('PostgreSQL error on release lock %r in database %s: %s'
                       % (settings['name'], _postgres().database_label(params), first_line(err)))
    finally:
        conn.close()
    if settings['state'] == 'released':
        return result
    # The renewer starts once our own connection is closed (a forked process must not share it).
    return with_heartbeat(params, settings, result, check_mode, start)
