#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ecs_release
short_description: Roll an ECS service to a revision, scale it, wait for the rollout, mark it stable
version_added: 0.1.0
description:
  - Moves an ECS service to a task-definition revision (V(previous), V(last_stable), a number, ...),
    optionally forcing a new deployment and/or changing the desired count, and waits for B(the
    deployment it started) by id and C(rolloutState). It fails fast when the deployment goes
    C(FAILED) and says so plainly when ECS's deployment circuit breaker rolled the service back by
    itself (which C(aws ecs wait services-stable) reports as success).
  - Idempotent. A second identical run reports C(changed=false). V(previous) does not walk further
    back when re-run after a rollback it did; a deployment of the target that is still rolling
    (for example after the run that started it lost contact with AWS) is waited on, not restarted.
  - Scaling remembers the desired count it replaced (service tag
    C(hotelbot.ops/desired-count-before-scale)), so a later O(restore_desired_count=true) puts it back.
  - O(mark_stable=true) records the revision in the service's release ledger (tag
    C(hotelbot.ops/last-stable)) once the rollout completed; V(last_stable) then resolves to it.
author:
  - hotelbot.ops maintainers (@hotelbot)
extends_documentation_fragment:
  - hotelbot.ops.aws
  - hotelbot.ops.aws.ecs_service
attributes:
  check_mode:
    support: full
    description: Predicts exactly what would change (revision, desired count, ledger) and changes nothing.
  diff_mode:
    support: full
    description: Shows revision, desired count and last-stable mark before and after.
options:
  revision:
    description:
      - The revision to run.
      - V(current) keeps the revision (use it to scale, force a new deployment or mark stable).
      - V(previous) is the newest ACTIVE revision older than the current one; re-running it after a
        rollback it did stays put.
      - V(last_stable) is the revision last marked stable for this service.
      - A number, V(family:number) or a task definition ARN names one; it must be ACTIVE and of the
        service's family.
    type: raw
    default: current
  force_new_deployment:
    description:
      - Start a new deployment even when the revision does not change (pull the image again).
      - Mutually exclusive with O(image) (which deploys a new revision anyway).
    type: bool
    default: false
  image:
    description:
      - Deploy this container image (for example V(ghcr.io/hotelbot/hotel-voice-bot:1.2.1)), for a hot-patch.
      - Registers a new revision of the family, copied from the revision O(revision) names (by default
        the one the service runs now) with the image of O(container) replaced, then deploys it exactly like
        a O(revision) deploy (wait, events, failure handling, O(expected_current) apply).
      - The new revision keeps the base's tags except C(hotelbot.ops/stable), since it is not stable until verified.
      - Idempotent. When the service already runs that definition nothing is registered or deployed; when the
        newest ACTIVE revision of the family is that definition (for example after a run that timed out), it
        is deployed instead of registering a duplicate.
      - In check mode nothing is registered; the revision number in RV(to_revision) is null and its reason (and
        RV(msg)) says what would be registered.
    type: str
  container:
    description:
      - The container that gets O(image). Defaults to the only container; required when the task
        definition has several.
      - Only with O(image).
    type: str
  desired_count:
    description:
      - Set the service's desired count. The count it replaces is remembered.
      - From 0 to 5000, ECS's quota of tasks per service; anything else is refused before any AWS call.
    type: int
  restore_desired_count:
    description:
      - Set the desired count back to the one remembered by the last scale of this module.
      - A remembered count above 5000 (an edited tag) is refused before anything changes.
    type: bool
    default: false
  mark_stable:
    description:
      - After the rollout completed, record the revision as the service's last stable release.
      - Needs O(wait=true) when a deployment is started.
    type: bool
    default: false
  expected_current:
    description:
      - Act only if the service runs this revision number now; otherwise fail and change nothing.
      - Guards against acting on a service someone else moved since you looked (for example between
        a preflight that showed the plan and the rollback).
    type: int
  wait:
    description:
      - Wait for the deployment (or the scale) to finish, that is the new deployment C(COMPLETED) B(and) the old
        deployments' tasks stopped (ECS keeps an old deployment listed, its tasks draining, for a while after
        the new one completed).
      - Polls DescribeServices with backoff (0.25 s growing to 5 s). Run on the controller (a local
        connection), a line every 10 s says how far the deployment is. A poll that still fails after botocore's
        retries (O(max_attempts)) with a transient error (5xx, throttling, connection error, timeout) does not
        end the wait; polling goes on until O(wait_timeout), or until ECS has not answered for
        O(wait_outage_grace) seconds. Other errors (access denied, the service deleted) end it at once.
      - A failed wait's result still carries RV(deployment_id) and RV(waited_s).
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait before failing, at least 1. The update stays sent; re-running converges.
    type: int
    default: 600
  wait_outage_grace:
    description:
      - Seconds ECS may fail to answer (transient errors only, see O(wait)) during the wait before the wait
        gives up with C(lost contact with ECS). The update stays sent; re-running converges.
      - V(0) gives up at the first poll that fails after botocore's retries. Negative values are refused.
    type: int
    default: 120
seealso:
  - module: hotelbot.ops.ecs_release_info
'''

EXAMPLES = r'''
- name: Roll back to the last stable release and wait for it
  hotelbot.ops.ecs_release:
    cluster: hotel-voice-bot
    service: hotel-voice-bot-service
    revision: last_stable

- name: Roll back one revision (the runbook's way), at most 5 minutes
  hotelbot.ops.ecs_release:
    cluster: hotel-voice-bot
    service: hotel-voice-bot-service
    revision: previous
    wait_timeout: 300

- name: Stop traffic for a database restore (the old count is remembered)
  hotelbot.ops.ecs_release:
    cluster: hotel-voice-bot
    service: hotel-voice-bot-service
    desired_count: 0

- name: Bring it back to the remembered count
  hotelbot.ops.ecs_release:
    cluster: hotel-voice-bot
    service: hotel-voice-bot-service
    restore_desired_count: true

- name: Hot-patch - redeploy the same revision (new image pull)
  hotelbot.ops.ecs_release:
    cluster: hotel-voice-bot
    service: hotel-voice-bot-service
    force_new_deployment: true

- name: Hot-patch - deploy a new image (registers a new revision from the running one)
  hotelbot.ops.ecs_release:
    cluster: hotel-voice-bot
    service: hotel-voice-bot-service
    image: ghcr.io/hotelbot/hotel-voice-bot:1.2.1
    expected_current: 3

- name: Hot-patch the last stable release instead, in the container named bot
  hotelbot.ops.ecs_release:
    cluster: hotel-voice-bot
    service: hotel-voice-bot-service
    revision: last_stable
    image: ghcr.io/hotelbot/hotel-voice-bot:1.2.1
    container: bot

- name: After verification, mark what runs as stable - only if it still runs revision 3
  hotelbot.ops.ecs_release:
    cluster: hotel-voice-bot
    service: hotel-voice-bot-service
    revision: current
    expected_current: 3
    mark_stable: true
'''

RETURN = r'''
from_revision:
  description: The revision the service ran before.
  returned: success
  type: dict
  sample: {name: "hotel-voice-bot:4", revision: 4, arn: "arn:aws:ecs:us-east-1:123456789012:task-definition/hotel-voice-bot:4"}
to_revision:
  description:
    - The revision the service runs after (or would, in check mode), why it was chosen, and the images of its
      containers (in container order).
    - In check mode with O(image), when a revision would be registered, its name, revision and arn are null
      (the number is only known once registered).
  returned: success
  type: dict
  sample: {name: "hotel-voice-bot:3", revision: 3, reason: the last revision marked stable,
           images: ["ghcr.io/hotelbot/hotel-voice-bot:1.2.0"]}
msg:
  description: With O(image), what was (or would be) done, e.g. which revision was registered or reused.
  returned: when O(image) is set
  type: str
  sample: registered from hotel-voice-bot:3 with image ghcr.io/hotelbot/hotel-voice-bot:1.2.1
registered:
  description: The revision registered for O(image) (V(family:revision)), or null when none was.
  returned: success
  type: str
  sample: hotel-voice-bot:6
desired_count:
  description: Desired count before and after.
  returned: success
  type: dict
  sample: {before: 3, after: 3}
previous_desired_count:
  description: The desired count the service had before this run.
  returned: success
  type: int
deployment_id:
  description: The id of the deployment started (or waited on), or null when none was.
  returned: success, and on failure once a deployment was started
  type: str
  sample: ecs-svc/1234567890123456789
deployment_started:
  description: Whether a new deployment was (or, in check mode, would be) started.
  returned: success
  type: bool
rollout_state:
  description: The deployment's last seen C(rolloutState) (COMPLETED, FAILED, IN_PROGRESS).
  returned: success
  type: str
rolled_back_to:
  description: When ECS's circuit breaker rolled the service back by itself, the revision it went to.
  returned: failure
  type: str
marked_stable:
  description: Whether the ledger was (or would be) updated to mark O(revision) stable.
  returned: success
  type: bool
events:
  description: Service events ECS reported while the module waited.
  returned: success
  type: list
  elements: dict
waited_s:
  description: Seconds spent waiting for the rollout (also when the wait failed).
  returned: success, and on failure once the wait began
  type: float
elapsed_s:
  description: Seconds the module took.
  returned: always
  type: float
'''

from ansible_collections.hotelbot.ops.plugins.module_utils.common import run
from ansible_collections.hotelbot.ops.plugins.module_utils.ecs import (
    DEFAULT_WAIT_OUTAGE_GRACE,
    MAX_DESIRED_COUNT,
    release,
    service_argument_spec,
)

SPEC = dict(
    argument_spec=service_argument_spec(
        revision=dict(type='raw', default='current'),
        force_new_deployment=dict(type='bool', default=False),
        desired_count=dict(type='int', context=dict(min=0, max=MAX_DESIRED_COUNT)),
        restore_desired_count=dict(type='bool', default=False),
        mark_stable=dict(type='bool', default=False),
        expected_current=dict(type='int'),
        wait=dict(type='bool', default=True),
        wait_timeout=dict(type='int', default=600, context=dict(min=1)),
        wait_outage_grace=dict(type='int', default=DEFAULT_WAIT_OUTAGE_GRACE, context=dict(min=0)),
        image=dict(type='str'),
        container=dict(type='str'),
    ),
    mutually_exclusive=[('desired_count', 'restore_desired_count')],
    required_by=dict(container='image'),
)


def main():
    run(SPEC, release)


if __name__ == '__main__':
    main()
