# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""fly_release's work: roll the Machines of an app's process group to an image, lease by lease.

For each Machine not already on the target image, max_unavailable at a time: take its lease (a
lease someone else holds refuses the roll before anything changes), read it again under the lease,
update it with its whole config with only the image changed (the lease nonce sent), wait until its
new instance is `started` (Fly's wait endpoint) and every check `passing`, and give the lease back,
on success and failure alike. A Machine that does not start or whose checks go critical stops the
roll; on_failure=revert puts the updated ones back on their image. The ledger (fly.py) is written
around it: the rollback marker before a roll to `previous`, `last-stable` after verification.
"""

from __future__ import absolute_import, division, print_function

import copy
import datetime
import json
import math
import os
import socket
import time

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError
from ansible_collections.hotelbot.ops.plugins.module_utils.duration import parse_duration
from ansible_collections.hotelbot.ops.plugins.module_utils.fly import (
    META_LAST_STABLE, META_ROLLED_BACK, META_ROLLOUT, META_STOPPED_BY_SCALE, AppView, LeaseHeld, clients_for,
    image_of, matches, mixed_warning, read_json,
)
from ansible_collections.hotelbot.ops.plugins.module_utils.poll import CHECKS, Deadline, PollTimeout, poll

ROLLOUT_STATES = ('COMPLETED', 'FAILED', 'REVERTED', 'STOPPED')
# One call of the wait endpoint waits at most this long (Fly allows 60 s): between two calls the
# Machine is read, so one that stopped instead of starting is noticed within this many seconds.
WAIT_CALL_S = 5
FAILED_STATES = ('stopped', 'failed', 'destroyed', 'suspended')
SCALE_CHOICES = ('stop', 'restore')


class MachineFailed(Exception):
    """A Machine that did not come up on the target image (did not start, or a check went critical)."""

    def __init__(self, machine_id, reason):
        super(MachineFailed, self).__init__(reason)
        self.machine_id = machine_id
        self.reason = reason


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def utc_text(moment=None):
    return (moment or utc_now()).strftime('%Y-%m-%dT%H:%M:%SZ')


def unavailable_count(value, group_size):
    """max_unavailable as a Machine count: an int >= 1, or a fraction 0 < f <= 1 of the group (at least
    one Machine, rounded down so no more than that share is ever out)."""
    problem = 'max_unavailable must be a count of at least 1 or a fraction above 0 and at most 1, got %r' % (value,)
    if isinstance(value, bool) or value is None:
        raise OpsError(problem)
    text = str(value).strip()
    try:
        number = int(text) if text.isdigit() else float(text)
    except ValueError:
        raise OpsError(problem)
    if isinstance(number, int):
        if number < 1:
            raise OpsError(problem)
        return number
    if not 0 < number <= 1 or math.isnan(number):
        raise OpsError(problem)
    return max(1, int(math.floor(number * group_size + 1e-9)))


def seconds(value, option):
    try:
        return parse_duration(value, option, positive=True)
    except ValueError as err:
        raise OpsError(str(err))


def holder_text(machine_id, lease):
    """Who holds a Machine's lease, for the refusal: owner, description, expiry."""
    if not lease:
        return 'Machine %s is leased by another holder' % machine_id
    expires = lease.get('expires_at')
    until = utc_text(datetime.datetime.fromtimestamp(expires, datetime.timezone.utc)) if expires else 'unknown'
    return 'Machine %s is leased by %s (%s) until %s' % (
        machine_id, lease.get('owner') or 'an unknown owner', lease.get('description') or 'no description', until)


def names_owner(lease, owner):
    """Whether a lease's description names owner (release_lock writes JSON with an `owner`)."""
    if not lease or not owner:
        return False
    description = lease.get('description') or ''
    parsed = read_json(description)
    return parsed.get('owner') == owner if parsed else owner in description


def check_options(params):
    """What the spec cannot say: release and image exclusive also when release is given as current by a play."""
    image = params.get('image')
    if image is not None and not image.strip():
        raise OpsError('image must not be empty')
    if params.get('scale') and (image or str(params.get('release') or 'current') != 'current'):
        raise OpsError('scale keeps the image: give it without image and with release current (or none)')


def release(task, clients=None, sleep=time.sleep, clock=time.monotonic):
    """fly_release's work. clients: (FlyMachines, FlyGraphQL) stand-ins for tests."""
    check_options(task.params)
    machines_api, graphql = clients or clients_for(task)
    roll = Roll(task, machines_api, graphql, sleep, clock)
    try:
        return roll.run()
    except OpsError as err:
        if 'rollout_state' not in err.result:
            # A failure below the steps (the API down while writing the ledger): still every result key.
            result = roll.result(err.msg, reread=False)
            del result['msg'], result['changed']
            err.result.update(result)
            err.changed = err.changed or roll.changed
        raise


class Roll:
    """One run of fly_release. run() lists the steps; each is a method below it."""

    def __init__(self, task, machines_api, graphql, sleep, clock):
        self.task = task
        self.params = task.params
        self.api = machines_api
        self.graphql = graphql
        self.sleep = sleep
        self.clock = clock
        self.deployment_id = 'hotelbot-%s' % utc_now().strftime('%Y%m%dT%H%M%SZ')
        self.wait_timeout = self.lease_ttl = None
        self.started = clock()
        self.began_at = time.time()   # wall clock: Fly's event timestamps are epoch milliseconds
        self.deadline = None
        self.events = []
        self.updated = []
        self.lock_nonces = {}    # Machine id -> the nonce of the release lock's lease (kept held)
        self.held = {}           # Machine id -> the nonce of a lease this run took (given back)
        self.held_since = {}     # Machine id -> (when its lease was taken or last refreshed, its description)
        self.waited = 0.0
        self.changed = False
        self.app = self.target = self.reason = None
        self.todo = []
        self.images_before = {}
        self.rollout_state = None
        self.marked = False
        self.seen = {}           # Machine id -> {image, state, checks} read after the roll
        self.batch_size = 1

    def run(self):
        self.wait_timeout = seconds(self.params['wait_timeout'], 'wait_timeout')
        self.lease_ttl = max(1, int(seconds(self.params['lease_ttl'], 'lease_ttl')))
        unavailable_count(self.params['max_unavailable'], 1)   # its form, before any call
        self.read_app()
        self.guard_expected_current()
        if self.params.get('scale'):
            return self.scale()
        self.resolve_target()
        self.plan()
        if self.task.check_mode:
            return self.result(self.plan_message())
        if self.todo or self.params.get('mark_stable'):
            # The ledger is written under the release lock's lease too, where that is on a Machine of the group.
            self.read_leases()
        if self.todo:
            self.mark_rollback()
            self.roll()
        self.mark_stable()
        return self.result(self.done_message())

    # ------------------------------------------------------------------ reading
    def read_app(self):
        params = self.params
        self.app = AppView(self.api, self.graphql, params['app'], params['process_group'])
        self.images_before = dict((m['id'], image_of(m)) for m in self.app.machines)
        if self.app.mixed:
            self.task.warn(mixed_warning(self.app.app, self.app.running))
            self.event('the Machines disagree: ' + mixed_warning(self.app.app, self.app.running))

    def guard_expected_current(self):
        expected = self.params.get('expected_current')
        if expected is not None and str(expected).strip() and not matches(expected, self.app.current):
            self.refuse('expected %s to run %s, but it runs %s; nothing was changed (read the release again)'
                        % (self.app.app, expected, self.app.current['label']))

    def resolve_target(self):
        try:
            self.target, self.reason = self.app.resolve(self.params.get('release'), self.image())
        except OpsError as err:
            self.refuse(err.msg)

    def image(self):
        image = self.params.get('image')
        return image.strip() if image else None

    def plan(self):
        force = self.params.get('force')
        self.todo = [m for m in self.app.machines if force or image_of(m) != self.target['image_ref']]
        self.batch_size = unavailable_count(self.params['max_unavailable'], len(self.app.machines))

    def read_leases(self):
        """Every lease on the group: the release lock's is used, someone else's on a Machine to update
        refuses the roll before anything changes."""
        todo = set(m['id'] for m in self.todo)
        now = time.time()
        for machine in self.app.machines:
            lease = self.api.lease(machine['id'])
            if not lease or (lease.get('expires_at') and lease['expires_at'] < now):
                continue
            if names_owner(lease, self.params.get('lock_owner')):
                self.lock_nonces[machine['id']] = lease.get('nonce')
            elif machine['id'] in todo:
                self.refuse('%s; refused before changing anything (wait for it, or clear a dead run\'s lease '
                            'with `fly machine leases clear %s`)' % (holder_text(machine['id'], lease), machine['id']))

    # ------------------------------------------------------------------ the ledger
    def mark_rollback(self):
        """Before a roll back (to previous, or to an older release named by its version, as the playbooks
        name the target preflight resolved): record where it lands, so previous re-run stays there."""
        current, target = self.app.current.get('release'), self.target.get('release')
        older = current is not None and target is not None and target < current
        if self.image() or not (older or str(self.params.get('release') or '').strip() == 'previous'):
            return
        mark = json.dumps(dict(from_image=self.app.current['image_ref'], to_image=self.target['image_ref'],
                               at=utc_text()), sort_keys=True)
        for machine in self.app.machines:
            self.api.set_metadata(machine['id'], META_ROLLED_BACK, mark, nonce=self.lock_nonces.get(machine['id']))
        self.changed = True
        self.event('rollback marker %s written: %s -> %s'
                   % (META_ROLLED_BACK, self.app.current['label'], self.target['label']))

    def mark_stable(self):
        """After a verified roll (or on what already runs): the ledger on every Machine of the group,
        refused when a Machine does not run the target (read again now, not as planned)."""
        if not self.params.get('mark_stable'):
            return
        if self.task.check_mode:
            machines = self.app.machines
            images = dict((m['id'], self.image_after(m['id'])) for m in machines)
        else:
            machines = [m for m in self.api.machines() if m['id'] in self.images_before]
            images = dict((m['id'], image_of(m)) for m in machines)
        wrong = sorted(mid for mid, image in images.items() if image != self.target['image_ref'])
        if wrong:
            self.refuse('not marking %s stable: Machines %s do not run it; nothing was marked'
                        % (self.target['label'], ', '.join(wrong)))
        self.marked = True
        marks = [read_json(((m.get('config') or {}).get('metadata') or {}).get(META_LAST_STABLE)) for m in machines]
        if all(mark and mark.get('image') == self.target['image_ref'] and mark.get('release') == self.target['release']
               for mark in marks) or self.task.check_mode:
            return
        mark = json.dumps(dict(image=self.target['image_ref'], release=self.target['release'], at=utc_text()),
                          sort_keys=True)
        for machine in machines:
            self.api.set_metadata(machine['id'], META_LAST_STABLE, mark, nonce=self.lock_nonces.get(machine['id']))
        self.changed = True
        self.event('marked %s stable (%s on %d Machines)' % (self.target['label'], META_LAST_STABLE, len(machines)))

    # ------------------------------------------------------------------ the roll
    def roll(self):
        self.deadline = Deadline(self.wait_timeout, self.clock)
        try:
            for start in range(0, len(self.todo), self.batch_size):
                self.roll_batch(self.todo[start:start + self.batch_size])
        except MachineFailed as failure:
            self.give_back_leases()
            self.fail(failure)
        except (OpsError, LeaseHeld) as err:
            self.give_back_leases()
            self.stop(err)
        self.rollout_state = 'COMPLETED'

    def roll_batch(self, batch):
        updated = []
        try:
            for machine in batch:
                new = self.update(machine, self.target['image_ref'])
                if new is not None:
                    updated.append(new)
            for machine in updated:
                self.wait_started(machine)
                self.wait_checks(machine['id'])
                self.api.set_metadata(machine['id'], META_ROLLOUT, self.deployment_id, nonce=self.nonce(machine['id']))
                self.event('%s: %s, checks passing' % (self.machine_label(machine['id']), self.target['label']))
        finally:
            self.give_back_leases()

    def update(self, machine, image):
        """Lease, read again, and update the Machine with its config with only image changed; the Machine
        as Fly answered (its new instance), or None when it already runs image (and force is off)."""
        machine_id = machine['id']
        self.take_lease(machine_id, 'roll %s to %s' % (machine_id, image))
        fresh = self.api.machine(machine_id)
        if image_of(fresh) == image and not self.params.get('force') and machine_id not in self.updated:
            self.event('%s: already on %s' % (self.machine_label(machine_id), image))
            return None
        config = copy.deepcopy(fresh.get('config') or {})
        config['image'] = image
        self.task.progress('%s: updating Machine %s to %s' % (self.app.app, machine_id, image))
        new = self.api.update(machine_id, config, self.nonce(machine_id))
        self.changed = True
        if machine_id not in self.updated:
            self.updated.append(machine_id)
        self.event('%s: updated to %s (instance %s)' % (self.machine_label(machine_id), image, (new or {}).get('instance_id')))
        return new or fresh

    def take_lease(self, machine_id, purpose):
        if machine_id in self.lock_nonces:
            return
        description = json.dumps(dict(owner='hotelbot.ops.fly_release', purpose=purpose, deployment=self.deployment_id,
                                      host=socket.gethostname(), pid=os.getpid()), sort_keys=True)
        lease = self.api.acquire_lease(machine_id, self.lease_ttl, description)
        self.held[machine_id] = (lease or {}).get('nonce')
        self.held_since[machine_id] = (time.time(), description)

    def keep_leases(self):
        """During a long wait: refresh (with its nonce) each lease of ours a third of lease_ttl old, so a slow
        Machine is not left unleased half way; a dead run's leases still lapse within lease_ttl."""
        for machine_id, nonce in list(self.held.items()):
            since, description = self.held_since[machine_id]
            if time.time() - since >= self.lease_ttl / 3.0:
                self.api.acquire_lease(machine_id, self.lease_ttl, description, nonce=nonce)
                self.held_since[machine_id] = (time.time(), description)

    def nonce(self, machine_id):
        return self.lock_nonces.get(machine_id) or self.held.get(machine_id)

    def give_back_leases(self):
        """Every lease this run took goes back; one that cannot (the API is down) expires within lease_ttl."""
        for machine_id, nonce in list(self.held.items()):
            try:
                self.api.release_lease(machine_id, nonce)
            except OpsError as err:
                self.event('%s: lease not released (%s); it expires within %ds' % (machine_id, err.msg, self.lease_ttl))
            del self.held[machine_id]

    def wait_started(self, machine):
        """Until the Machine's new instance is started, in calls of the wait endpoint."""
        machine_id, instance_id = machine['id'], machine.get('instance_id')
        began = self.clock()
        try:
            while True:
                remaining = self.deadline.remaining()
                if remaining <= 0:
                    raise MachineFailed(machine_id, '%s did not start within wait_timeout (%gs)'
                                        % (self.machine_label(machine_id), self.wait_timeout))
                # Short enough for keep_leases() to refresh our leases in between.
                if self.api.wait(machine_id, instance_id, 'started', min(WAIT_CALL_S, remaining, max(1, self.lease_ttl // 3))):
                    return
                seen = self.api.machine(machine_id)
                if seen.get('state') in FAILED_STATES and seen.get('instance_id') == instance_id:
                    raise MachineFailed(machine_id, '%s is %s instead of started on %s%s' % (
                        self.machine_label(machine_id), seen.get('state'), image_of(seen), exit_text(seen)))
                self.task.progress('%s: Machine %s is %s, waiting for started' % (self.app.app, machine_id, seen.get('state')))
                self.keep_leases()
        finally:
            self.waited += self.clock() - began

    def wait_checks(self, machine_id):
        """Until every check of the Machine passes; a critical one fails it."""
        began = self.clock()

        def probe(_deadline):
            self.keep_leases()
            seen = self.api.machine(machine_id)
            expected = set(((seen.get('config') or {}).get('checks') or {}).keys())
            statuses = dict((c.get('name'), c.get('status')) for c in seen.get('checks') or [])
            critical = sorted(name for name, status in statuses.items() if status == 'critical')
            if critical:
                raise MachineFailed(machine_id, '%s: check %s critical on %s' % (
                    self.machine_label(machine_id), ', '.join(critical), image_of(seen)))
            if seen.get('state') in FAILED_STATES:
                raise MachineFailed(machine_id, '%s is %s%s' % (self.machine_label(machine_id), seen.get('state'), exit_text(seen)))
            if expected <= set(statuses) and all(status == 'passing' for status in statuses.values()):
                return seen
            return None

        try:
            poll(probe, max(0.0, self.deadline.remaining()), CHECKS, sleep=self.sleep, clock=self.clock,
                 progress=lambda waited: self.task.progress('%s: Machine %s checks not passing yet, %.0fs'
                                                            % (self.app.app, machine_id, waited)))
        except PollTimeout:
            raise MachineFailed(machine_id, '%s: checks not passing within wait_timeout (%gs)'
                                % (self.machine_label(machine_id), self.wait_timeout))
        finally:
            self.waited += self.clock() - began

    # ------------------------------------------------------------------ failure
    def fail(self, failure):
        """A Machine did not come up: the untouched ones stay; with revert the updated ones go back."""
        self.event(failure.reason)
        self.fly_events(failure.machine_id)
        untouched = [m['id'] for m in self.app.machines if m['id'] not in self.updated]
        msg = '%s; the roll to %s stopped' % (failure.reason, self.target['label'])
        if untouched:
            msg += ' (untouched, still on their image: %s)' % ', '.join(untouched)
        if self.params.get('on_failure') == 'revert' and self.updated:
            reverted, problems = self.revert()
            self.rollout_state = 'REVERTED'
            msg += '; reverted %s to their image before' % ', '.join(reverted)
            if problems:
                msg += ' (not all: %s)' % '; '.join(problems)
        else:
            self.rollout_state = 'FAILED'
            if self.updated:
                msg += '; updated and left as they are (on_failure=stop): %s' % ', '.join(self.updated)
        self.refuse(msg + '; nothing was marked stable')

    def revert(self):
        reverted, problems = [], []
        for machine_id in list(reversed(self.updated)):
            before = self.images_before[machine_id]
            try:
                self.deadline = Deadline(self.wait_timeout, self.clock)
                new = self.update(dict(id=machine_id), before)
                if new is not None:
                    self.wait_started(new)
                reverted.append(machine_id)
                self.event('%s: reverted to %s' % (self.machine_label(machine_id), before))
            except (OpsError, LeaseHeld, MachineFailed) as err:
                problems.append('%s: %s' % (machine_id, getattr(err, 'msg', None) or getattr(err, 'reason', None) or err))
            finally:
                self.give_back_leases()
        return reverted, problems

    def stop(self, err):
        """The API failed (or a lease was taken by someone) mid-roll: stop where we are, say how to converge."""
        reason = holder_text(err.machine_id, err.holder) if isinstance(err, LeaseHeld) else err.msg
        self.rollout_state = 'STOPPED'
        msg = ('the roll to %s stopped: %s; updated so far: %s; a lease not given back lapses within %ds; re-run to '
               'converge (Machines already on it are not updated again)'
               % (self.target['label'], reason, ', '.join(self.updated) or 'none', self.lease_ttl))
        self.event(msg)
        self.refuse(msg, reread=False)

    def fly_events(self, machine_id):
        """The failed Machine's own events since this run began, oldest first (what Fly saw it do)."""
        since_ms = (self.began_at - 1) * 1000
        try:
            recent = [e for e in self.api.events(machine_id) or [] if (e.get('timestamp') or 0) >= since_ms]
            for entry in sorted(recent, key=lambda e: e.get('timestamp') or 0)[-8:]:
                self.event('%s: Fly event %s %s%s' % (machine_id, entry.get('type'), entry.get('status'),
                                                      exit_text(dict(events=[entry]))))
        except OpsError:
            pass  # the events only explain; the failure is already known

    # ------------------------------------------------------------------ scale
    def scale(self):
        """stop: stop every started Machine of the group, recording it; restore: start those again."""
        self.target, self.reason = self.app.current, 'scale keeps the release'
        stopping = self.params['scale'] == 'stop'
        if stopping:
            self.todo = [m for m in self.app.machines if m.get('state') == 'started']
        else:
            self.todo = [m for m in self.app.machines if (m.get('config') or {}).get('metadata', {}).get(META_STOPPED_BY_SCALE)]
        if self.task.check_mode or not self.todo:
            self.rollout_state = 'COMPLETED'
            return self.result('would %s %s' % (self.params['scale'], ', '.join(m['id'] for m in self.todo))
                               if self.todo else 'nothing to %s' % self.params['scale'])
        self.deadline = Deadline(self.wait_timeout, self.clock)
        self.read_leases()
        try:
            for machine in self.todo:
                self.scale_one(machine, stopping)
        except (OpsError, LeaseHeld) as err:
            self.give_back_leases()
            self.stop(err)
        except MachineFailed as failure:
            self.give_back_leases()
            self.rollout_state = 'FAILED'
            self.refuse(failure.reason)
        self.rollout_state = 'COMPLETED'
        verb = 'stopped' if stopping else 'started'
        return self.result('%s %s' % (verb, ', '.join(m['id'] for m in self.todo)))

    def scale_one(self, machine, stopping):
        machine_id = machine['id']
        try:
            self.take_lease(machine_id, 'scale %s' % self.params['scale'])
            if stopping:
                mark = json.dumps(dict(by=self.deployment_id, at=utc_text()), sort_keys=True)
                self.api.set_metadata(machine_id, META_STOPPED_BY_SCALE, mark, nonce=self.nonce(machine_id))
                self.api.stop(machine_id, nonce=self.nonce(machine_id))
                self.changed = True
                self.wait_state(machine_id, 'stopped')
            else:
                self.api.start(machine_id, nonce=self.nonce(machine_id))
                self.changed = True
                self.wait_state(machine_id, 'started')
                self.api.delete_metadata(machine_id, META_STOPPED_BY_SCALE, nonce=self.nonce(machine_id))
            self.updated.append(machine_id)
            self.event('%s: %s' % (self.machine_label(machine_id), 'stopped' if stopping else 'started'))
        finally:
            self.give_back_leases()

    def wait_state(self, machine_id, state):
        began = self.clock()
        try:
            while not self.api.wait(machine_id, None, state, min(WAIT_CALL_S, max(1, self.deadline.remaining()))):
                if self.deadline.passed():
                    raise MachineFailed(machine_id, '%s not %s within wait_timeout' % (machine_id, state))
        finally:
            self.waited += self.clock() - began

    # ------------------------------------------------------------------ the result
    def refuse(self, msg, reread=True):
        """Fail with msg and every result key (a failed run still says what it did and where each Machine is)."""
        result = dict((key, value) for key, value in self.result(msg, reread).items() if key not in ('msg', 'changed'))
        raise OpsError(msg, self.changed, **result)

    def event(self, text):
        self.events.append('%s %s' % (utc_text(), text))

    def machine_label(self, machine_id):
        machine = next((m for m in self.app.machines if m['id'] == machine_id), {})
        return '%s (%s)' % (machine_id, machine.get('region') or '?')

    def image_after(self, machine_id):
        if self.task.check_mode and any(m['id'] == machine_id for m in self.todo) and not self.params.get('scale'):
            return self.target['image_ref']
        return self.seen.get(machine_id, {}).get('image', self.images_before.get(machine_id))

    def reread(self):
        """The Machines as they are now (after a roll), or as last known when the API does not answer."""
        self.seen = {}
        if self.task.check_mode or not self.changed:
            return
        try:
            for machine in self.api.machines():
                self.seen[machine['id']] = dict(image=image_of(machine), state=machine.get('state'),
                                                checks=[dict(name=c.get('name'), status=c.get('status'))
                                                        for c in machine.get('checks') or []])
        except OpsError:
            self.seen = {}

    def machines_result(self):
        rows = []
        for machine in self.app.machines:
            now = self.seen.get(machine['id'], {})
            rows.append(dict(id=machine['id'], region=machine.get('region'), image_before=self.images_before[machine['id']],
                             image_after=self.image_after(machine['id']), state=now.get('state', machine.get('state')),
                             checks=now.get('checks', [dict(name=c.get('name'), status=c.get('status'))
                                                       for c in machine.get('checks') or []]),
                             updated=machine['id'] in self.updated))
        return rows

    def result(self, msg, reread=True):
        if reread:
            self.reread()
        app, target = self.app, self.target
        current = app.current if app else None
        machines = self.machines_result() if app else []
        return dict(
            changed=self.changed or (self.task.check_mode and bool(self.todo)), msg=msg,
            app=self.params['app'], process_group=self.params['process_group'],
            **{'from': current['label'] if current else None},
            to=target['label'] if target else None, to_id=target['id'] if target else None,
            to_images=target['images'] if target else [],
            from_release=current['release'] if current else None, to_release=target['release'] if target else None,
            reason=self.reason, machines=machines, updated=list(self.updated), events=list(self.events),
            deployment_id=self.deployment_id if self.updated else None,
            rollout_state=self.rollout_state, waited_s=round(self.waited, 3),
            elapsed_s=round(self.clock() - self.started, 3), marked_stable=self.marked,
            diff=dict(before=dict(machines=dict((m['id'], m['image_before']) for m in machines)),
                      after=dict(machines=dict((m['id'], m['image_after']) for m in machines))),
        )

    def plan_message(self):
        if not self.todo:
            return '%s already runs %s on every Machine of %s; nothing to do' % (self.params['app'], self.target['label'], self.params['process_group'])
        return 'would update %d Machines (%s) from %s to %s, %d at a time (%s)' % (
            len(self.todo), ', '.join(m['id'] for m in self.todo), self.app.current['label'], self.target['label'],
            self.batch_size, self.reason)

    def done_message(self):
        if not self.updated:
            msg = '%s runs %s on every Machine of %s; nothing to do' % (self.params['app'], self.target['label'], self.params['process_group'])
        else:
            msg = 'updated %d Machines (%s) from %s to %s (%s)' % (
                len(self.updated), ', '.join(self.updated), self.app.current['label'], self.target['label'], self.reason)
        if self.marked:
            msg += '; %s marked stable' % self.target['label']
        return msg


def exit_text(machine):
    """The newest exit event of a Machine, as ' (exit: ...)', or ''."""
    for entry in machine.get('events') or []:
        if entry.get('type') == 'exit':
            request = entry.get('request') or {}
            detail = request.get('exit_event') or request
            return ' (exit event: %s)' % json.dumps(detail, sort_keys=True)[:200]
    return ''
