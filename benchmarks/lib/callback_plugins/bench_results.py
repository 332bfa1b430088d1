# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark helper (not part of the collection): records, for every task whose action is
one of ours in hotelbot.ops (pg_backup, pg_restore, ecs_release, pg_check), its wall-clock
start and end and a few result fields (steps, elapsed_s, size_bytes, path, ...) into the
JSON file named by $HOTELBOT_BENCH_RESULTS_FILE. Used by benchmarks/db_rollback.py.

Enabled only by the benchmark:
  ANSIBLE_CALLBACK_PLUGINS=benchmarks/lib/callback_plugins ANSIBLE_CALLBACKS_ENABLED=bench_results
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: bench_results
type: aggregate
short_description: Task timings and selected results for benchmarks/db_rollback.py
description:
  - Writes start/end wall-clock times and selected result fields of the collection's database and ECS tasks
    to the file named by the environment variable E(HOTELBOT_BENCH_RESULTS_FILE). Does nothing when it is not set.
requirements:
  - enabled in callbacks_enabled
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase

KEEP = ('steps', 'elapsed_s', 'size_bytes', 'path', 'dump_seconds', 'format', 'scratch_database',
        'previous_database', 'phase', 'desired_count', 'changed', 'msg')


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_results'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._path = os.environ.get('HOTELBOT_BENCH_RESULTS_FILE')
        self._start = {}
        self._record = {'playbook_start': None, 'tasks': [], 'stats': None}

    def v2_playbook_on_start(self, playbook):
        self._record['playbook_start'] = time.time()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start[task._uuid] = time.time()

    def _keep(self, result, status):
        action = result._task.action or ''
        if not action.startswith('hotelbot.ops.'):
            return
        data = result._result or {}
        self._record['tasks'].append({
            'name': result._task.get_name(), 'action': action, 'status': status,
            'start': self._start.get(result._task._uuid), 'end': time.time(),
            'result': dict((k, data[k]) for k in KEEP if k in data),
        })

    def v2_runner_on_ok(self, result):
        self._keep(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._keep(result, 'failed')

    def v2_playbook_on_stats(self, stats):
        self._record['stats'] = time.time()
        if not self._path:
            return
        with open(self._path, 'w') as handle:
            json.dump(self._record, handle)
