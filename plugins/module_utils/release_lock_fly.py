# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release lease as a Fly Machine lease: the Fly platform's own primitive, no database needed.

Only storage lives here; what a lease means (held, renewed, taken over, broken) is decided once in
release_lock.py (acquire_optimistic, release_optimistic), as for DynamoDB. The lock `fly/<app>` is the
lease of the app's lock Machine: its oldest Machine, so every run picks the same one. Fly is the
arbiter: POST .../lease without a nonce succeeds only where no unexpired lease is held (409 otherwise),
with our nonce it refreshes our lease; DELETE needs the nonce. The lease's description is JSON naming
our owner, purpose, host, OS user and when it was acquired (what a refusal shows); Fly's own `owner` is
the token's user, the same for every run of a team, so it does not tell runs apart. Expiry is Fly's
(`expires_at`, Unix seconds). Breaking a dead run's lease reads its nonce with GET lease (as
`fly machine leases clear` does) and deletes it; the audit record is written first to the lock Machine's
metadata `hotelbot.ops/lock-broken`, so there is no break without its record.
"""

from __future__ import absolute_import, division, print_function

import json
import time
import uuid

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, Task
from ansible_collections.hotelbot.ops.plugins.module_utils.fly import API_URL, FlyMachines, LeaseHeld, read_json, transport_for

META_LOCK_BROKEN = 'hotelbot.ops/lock-broken'
NAME_PREFIX = 'fly/'


def app_of(name):
    """The app of a lock name `fly/<app>`; OpsError otherwise."""
    app = name[len(NAME_PREFIX):] if name.startswith(NAME_PREFIX) else ''
    if not app or '/' in app:
        raise OpsError('name must be fly/<app> with backend=fly (the lease is on a Machine of that app), got %r' % name)
    return app


class FlyLeases:
    """Release leases as the lease of an app's lock Machine (see the module docstring).

    A lease is the dict release_lock's helpers take (name, owner, purpose, acquired_at, renewed_at,
    expires_at as epoch seconds, host, os_user) plus `version`: the Fly lease nonce, which a later write names.
    """

    backend = 'fly'

    def __init__(self, params, name, clock=time.time, api=None):
        self.params = params
        self.app = app_of(name)
        self.clock = clock
        self._api = api
        self._machine_id = None

    @property
    def api(self):
        if self._api is None:
            transport = transport_for(Task(self.params, hide=lambda *values: None))
            self._api = FlyMachines(transport, self.params.get('api_url') or API_URL, self.app)
        return self._api

    @property
    def machine_id(self):
        """The lock Machine: the oldest Machine of the app (every run picks the same one)."""
        if self._machine_id is None:
            machines = self.api.machines()
            if not machines:
                raise OpsError('Fly app %s has no Machine to hold the release lock lease' % self.app)
            self._machine_id = machines[0]['id']
        return self._machine_id

    def label(self):
        return 'Fly Machine lease of %s' % self.app

    # ------------------------------------------------------------------ leases
    def read(self, name):
        """The lease on the lock Machine as a release lease, or None. A lease not written by release_lock (a
        deploy's) is shown with Fly's owner and its description, so the refusal names it all the same."""
        lease = self.api.lease(self.machine_id)
        if not lease:
            return None
        mine = read_json(lease.get('description')) or {}
        expires = float(lease.get('expires_at') or 0)
        owner = mine.get('owner') or '%s (%s)' % (lease.get('owner') or 'unknown', lease.get('description') or 'no description')
        return dict(name=name, owner=owner, purpose=mine.get('purpose') or '', acquired_at=mine.get('acquired_at') or expires,
                    renewed_at=mine.get('renewed_at'), expires_at=expires, host=mine.get('host'),
                    os_user=mine.get('os_user'), version=lease.get('nonce'), machine_id=self.machine_id)

    @staticmethod
    def description(lease):
        return json.dumps(dict((key, lease.get(key)) for key in ('owner', 'purpose', 'host', 'os_user', 'acquired_at')
                               if lease.get(key) is not None), sort_keys=True)

    def _ttl(self, lease):
        return max(1, int(round(lease['expires_at'] - self.clock())))

    def write(self, lease, before):
        """Take (before None, or an expired lease) or refresh (before ours: its nonce) the lease; False when Fly
        says another holder has it."""
        nonce = before['version'] if before is not None and before['owner'] == lease['owner'] else None
        try:
            self.api.acquire_lease(self.machine_id, self._ttl(lease), self.description(lease), nonce=nonce)
        except LeaseHeld:
            return False
        return True

    def delete(self, before):
        """Give the lease back with its nonce; False when it is no longer that lease."""
        return self.api.release_lease(self.machine_id, before['version'])

    def break_lease(self, before, event):
        """Record the break on the lock Machine, then clear the lease with the nonce GET lease gave:
        {event_id, at}, or None when the lease changed in between."""
        current = self.api.lease(self.machine_id)
        if not current or current.get('nonce') != before['version']:
            return None
        event_id = uuid.uuid4().hex[:16]
        at = self.clock()
        record = dict(event_id=event_id, at=at, event=event.get('event'), owner=before['owner'],
                      purpose=before.get('purpose') or '', broken_by=event.get('broken_by'), host=event.get('host'),
                      os_user=event.get('os_user'), expires_at=before['expires_at'])
        self.api.set_metadata(self.machine_id, META_LOCK_BROKEN, json.dumps(record, sort_keys=True),
                              nonce=before['version'])
        if not self.api.release_lease(self.machine_id, before['version']):
            return None
        return dict(event_id=event_id, at=at)

    def renew(self, name, owner, ttl):
        """The heartbeat: refresh the lease while it is still owner's and unexpired; False otherwise."""
        lease = self.read(name)
        if lease is None or lease['owner'] != owner or lease['expires_at'] <= self.clock():
            return False
        try:
            self.api.acquire_lease(self.machine_id, int(max(1, ttl)), self.description(
                dict(lease, renewed_at=self.clock())), nonce=lease['version'])
        except LeaseHeld:
            return False
        return True
