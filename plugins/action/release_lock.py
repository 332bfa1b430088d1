# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hotelbot.ops.release_lock: names the lease's holder, and on a local connection
takes the lock in the controller's worker (plugin_utils.controller), elsewhere through the module.

The holder is the ansible-playbook (or ansible) process running the play: this plugin runs in a
worker it forked, so it is os.getppid() here, whichever way the work runs. The heartbeat renews
the lease only while that process lives, so a killed run's lease lapses within one ttl. The pid
means something only on this machine (a local connection); elsewhere no holder is passed and the
module says it has no heartbeat.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

# Nothing backend-specific is imported here: this module is imported in the ansible-playbook process on the
# first lock task, on the critical path of every run, and botocore and psycopg cost 0.3 s there that a Fly
# lock needs neither of. The lock's module_utils import a backend's library (guarded) when it is used; the
# ECS action plugins preload botocore's DynamoDB model for the workers, as ECS's default lock lives there.
from ansible_collections.hotelbot.ops.plugins.module_utils.release_lock import holder_identity, release_lock_task
from ansible_collections.hotelbot.ops.plugins.modules.release_lock import SPEC
from ansible_collections.hotelbot.ops.plugins.plugin_utils.controller import (
    LOCAL_TRANSPORTS,
    ControllerModule,
    unavailable,
)


class ActionModule(ControllerModule):
    module_name = 'hotelbot.ops.release_lock'
    spec = SPEC
    work = staticmethod(release_lock_task)

    @property
    def libraries_present(self):
        """What the task's backend needs: botocore for dynamodb, psycopg for postgres (without it the module
        runs, and says what is missing and that backend=dynamodb needs no database)."""
        # Imported here, for the backend asked only: this plugin is imported in the ansible-playbook process.
        if self._task.args.get('backend') == 'dynamodb':
            from ansible_collections.hotelbot.ops.plugins.module_utils.aws import HAS_BOTOCORE
            return HAS_BOTOCORE
        if self._task.args.get('backend') == 'fly':
            return True  # the Fly API is plain HTTP through the collection's transport
        from ansible_collections.hotelbot.ops.plugins.module_utils.postgres import HAS_PSYCOPG
        return HAS_PSYCOPG

    def prepare(self, args):
        if '_holder' in args:
            unavailable('_holder is internal to hotelbot.ops.release_lock (set by its action plugin); remove it')
        if getattr(self._connection, 'transport', None) in LOCAL_TRANSPORTS:
            args['_holder'] = holder_identity(os.getppid())
        return args
