# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only callback: write the run's recap (per host: ok, changed, failed, ...) and the names of the
tasks that reported changed, as JSON, to $HOTELBOT_STATS_FILE."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: stats_to_file
type: aggregate
short_description: Write the play recap's numbers to a JSON file (tests only)
description:
  - Writes what the PLAY RECAP shows, per host (C(ok), C(changed), C(failures), ...), and the changed tasks'
    names to the file named by E(HOTELBOT_STATS_FILE), so tests read the numbers instead of console text.
requirements:
  - enable in ANSIBLE_CALLBACKS_ENABLED
'''

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'stats_to_file'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.changed_tasks = []

    def v2_runner_on_ok(self, result):
        if result._result.get('changed'):
            self.changed_tasks.append(result._task.get_name())

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get('HOTELBOT_STATS_FILE')
        if not path:
            return
        hosts = dict((host, stats.summarize(host)) for host in sorted(stats.processed))
        with open(path, 'w') as handle:
            json.dump(dict(hosts=hosts, changed_tasks=self.changed_tasks), handle)
