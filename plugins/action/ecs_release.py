# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hotelbot.ops.ecs_release: on a local connection the work runs in the controller's
worker (plugin_utils.controller), elsewhere as the module. preload() at import, in the
ansible-playbook process, warms the botocore session every worker then shares."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hotelbot.ops.plugins.module_utils.aws import HAS_BOTOCORE, preload
from ansible_collections.hotelbot.ops.plugins.module_utils.ecs import release
from ansible_collections.hotelbot.ops.plugins.modules.ecs_release import SPEC
from ansible_collections.hotelbot.ops.plugins.plugin_utils.controller import ControllerModule

# This module is imported once, in ansible-playbook, before the workers fork: the ECS model and
# endpoint data read here are every worker's, so a task's client costs milliseconds.
preload('ecs')
# ECS's release lock lives in DynamoDB by default (docs/locking.md): its model too, for the lock tasks' workers.
preload('dynamodb')


class ActionModule(ControllerModule):

    module_name = 'hotelbot.ops.ecs_release'
    spec = SPEC
    work = staticmethod(release)
    libraries_present = HAS_BOTOCORE
    waits = True
