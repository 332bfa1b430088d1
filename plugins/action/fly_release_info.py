# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hotelbot.ops.fly_release_info: on a local connection the work runs in the controller's
worker (plugin_utils.controller), elsewhere as the module."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hotelbot.ops.plugins.module_utils.fly import release_info
from ansible_collections.hotelbot.ops.plugins.modules.fly_release_info import SPEC
from ansible_collections.hotelbot.ops.plugins.plugin_utils.controller import ControllerModule


class ActionModule(ControllerModule):

    module_name = 'hotelbot.ops.fly_release_info'
    spec = SPEC
    work = staticmethod(release_info)
