# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark helper (not part of the collection): records, for every task of a playbook
run (role tasks included, with the task that included them), its wall-clock start and end,
its status, and for hotelbot.ops.prometheus_gate the gate's result (decision, decided_at,
breached_since, first_breach_at, samples, ...), for ecs_release a few fields, into the JSON
file named by $HOTELBOT_BENCH_INCIDENT_FILE. Used by benchmarks/incident.py.

bench_timing records task starts only and bench_results keeps no gate fields, hence this one.

Enabled only by the benchmark:
  ANSIBLE_CALLBACK_PLUGINS=benchmarks/lib/callback_plugins ANSIBLE_CALLBACKS_ENABLED=bench_incident
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: bench_incident
type: aggregate
short_description: Task start/end times and the Prometheus gate's result for benchmarks/incident.py
description:
  - Writes the wall-clock start and end of every task, and the result of the collection's prometheus_gate and
    ecs_release tasks, to the file named by the environment variable E(HOTELBOT_BENCH_INCIDENT_FILE).
    Does nothing when it is not set.
requirements:
  - enabled in callbacks_enabled
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase

GATE_KEEP = ('decision', 'reason', 'decided_at', 'breached_since', 'first_breach_at', 'samples', 'evaluations',
             'decisions', 'for_seconds', 'step_seconds', 'threshold', 'query', 'rules', 'attempts', 'mode')
RELEASE_KEEP = ('changed', 'phase', 'elapsed_s', 'msg')


def _included_by(task):
    """Name of the include_role/include_tasks task a role task came from, '' for a play task."""
    parent = getattr(task, '_parent', None)
    while parent is not None:
        if getattr(parent, 'action', None) in ('include_role', 'ansible.builtin.include_role',
                                               'include_tasks', 'ansible.builtin.include_tasks'):
            return parent.get_name()
        parent = getattr(parent, '_parent', None)
    return ''


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_incident'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._path = os.environ.get('HOTELBOT_BENCH_INCIDENT_FILE')
        self._by_uuid = {}
        self._record = {'playbook_start': None, 'tasks': [], 'stats': None}

    def v2_playbook_on_start(self, playbook):
        self._record['playbook_start'] = time.time()

    def v2_playbook_on_task_start(self, task, is_conditional):
        entry = {'name': task.get_name(), 'action': task.action or '', 'included_by': _included_by(task),
                 'start': time.time(), 'end': None, 'status': None}
        self._record['tasks'].append(entry)
        self._by_uuid[task._uuid] = entry

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def _done(self, result, status):
        entry = self._by_uuid.get(result._task._uuid)
        if entry is None:
            return
        entry['end'] = time.time()
        entry['status'] = status
        data = result._result or {}
        action = entry['action']
        if action.endswith('prometheus_gate'):
            entry['result'] = dict((k, data[k]) for k in GATE_KEEP if k in data)
        elif action.endswith('ecs_release'):
            entry['result'] = dict((k, data[k]) for k in RELEASE_KEEP if k in data)
            for key in ('from_revision', 'to_revision'):
                if isinstance(data.get(key), dict):
                    entry['result'][key] = {'name': data[key].get('name'), 'images': data[key].get('images')}

    def v2_runner_on_ok(self, result):
        self._done(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, 'failed')

    def v2_runner_on_skipped(self, result):
        self._done(result, 'skipped')

    def v2_playbook_on_stats(self, stats):
        self._record['stats'] = time.time()
        if not self._path:
            return
        with open(self._path, 'w') as handle:
            json.dump(self._record, handle, default=str)
