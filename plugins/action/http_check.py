# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hotelbot.ops.http_check: on a local connection the checks run in the
controller's worker (plugin_utils.controller), elsewhere as the module. The checks need only the
standard library, so every controller can run them."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hotelbot.ops.plugins.module_utils.http import check_http
from ansible_collections.hotelbot.ops.plugins.modules.http_check import SPEC
from ansible_collections.hotelbot.ops.plugins.plugin_utils.controller import ControllerModule


class ActionModule(ControllerModule):

    module_name = 'hotelbot.ops.http_check'
    spec = SPEC
    work = staticmethod(check_http)
