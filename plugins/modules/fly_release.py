#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: fly_release
short_description: Roll a Fly.io app's Machines to a release's image (or a new image), lease by lease
version_added: 0.1.0
description:
  - Fly has no C(rollback) command; a rollback is a deploy of an older release's image. This module does it on
    the Machines API, for each Machine of O(process_group) not already on the target image, O(max_unavailable)
    at a time. It takes the Machine's lease (when another holder has it the run is refused before anything
    changes, naming the holder's owner, description and expiry); reads the Machine again under the lease;
    updates it with its B(whole current config with only the image changed) (services, checks, env, mounts,
    metadata, guest, restart policy stay as they are) sending the lease nonce; waits until the new instance is
    C(started) (Fly's wait endpoint, in calls of at most 5 s, so a Machine that stops instead is noticed soon, within O(wait_timeout)) and then until every
    check is C(passing); and gives the lease back, on success and on failure alike.
  - A Machine that does not start, or whose check goes C(critical), stops the roll. The Machines not touched yet
    stay as they were; with O(on_failure=revert) the ones already updated go back to their image. The result
    lists every Machine's image and state either way.
  - B(Ledger.) The Machines API creates no Fly release, so the ledger is kept in Machine metadata on every
    Machine of the group. Before a roll to V(previous) the rollback marker C(hotelbot.ops/rolled-back)
    (C({"from_image", "to_image", "at"})) is written, so re-running V(previous) resolves to what runs and does not
    walk back twice. O(mark_stable=true) writes C(hotelbot.ops/last-stable) (C({"image", "release", "at"})) after
    the Machines were verified on the target (read again), and V(last_stable) resolves to it. Each updated Machine
    gets C(hotelbot.ops/rollout) = the run's RV(deployment_id).
  - Idempotent. A second identical run reports C(changed=false); after a run that stopped half way (the API went
    down), a re-run updates only the Machines not yet on the target.
  - O(scale=stop) stops every started Machine of the group, recording each in metadata
    C(hotelbot.ops/stopped-by-scale); O(scale=restore) starts those again and removes the record.
author:
  - hotelbot.ops maintainers (@hotelbot)
attributes:
  check_mode:
    support: full
    description: Lists the Machines and what would change (image before and after), changes nothing, takes no lease.
  diff_mode:
    support: full
    description: Shows each Machine's image before and after.
extends_documentation_fragment:
  - hotelbot.ops.fly
options:
  app:
    description: The Fly app.
    type: str
    required: true
  release:
    description:
      - The release whose image to run (as M(hotelbot.ops.fly_release_info) resolves it).
      - V(previous), V(last_stable), V(current) or a release version number (V(3) or V(v3)).
      - Mutually exclusive with O(image). When neither is given, V(current) (to scale, force or mark stable).
    type: raw
  image:
    description: Run this image ref (a hot-patch), for example V(registry.fly.io/hotel-voice-bot:1.2.1).
    type: str
  process_group:
    description: The process group to roll.
    type: str
    default: app
  max_unavailable:
    description:
      - How many Machines are updated at once, a count (V(1), V(2)) or a fraction of the group above 0 and at most 1
        (V(0.5) is half of it, rounded down, at least one).
    type: raw
    default: 1
  wait_timeout:
    description: How long the whole roll may wait for Machines to start and pass their checks (seconds or V(10m)).
    type: raw
    default: 600
  lease_ttl:
    description: The time-to-live of each Machine lease this run takes (seconds or a duration); a run that dies leaves
      leases that lapse after it.
    type: raw
    default: 60
  on_failure:
    description: What a failed Machine does to the ones already updated; V(stop) leaves them, V(revert) puts them back.
    type: str
    choices: [stop, revert]
    default: stop
  mark_stable:
    description: After the Machines run the target (verified), record it as the last stable release.
    type: bool
    default: false
  expected_current:
    description:
      - An id (a release version or an image ref) or label, as M(hotelbot.ops.fly_release_info) returns them in
        C(current). The run is refused, changing nothing, when something else runs.
    type: raw
  force:
    description: Update the Machines already on the target image too (a redeploy).
    type: bool
    default: false
  scale:
    description:
      - V(stop) stops every started Machine of the group, recording it; V(restore) starts the ones recorded.
      - Not with O(image) or a O(release) other than V(current).
    type: str
    choices: [stop, restore]
  lock_owner:
    description:
      - The owner of this run's release lock (M(hotelbot.ops.release_lock) with C(backend=fly)). A lease whose
        description names this owner is used (its nonce read with the lease) instead of refused, and left held.
    type: str
seealso:
  - module: hotelbot.ops.fly_release_info
  - module: hotelbot.ops.release_lock
'''

EXAMPLES = r'''
- name: Roll back to the previous release, reverting if a Machine does not come up
  hotelbot.ops.fly_release:
    app: hotel-voice-bot
    release: previous
    on_failure: revert
    expected_current: 5
  register: fly_rollback

- name: Hot-patch an image, two Machines at a time
  hotelbot.ops.fly_release:
    app: hotel-voice-bot
    image: registry.fly.io/hotel-voice-bot:1.2.1
    max_unavailable: 2

- name: Record the verified release as stable
  hotelbot.ops.fly_release:
    app: hotel-voice-bot
    release: current
    expected_current: 3
    mark_stable: true
'''

RETURN = r'''
msg:
  description: What was done (in check mode, what would be done), or why not.
  returned: always
  type: str
app:
  description: The app.
  returned: always
  type: str
from:
  description: The label of what ran before (V(v5), or an image ref).
  returned: always
  type: str
to:
  description: The label of the target; null when none was resolved.
  returned: always
  type: str
to_id:
  description: The id of the target (a release version, or the image ref).
  returned: always
  type: raw
to_images:
  description: The target's image refs.
  returned: always
  type: list
  elements: str
from_release:
  description: The Fly release version that ran before, null when its image is of no release.
  returned: always
  type: int
to_release:
  description: The Fly release version of the target, null when its image is of no release.
  returned: always
  type: int
reason:
  description: Why the target is that release.
  returned: always
  type: str
machines:
  description: Every Machine of the group after the run (in check mode, as planned).
  returned: always
  type: list
  elements: dict
  sample: [{id: 3d8d9014b32d58, region: ams, image_before: registry.fly.io/hotel-voice-bot:1.3.0-bad,
            image_after: registry.fly.io/hotel-voice-bot:1.2.0, state: started, checks: [{name: http, status: passing}],
            updated: true}]
updated:
  description: The ids of the Machines updated (or started/stopped by O(scale)).
  returned: always
  type: list
  elements: str
events:
  description: What happened, newest last, for people.
  returned: always
  type: list
  elements: str
deployment_id:
  description: This run's id C(hotelbot-<utc stamp>), written to metadata C(hotelbot.ops/rollout); null when nothing was updated.
  returned: always
  type: str
rollout_state:
  description: V(COMPLETED), V(FAILED) (a Machine did not come up), V(REVERTED), V(STOPPED) (the API failed or a lease was
    taken mid-roll); null when nothing was rolled.
  returned: always
  type: str
waited_s:
  description: Seconds waited for Machines.
  returned: always
  type: float
elapsed_s:
  description: Seconds the run took.
  returned: always
  type: float
marked_stable:
  description: Whether the target is recorded as the last stable release.
  returned: always
  type: bool
diff:
  description: Each Machine's image before and after.
  returned: with --diff
  type: dict
'''

from ansible_collections.hotelbot.ops.plugins.module_utils.common import run
from ansible_collections.hotelbot.ops.plugins.module_utils.fly import fly_argument_spec
from ansible_collections.hotelbot.ops.plugins.module_utils.fly_roll import release

SPEC = dict(
    argument_spec=fly_argument_spec(
        app=dict(type='str', required=True),
        release=dict(type='raw'),
        image=dict(type='str'),
        process_group=dict(type='str', default='app'),
        max_unavailable=dict(type='raw', default=1),
        wait_timeout=dict(type='raw', default=600),
        lease_ttl=dict(type='raw', default=60),
        on_failure=dict(type='str', default='stop', choices=['stop', 'revert']),
        mark_stable=dict(type='bool', default=False),
        expected_current=dict(type='raw'),
        force=dict(type='bool', default=False),
        scale=dict(type='str', choices=['stop', 'restore']),
        lock_owner=dict(type='str'),
    ),
    mutually_exclusive=[('release', 'image')],
)


def main():
    run(SPEC, release)


if __name__ == '__main__':
    main()
