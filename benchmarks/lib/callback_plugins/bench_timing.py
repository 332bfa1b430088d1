# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark helper (not part of the collection): records when each task of a
playbook run started, as wall-clock timestamps, into the JSON file named by
$HOTELBOT_BENCH_TIMING_FILE. benchmarks/ecs_rollback.py turns that into phases
(startup, preflight, rollback, verify, mark stable).

Enabled only by the benchmark:
  ANSIBLE_CALLBACK_PLUGINS=benchmarks/lib/callback_plugins ANSIBLE_CALLBACKS_ENABLED=bench_timing
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: bench_timing
type: aggregate
short_description: Task start timestamps for benchmarks/ecs_rollback.py
description:
  - Writes the wall-clock start time of the playbook, of every task and of the stats to the file named by
    the environment variable E(HOTELBOT_BENCH_TIMING_FILE). Does nothing when it is not set.
requirements:
  - enabled in callbacks_enabled
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_timing'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._path = os.environ.get('HOTELBOT_BENCH_TIMING_FILE')
        self._record = {'playbook_start': None, 'tasks': [], 'stats': None, 'failed': []}

    def v2_playbook_on_start(self, playbook):
        self._record['playbook_start'] = time.time()

    def v2_playbook_on_task_start(self, task, is_conditional):
        role = task._role.get_name(include_role_fqcn=False) if task._role else ''
        self._record['tasks'].append({
            'name': task.get_name(),
            'role': role,
            'path': task.get_path() or '',
            'start': time.time(),
        })

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._record['failed'].append({'host': result._host.get_name(), 'task': result._task.get_name()})

    def v2_playbook_on_stats(self, stats):
        self._record['stats'] = time.time()
        if not self._path:
            return
        with open(self._path, 'w') as handle:
            json.dump(self._record, handle)
