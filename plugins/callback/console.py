# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
name: console
type: stdout
short_description: The default output, showing only what an operator reads
version_added: 0.1.0
description:
  - The default callback (same options), quieter, so that a rollback fits on one screen.
  - A task is shown when it changed something, failed, was unreachable, or has a message to show
    (C(ansible.builtin.debug), or an C(ansible.builtin.assert) with a message of its own).
  - Tasks that only read (ok without a message), skipped tasks and includes are not shown; the play
    recap counts them. The task of a long wait (an ECS rollout, a Prometheus watch) is
    announced when it starts, and its progress lines follow.
  - Enable it with C(stdout_callback = hotelbot.ops.console) in C(ansible.cfg) or
    E(ANSIBLE_STDOUT_CALLBACK=hotelbot.ops.console).
extends_documentation_fragment:
  - default_callback
  - result_format_callback
requirements:
  - set as stdout in configuration
"""

from ansible.playbook.task_include import TaskInclude
from ansible.plugins.callback.default import CallbackModule as DefaultCallback

# Tasks that can run for minutes: their banner shows at once, before their progress lines.
WAITING_ACTIONS = frozenset(('hotelbot.ops.ecs_release', 'hotelbot.ops.prometheus_gate'))
MESSAGE_ACTIONS = frozenset(('debug', 'ansible.builtin.debug', 'ansible.legacy.debug'))
ASSERT_ACTIONS = frozenset(('assert', 'ansible.builtin.assert', 'ansible.legacy.assert'))
ASSERT_DEFAULT_MSG = 'All assertions passed'


class CallbackModule(DefaultCallback):

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'stdout'
    CALLBACK_NAME = 'hotelbot.ops.console'

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super(CallbackModule, self).set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        # The default callback then prints a task's banner only with the first result it shows.
        self._plugin_options['display_ok_hosts'] = False
        self._plugin_options['display_skipped_hosts'] = False

    def v2_playbook_on_task_start(self, task, is_conditional):
        super(CallbackModule, self).v2_playbook_on_task_start(task, is_conditional)
        if task.action in WAITING_ACTIONS and self._play.strategy not in ('free', 'host_pinned'):
            self._print_task_banner(task)

    def v2_runner_on_ok(self, result):
        if isinstance(result.task, TaskInclude):
            return
        if result.result.get('changed', False) or not self._has_message(result):
            super(CallbackModule, self).v2_runner_on_ok(result)
            return
        self._plugin_options['display_ok_hosts'] = True
        try:
            super(CallbackModule, self).v2_runner_on_ok(result)
        finally:
            self._plugin_options['display_ok_hosts'] = False

    def v2_playbook_on_include(self, included_file):
        pass

    @staticmethod
    def _has_message(result):
        action = result.task.action
        if action in MESSAGE_ACTIONS:
            return True
        return action in ASSERT_ACTIONS and result.result.get('msg') not in (None, '', ASSERT_DEFAULT_MSG)
