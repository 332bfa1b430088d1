# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only callback: append every failed task result as a JSON line to $HOTELBOT_FAILURES_FILE."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: failures_to_file
type: aggregate
short_description: Write failed task results to a JSON-lines file (tests only)
description:
  - Appends each failed task's result (what Ansible shows, after no_log censoring) to the file named by
    E(HOTELBOT_FAILURES_FILE), so tests can read the failure message without parsing console text.
requirements:
  - enable in ANSIBLE_CALLBACKS_ENABLED
'''

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'failures_to_file'
    CALLBACK_NEEDS_ENABLED = True

    def v2_runner_on_failed(self, result, ignore_errors=False):
        path = os.environ.get('HOTELBOT_FAILURES_FILE')
        if not path:
            return
        entry = dict(result._result, task=result._task.get_name(), host=result._host.get_name(),
                     ignore_errors=ignore_errors)
        with open(path, 'a') as handle:
            handle.write(json.dumps(entry, default=str) + '\n')
