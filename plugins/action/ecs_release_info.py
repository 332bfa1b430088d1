# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hotelbot.ops.ecs_release_info (see plugins/action/ecs_release.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hotelbot.ops.plugins.module_utils.aws import HAS_BOTOCORE, preload
from ansible_collections.hotelbot.ops.plugins.module_utils.ecs import release_info
from ansible_collections.hotelbot.ops.plugins.modules.ecs_release_info import SPEC
from ansible_collections.hotelbot.ops.plugins.plugin_utils.controller import ControllerModule

preload('ecs')
# ECS's release lock lives in DynamoDB by default (docs/locking.md): its model too, for the lock tasks' workers.
preload('dynamodb')


class ActionModule(ControllerModule):

    module_name = 'hotelbot.ops.ecs_release_info'
    spec = SPEC
    work = staticmethod(release_info)
    libraries_present = HAS_BOTOCORE
