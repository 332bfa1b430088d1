# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hotelbot.ops.prometheus_gate: on a local connection the gate runs in the
controller's worker (plugin_utils.controller), elsewhere as the module."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hotelbot.ops.plugins.module_utils.prometheus import gate
from ansible_collections.hotelbot.ops.plugins.modules.prometheus_gate import SPEC
from ansible_collections.hotelbot.ops.plugins.plugin_utils.controller import ControllerModule


class ActionModule(ControllerModule):

    module_name = 'hotelbot.ops.prometheus_gate'
    spec = SPEC
    work = staticmethod(gate)
    waits = True
