#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: fly_release_info
short_description: Show what a Fly.io app runs and what it could be rolled back to
version_added: 0.1.0
description:
  - Reads an app's releases from Fly's GraphQL API (newest first) and the Machines of one process group from the
    Machines API (id, region, state, image, instance, checks, metadata), and says which release runs.
  - The current release is the one whose image the Machines run. When they disagree (a half-finished deploy)
    RV(mixed) is true, RV(images_running) says which Machine runs what, a warning says so too, and the current
    release is the newest one among the images running (so V(previous) is what ran before that deploy).
  - Resolves O(release) (or O(image)) into RV(target) exactly as M(hotelbot.ops.fly_release) would roll to it.
  - Read only; runs the same in check mode.
author:
  - hotelbot.ops maintainers (@hotelbot)
extends_documentation_fragment:
  - hotelbot.ops.read_only
  - hotelbot.ops.fly
options:
  app:
    description: The Fly app.
    type: str
    required: true
  process_group:
    description: The process group whose Machines to read (C(config.metadata.fly_process_group), as C(fly deploy) sets it).
    type: str
    default: app
  release:
    description:
      - The release to resolve into RV(target).
      - V(previous) is the newest C(complete) release older than the current one with another image; right after a
        rollback to it, it stays there (the rollback marker, see M(hotelbot.ops.fly_release)).
      - V(last_stable) is the release last marked stable (Machine metadata C(hotelbot.ops/last-stable)), else the
        newest release Fly flags stable. V(current) is what runs. A number (or V(v3)) names a release.
      - Mutually exclusive with O(image).
    type: raw
    default: previous
  image:
    description: An image ref to resolve into RV(target) instead of a release (a hot-patch).
    type: str
  releases_limit:
    description: How many of the newest releases to read (1 to 200).
    type: int
    default: 25
seealso:
  - module: hotelbot.ops.fly_release
'''

EXAMPLES = r'''
- name: What runs, and what a rollback would go to
  hotelbot.ops.fly_release_info:
    app: hotel-voice-bot
    release: previous
  register: fly_info

- name: Show it
  ansible.builtin.debug:
    msg: "{{ fly_info.current.label }} -> {{ fly_info.target.label }} ({{ fly_info.reason }})"
'''

RETURN = r'''
app:
  description: The app.
  returned: always
  type: str
process_group:
  description: The process group read.
  returned: always
  type: str
releases:
  description: The releases, newest first.
  returned: always
  type: list
  elements: dict
  sample: [{version: 5, status: complete, description: Deploy image, reason: deploy,
            image_ref: registry.fly.io/hotel-voice-bot:1.3.0-bad, created_at: '2026-12-01T10:00:00Z',
            user: ops@example.com, stable: false}]
machines:
  description: The Machines of the process group, oldest first.
  returned: always
  type: list
  elements: dict
  sample: [{id: 3d8d9014b32d58, name: ams-1, region: ams, state: started, process_group: app,
            image_ref: registry.fly.io/hotel-voice-bot:1.3.0-bad, instance_id: 01J..., config_version: 01J...,
            checks: [{name: http, status: passing}], metadata: {fly_process_group: app}}]
mixed:
  description: Whether the Machines run different images.
  returned: always
  type: bool
images_running:
  description: Image ref -> the ids of the Machines running it.
  returned: always
  type: dict
current:
  description: >-
    What runs: C(id) (the release version, or the image ref when no release has that image), C(label) (V(v5) or
    the image ref), C(version) (the image tag, what the bot reports), C(images), C(image_ref), C(release) (the
    version or null).
  returned: always
  type: dict
  sample: {id: 5, label: v5, version: 1.3.0-bad, images: [registry.fly.io/hotel-voice-bot:1.3.0-bad],
           image_ref: registry.fly.io/hotel-voice-bot:1.3.0-bad, release: 5}
previous:
  description: The newest complete release older than the current one with another image, as RV(current); null when none.
  returned: always
  type: dict
last_stable:
  description: The release last marked stable, as RV(current); null when none.
  returned: always
  type: dict
target:
  description: O(release) or O(image) resolved, as RV(current).
  returned: always
  type: dict
changes:
  description: Whether rolling to RV(target) would update a Machine.
  returned: always
  type: bool
reason:
  description: Why RV(target) is that release.
  returned: always
  type: str
ledger:
  description: Where marking stable records it, for people.
  returned: always
  type: str
stable_mark:
  description:
    - The ledger's own mark (Machine metadata C(hotelbot.ops/last-stable)) - C(image), C(release) and C(at) - or
      null when the collection has marked no release stable yet (then RV(last_stable) is the newest release Fly
      flags stable).
  returned: always
  type: dict
environment:
  description: >-
    The environment variables the current release's Machines get, names only - C(defined) (their config C(env)
    set non-empty, and the app's secrets, which Fly sets in every Machine) and C(release) (the current label).
  returned: always
  type: dict
  sample: {release: v5, defined: [DATABASE_URL, LOG_LEVEL, OPENAI_API_KEY, PORT]}
lock_name:
  description: The release lock's name for this app (C(fly/<app>)).
  returned: always
  type: str
'''

from ansible_collections.hotelbot.ops.plugins.module_utils.common import run
from ansible_collections.hotelbot.ops.plugins.module_utils.fly import fly_argument_spec, release_info

SPEC = dict(
    argument_spec=fly_argument_spec(
        app=dict(type='str', required=True),
        process_group=dict(type='str', default='app'),
        release=dict(type='raw', default='previous'),
        image=dict(type='str'),
        releases_limit=dict(type='int', default=25, context=dict(min=1, max=200)),
    ),
    mutually_exclusive=[('release', 'image')],
)


def main():
    run(SPEC, release_info)


if __name__ == '__main__':
    main()
