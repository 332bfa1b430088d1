#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ecs_release_info
short_description: Show what an ECS service runs and what it could be rolled back to
version_added: 0.1.0
description:
  - Reads an ECS service and its task-definition family and returns the current revision, every
    revision of the family newest first (ACTIVE and INACTIVE, paginated), the previous ACTIVE
    revision, the last revision marked stable, deployments with their rollout state,
    desired/running counts and recent service events.
  - Optionally resolves a rollback O(target) exactly the way M(hotelbot.ops.ecs_release) would, shows one
    revision's container environment, and diffs the environment of two revisions.
  - Values of environment variables whose names look secret (password, secret, token, key, C(_PWD), C(_SK), ...)
    are masked whole; inside other values, URL passwords (also C(redis://:PW@host)), secret-named URL, JDBC,
    DSN and ADO.NET parameters, known token formats and webhook URLs are masked. The rule errs on the side
    of hiding (C(KEYBOARD_LAYOUT) is masked too). Masked parts are never shown in any output, even at -vvvv.
  - Read only; runs the same in check mode.
author:
  - hotelbot.ops maintainers (@hotelbot)
extends_documentation_fragment:
  - hotelbot.ops.read_only
  - hotelbot.ops.aws
  - hotelbot.ops.aws.ecs_service
options:
  target:
    description:
      - A revision spec to resolve, as M(hotelbot.ops.ecs_release) would, into RV(target).
      - V(current), V(previous), V(last_stable), a revision number, V(family:number) or a task definition ARN.
    type: raw
  environment_of:
    description: A revision spec (as for O(target)) whose container environment to return in RV(environment).
    type: raw
  diff_from:
    description: Revision spec of the old side of RV(environment_diff). Defaults to V(current) when O(diff_to) is set.
    type: raw
  diff_to:
    description: Revision spec of the new side of RV(environment_diff). Defaults to V(current) when O(diff_from) is set.
    type: raw
  events_limit:
    description: How many of the newest service events to return, 0 or more.
    type: int
    default: 10
seealso:
  - module: hotelbot.ops.ecs_release
'''

EXAMPLES = r'''
- name: What runs now, and what would a rollback go to
  hotelbot.ops.ecs_release_info:
    cluster: hotel-voice-bot
    service: hotel-voice-bot-service
    target: last_stable
  register: release

- name: Show the plan
  ansible.builtin.debug:
    msg: "{{ release.current.name }} -> {{ release.target.name }} ({{ release.target.reason }})"

- name: What changed in the environment between the previous revision and now
  hotelbot.ops.ecs_release_info:
    cluster: hotel-voice-bot
    service: hotel-voice-bot-service
    diff_from: previous
    diff_to: current
  register: env_change
'''

RETURN = r'''
cluster:
  description: The cluster asked about.
  returned: success
  type: str
service:
  description: The service's name, ARN, status and task counts.
  returned: success
  type: dict
  sample: {name: hotel-voice-bot-service, status: ACTIVE, desired_count: 3, running_count: 3, pending_count: 0}
family:
  description: The task-definition family the service runs.
  returned: success
  type: str
  sample: hotel-voice-bot
current:
  description:
    - The revision the service runs (its task definition), with its container images.
    - C(version) is the tag of the first image (empty when it has none), the version the bot reports.
  returned: success
  type: dict
  sample: {revision: 4, name: "hotel-voice-bot:4", images: ["ghcr.io/hotelbot/hotel-voice-bot:1.3.0"], version: "1.3.0"}
revisions:
  description: Every revision of the family, newest first, with C(status) ACTIVE or INACTIVE.
  returned: success
  type: list
  elements: dict
  sample: [{revision: 4, name: "hotel-voice-bot:4", status: ACTIVE, arn: "arn:aws:ecs:..."}]
previous:
  description: The newest ACTIVE revision older than the current one, or null.
  returned: success
  type: dict
last_stable:
  description: The revision last marked stable for this service (by M(hotelbot.ops.ecs_release) O(hotelbot.ops.ecs_release#module:mark_stable)), or null.
  returned: success
  type: dict
ledger:
  description: The release-ledger tags (C(hotelbot.ops/*)) on the service.
  returned: success
  type: dict
deployments:
  description: The service's deployments with status, rollout state and task counts.
  returned: success
  type: list
  elements: dict
events:
  description: The newest service events (O(events_limit) of them).
  returned: success
  type: list
  elements: dict
target:
  description: O(target) resolved, with C(reason) saying why, C(images), C(version) (as in RV(current)), and C(changes) (false when it is the current revision).
  returned: when O(target) is set
  type: dict
environment:
  description:
    - The container environment of O(environment_of), secret-looking values masked; C(secrets) lists references only.
    - C(defined) names the variables the revision sets, over its containers (a non-empty value, or a secret reference).
  returned: when O(environment_of) is set
  type: dict
environment_diff:
  description: Variables added, removed and changed per container between O(diff_from) and O(diff_to), masked.
  returned: when O(diff_from) or O(diff_to) is set
  type: dict
elapsed_s:
  description: Seconds the module took.
  returned: always
  type: float
'''

from ansible_collections.hotelbot.ops.plugins.module_utils.common import run
from ansible_collections.hotelbot.ops.plugins.module_utils.ecs import release_info, service_argument_spec

SPEC = dict(argument_spec=service_argument_spec(
    target=dict(type='raw'),
    environment_of=dict(type='raw'),
    diff_from=dict(type='raw'),
    diff_to=dict(type='raw'),
    events_limit=dict(type='int', default=10, context=dict(min=0)),
))


def main():
    run(SPEC, release_info)


if __name__ == '__main__':
    main()
