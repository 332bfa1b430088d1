# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hotelbot.ops.pg_check: on a local connection the checks run in the controller's
worker (plugin_utils.controller), elsewhere as the module."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# postgres imports psycopg (guarded): here, once in the ansible-playbook process, for every worker.
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_check import check_task
from ansible_collections.hotelbot.ops.plugins.module_utils.postgres import HAS_PSYCOPG
from ansible_collections.hotelbot.ops.plugins.modules.pg_check import SPEC
from ansible_collections.hotelbot.ops.plugins.plugin_utils.controller import ControllerModule


class ActionModule(ControllerModule):
    module_name = 'hotelbot.ops.pg_check'
    spec = SPEC
    work = staticmethod(check_task)
    libraries_present = HAS_PSYCOPG
