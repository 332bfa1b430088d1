# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hotelbot.ops.release_lock: names the lease's holder, then runs the module.

The holder is the ansible-playbook (or ansible) process running the play: this plugin runs in
a worker it forked, so it is os.getppid() here. The module's heartbeat renews the lease only
while that process lives, so a killed run's lease lapses within one ttl. The pid means
something only where the module runs on this machine (a local connection); elsewhere no
holder is passed and the module says it has no heartbeat.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.plugins.action import ActionBase

from ansible_collections.hotelbot.ops.plugins.module_utils.release_lock import holder_identity

LOCAL_TRANSPORTS = ('local', 'ansible.builtin.local')


class ActionModule(ActionBase):

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # unused
        args = dict(self._task.args)
        if '_holder' in args:
            result.update(failed=True, changed=False,
                          msg='_holder is internal to hotelbot.ops.release_lock (set by its action plugin); remove it')
            return result
        if getattr(self._connection, 'transport', None) in LOCAL_TRANSPORTS:
            args['_holder'] = holder_identity(os.getppid())
        result.update(self._execute_module(module_name='hotelbot.ops.release_lock', module_args=args,
                                           task_vars=task_vars))
        return result
