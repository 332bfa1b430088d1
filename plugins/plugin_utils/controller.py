# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a hotelbot.ops module's work in the controller's worker process instead of a module process.

Our modules talk to APIs (ECS, PostgreSQL, HTTP, Prometheus); none needs the target's files.
When the task's connection is local, the module process would run on this very machine anyway,
and starting it (AnsiballZ, a new Python, importing ansible.module_utils and boto3 or psycopg)
costs 0.4-0.8 CPU-seconds, several times the work itself. An action plugin built on
ControllerModule runs the same SPEC and work function, through the same common.execute() loop,
here instead:

- the arguments are validated by ansible-core's ArgumentSpecValidator against the module's SPEC,
  so a mistake reads exactly as the module would say it;
- no_log options and every value the work hides are removed from the result (remove_values, as
  AnsibleModule does), and the masked arguments are returned as invocation.module_args;
- check mode and diff come from the task, and so does its `environment:`; warnings are returned;
  progress lines of long waits are shown on the controller's display while the task runs.

The action plugin's module is imported once by the strategy in the ansible-playbook process
(to read BYPASS_HOST_LOOP) before any worker is forked, so what it imports at module level
(boto3, psycopg, a warmed botocore session) is shared by every worker instead of being imported
again per task and host.

Anything else runs the module as usual: a remote connection, an async task, a controller that
lacks what the work needs (boto3, psycopg), or hotelbot_controller_modules=false in the inventory.
A module that can wait for minutes (waits = True: an ECS rollout, a Prometheus watch) then runs
under async_wrapper and this worker polls it, showing the module's latest progress line at least
every PROGRESS_EVERY seconds. Async polling rather than waiting in slices: one module run does the
whole wait with its own deadline, so the result (the deployment started, how long it waited) is
the same as on the controller path, and a slice could not resume a wait halfway through.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import secrets
import time

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.hotelbot.ops.plugins.module_utils.common import Task, execute

display = Display()

LOCAL_TRANSPORTS = ('local', 'ansible.builtin.local')
# A line this often while an async module waits (below 15 s with a poll's own seconds added; the
# controller path: poll.poll's progress_every).
PROGRESS_EVERY = 6.0
# Pauses between two looks at an async module: a quick module is not kept waiting for a poll.
POLL_PAUSES = (0.5, 1.0, 2.0, 3.0)
# The remote module's progress file (module_utils.common.run writes it when this is set).
PROGRESS_ENV = 'HOTELBOT_PROGRESS_FILE'
ASYNC_KEYS = ('ansible_job_id', 'started', 'finished', 'results_file')
VALIDATOR_KEYS = ('argument_spec', 'mutually_exclusive', 'required_together', 'required_one_of',
                  'required_if', 'required_by')


class ControllerModule(ActionBase):
    """Base of the collection's action plugins. A subclass names the module (module_name, its
    SPEC), the work function and whether this Python has the libraries the work needs
    (libraries_present, e.g. HAS_PSYCOPG); it may override prepare(args) (arguments only the
    controller knows)."""

    TRANSFERS_FILES = False
    _requires_connection = False

    module_name = None
    spec = None
    work = None
    libraries_present = True
    # True: the work can wait for minutes; on the module path it runs async and is polled.
    waits = False
    # async_wrapper ends the module after this many seconds (the module keeps its own deadline).
    async_limit = 24 * 3600

    def prepare(self, args):
        """Arguments to add before validation; args is a copy of the task's."""
        return args

    def in_process(self, task_vars):
        if self._task.async_val:
            return False
        if not boolean(task_vars.get('hotelbot_controller_modules', True), strict=False):
            return False
        return getattr(self._connection, 'transport', None) in LOCAL_TRANSPORTS and self.libraries_present

    def run(self, tmp=None, task_vars=None):
        result = super(ControllerModule, self).run(tmp, task_vars)
        del tmp  # unused
        task_vars = task_vars or {}
        args = self.prepare(dict(self._task.args))
        if not self.in_process(task_vars):
            if self.waits and not self._task.async_val:
                result.update(self.run_polled(args, task_vars))
            else:
                result.update(self._execute_module(module_name=self.module_name, module_args=args,
                                                   task_vars=task_vars))
            return result
        # The worker process runs this one task for this one host, so the task's `environment:`
        # (AWS_PROFILE, PGSSLMODE, https_proxy, ...) can be applied to it as a module would see it.
        environment = {}
        self._compute_environment_string(environment)
        os.environ.update(environment)
        result.update(self.run_here(args, task_vars))
        return result

    def run_polled(self, args, task_vars):
        """The module under async_wrapper, polled with async_status; its progress lines (written to
        a file in the async directory) are shown here, else a line saying it still runs."""
        started = time.monotonic()
        async_dir = self._remote_expand_user(self.get_shell_option('async_dir', default='~/.ansible_async'))
        progress_id = 'hotelbot-progress-%d' % secrets.randbelow(10 ** 12)
        self._task.environment = list(self._task.environment or []) + [
            {PROGRESS_ENV: self._connection._shell.join_path(async_dir, progress_id)}]
        self._task.async_val = self.async_limit
        try:
            launched = self._execute_module(module_name=self.module_name, module_args=args, task_vars=task_vars,
                                            wrap_async=True)
        finally:
            # The task executor would poll an async task again after this plugin returns.
            self._task.async_val = 0
        if launched.get('failed') or not launched.get('ansible_job_id'):
            return launched
        jid, host, last = launched['ansible_job_id'], task_vars.get('inventory_hostname', ''), None
        said = time.monotonic()
        display.display('  %s: %s runs as async job %s, %.0fs' % (host, self.module_name, jid, said - started))
        pauses = iter(POLL_PAUSES)
        while True:
            time.sleep(next(pauses, POLL_PAUSES[-1]))
            status = self._async_status(jid, async_dir, task_vars)
            if status.get('finished') or status.get('failed'):
                break
            if time.monotonic() - said >= PROGRESS_EVERY:
                said = time.monotonic()
                line = self._async_status(progress_id, async_dir, task_vars).get('progress')
                if not line or line == last:
                    line = '%s still running, %.0fs%s' % (self.module_name, said - started,
                                                          (' (last: %s)' % last) if last else '')
                else:
                    last = line
                display.display('  %s: %s' % (host, line))
        for job in (jid, progress_id):
            self._async_status(job, async_dir, task_vars, mode='cleanup')
        return dict((key, value) for key, value in status.items() if key not in ASYNC_KEYS)

    def _async_status(self, jid, async_dir, task_vars, mode='status'):
        return self._execute_module(module_name='ansible.legacy.async_status', task_vars=task_vars,
                                    module_args=dict(jid=jid, mode=mode, _async_dir=async_dir))

    def run_here(self, args, task_vars):
        spec = self.spec
        validator = ArgumentSpecValidator(**dict((key, spec[key]) for key in VALIDATOR_KEYS if key in spec))
        validation = validator.validate(args)
        hidden = set(validation._no_log_values)
        if validation.error_messages:
            msg = validation.errors.msg
            if validation.unsupported_parameters:
                msg = 'Unsupported parameters for (%s) module: %s' % (self.module_name, msg)
            return remove_values(dict(failed=True, changed=False, msg=msg), hidden)
        warnings = []
        host = task_vars.get('inventory_hostname', '')

        def progress(message):
            display.display('  %s: %s' % (host, remove_values(message, hidden)))

        task = Task(validation.validated_parameters, check_mode=self._task.check_mode, diff=self._task.diff,
                    hide=hidden.add, warn=warnings.append, progress=progress)
        outcome = execute(spec, type(self).work, task, name=self.module_name)
        warnings.extend('Both option %(option)s and its alias %(alias)s are set.' % item
                        for item in validation._warnings)
        if warnings:
            outcome['warnings'] = warnings
        for item in validation._deprecations:
            display.deprecated(item['msg'], version=item.get('version'), date=item.get('date'),
                               collection_name=item.get('collection_name'))
        outcome['invocation'] = dict(module_args=validation.validated_parameters)
        return remove_values(outcome, hidden)


def unavailable(message):
    """For a subclass's prepare(): refuse an argument the controller sets itself."""
    raise AnsibleActionFail(message)
