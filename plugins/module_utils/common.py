# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The contract every hotelbot.ops module follows, and its run loop.

A module is DOCUMENTATION/EXAMPLES/RETURN, a SPEC (the keyword arguments of AnsibleModule:
argument_spec, mutually_exclusive, required_if, ...) and main() = run(SPEC, work), where work
is a function of module_utils that takes a Task (params, check_mode, diff, hide, warn, progress)
and returns the result dict, or raises OpsError. The same SPEC and work run in the controller's
worker process through plugins/plugin_utils/controller.py when the task's connection is local.
execute() is the one loop both use: spec checks, elapsed_s, OpsError as a plain message, never a
traceback as the message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import os
import time
import traceback


# Shorter values (flags like "true", ports) would mask unrelated output everywhere;
# they are masked where they occur by name instead.
MIN_HIDDEN_LENGTH = 6

# How much of a server's error text a message shows.
SHOWN_ERROR_CHARS = 300


class OpsError(Exception):
    """A failure with a message for the operator and extra result fields.

    changed tells Ansible whether anything was modified before the failure
    (for example an ECS update was sent but the wait timed out).
    """

    def __init__(self, msg, changed=False, **result):
        super(OpsError, self).__init__(msg)
        self.msg = msg
        self.changed = changed
        self.result = result


class Timer:
    """Monotonic stopwatch; elapsed() is in seconds, rounded for results."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self.started = clock()

    def elapsed(self):
        return round(self._clock() - self.started, 3)

    def remaining(self, budget):
        return budget - (self._clock() - self.started)


def one_line(text, limit=SHOWN_ERROR_CHARS):
    """text on one line (whitespace runs collapsed), cut at limit characters: for a server's
    error body or an exception inside a one-line message."""
    text = ' '.join(str(text).split())
    return text if len(text) <= limit else text[:limit] + '...'


def first_line(err, limit=SHOWN_ERROR_CHARS):
    """The first line of an error's text (libpq's and others' carry DETAIL/CONTEXT lines after
    it), or the error's type name when it has no text."""
    text = str(err).strip()
    return one_line(text.splitlines()[0], limit) if text else type(err).__name__


def _options(argument_spec, params, prefix=''):
    """(label, spec, value) of every option and suboption given, suboptions labelled
    `checks[0].name`: what the spec checks below walk."""
    for name, spec in (argument_spec or {}).items():
        value = (params or {}).get(name)
        yield prefix + name, spec, value
        if spec.get('options') and isinstance(value, (dict, list)):
            items = [(name, value)] if isinstance(value, dict) else [
                ('%s[%d]' % (name, index), item) for index, item in enumerate(value)]
            for label, item in items:
                if isinstance(item, dict):
                    yield from _options(spec['options'], item, '%s%s.' % (prefix, label))


def empty_options(argument_spec, params):
    """Names of text options (str, path) given as empty or blank text where a value is needed.

    Needed: the option is required, or its default is a non-empty text. Ansible's `required` only
    asks for the key, so an unset inventory variable (`database: "{{ db | default('') }}"`) passes
    it, and libpq, boto3 and friends then quietly fall back to something else. Options whose
    default is empty or none may be given empty: there, empty means "not set". Suboptions are
    checked the same way and named as `checks[0].name`.
    """
    found = []
    for label, spec, value in _options(argument_spec, params):
        default = spec.get('default')
        if (spec.get('type', 'str') in ('str', 'path') and isinstance(value, str) and not value.strip()
                and (spec.get('required') or (isinstance(default, str) and default.strip()))):
            found.append(label)
    return found


def _check_ranges(argument_spec, params):
    """Messages for numbers outside the range an option's spec declares in its `context`.

    `context: {min: 0, max: 5000}` bounds an int or float option inclusively; `above` and `below`
    bound it exclusively (a ratio in (0, 1) is `above: 0, below: 1`). The argument spec's free-form
    `context` is where ansible-core lets a spec carry such data; suboptions are checked the same way.
    """
    problems = []
    for label, spec, value in _options(argument_spec, params):
        bounds = spec.get('context') or {}
        if not bounds or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        low, high = bounds.get('min'), bounds.get('max')
        above, below = bounds.get('above'), bounds.get('below')
        # NaN (a float option given as .nan) compares false with every bound: outside any range.
        if ((isinstance(value, float) and math.isnan(value))
                or (low is not None and value < low) or (high is not None and value > high)
                or (above is not None and value <= above) or (below is not None and value >= below)):
            problems.append('%s must be %s, got %s' % (label, _range_text(bounds), value))
    return problems


def _range_text(bounds):
    low = bounds.get('min', bounds.get('above'))
    high = bounds.get('max', bounds.get('below'))
    if low is not None and high is not None:
        if 'above' in bounds or 'below' in bounds:
            return 'in %s%s, %s%s' % ('(' if 'above' in bounds else '[', low, high, ')' if 'below' in bounds else ']')
        return 'between %s and %s' % (low, high)
    if low is not None:
        return ('greater than %s' if 'above' in bounds else 'at least %s') % low
    return ('less than %s' if 'below' in bounds else 'at most %s') % high


def spec_problems(spec, params):
    """What the argument spec declares but ansible-core does not check: empty text where a value
    is needed (empty_options) and numeric ranges (a spec's `context`). One message per option."""
    argument_spec = spec['argument_spec']
    empty = empty_options(argument_spec, params)
    problems = ['%s must not be empty' % ', '.join(empty)] if empty else []
    return problems + _check_ranges(argument_spec, params)


class Task:
    """What a module's work function is given, wherever it runs (a module process on the target,
    or the controller's worker through plugin_utils.controller): the validated params, whether to
    change nothing (check_mode) or to return a diff, and how to hide values and to warn."""

    def __init__(self, params, check_mode=False, diff=False, hide=None, warn=None, progress=None):
        self.params = params
        self.check_mode = bool(check_mode)
        self.diff = bool(diff)
        self._hide = hide
        self._warn = warn
        self._progress = progress

    def hide(self, *values, any_length=False):
        """Values that must never appear in the result or output (even at -vvvv). any_length: a
        secret proper (a password wherever it was given), hidden however short, as Ansible hides
        a no_log option's value."""
        for value in values:
            if value and (any_length or len(str(value)) >= MIN_HIDDEN_LENGTH) and self._hide:
                self._hide(str(value))

    def warn(self, message):
        if self._warn:
            self._warn(message)

    def progress(self, message):
        """A line about a long wait (shown where the run can show it: on the controller)."""
        if self._progress:
            self._progress(message)


def execute(spec, work, task, name='module'):
    """Run work(task) once and return the task result dict; never raises.

    The one run loop of every hotelbot.ops module: refuses what spec_problems finds before anything
    is done, adds elapsed_s, turns OpsError into a failure with a plain message (and the fields the
    error carries), drops the diff unless one was asked for, and reports a bug of ours as
    "unexpected error" with the traceback kept for -vvv.
    A work function may carry hide_secrets(task): it registers secrets held inside options (a
    password in a connection string) before anything can be refused, invocation included.
    """
    if getattr(work, 'hide_secrets', None):
        work.hide_secrets(task)
    problems = spec_problems(spec, task.params)
    if problems:
        return dict(failed=True, changed=False, msg='; '.join(problems))
    timer = Timer()
    try:
        result = work(task)
    except OpsError as err:
        result = dict(err.result)
        result.setdefault('elapsed_s', timer.elapsed())
        result.update(failed=True, msg=err.msg, changed=err.changed)
        return result
    except Exception as err:  # pylint: disable=broad-except
        return dict(failed=True, changed=False, elapsed_s=timer.elapsed(), exception=traceback.format_exc(),
                    msg='unexpected error in %s: %s: %s' % (name, type(err).__name__, err))
    if not task.diff:
        result.pop('diff', None)
    result.setdefault('elapsed_s', timer.elapsed())
    return result


def run(spec, work):
    """A module's whole main(): validate the params against spec (dict(argument_spec=...,
    mutually_exclusive=..., required_if=...), as AnsibleModule takes them), run work(task) through
    execute() and exit with its result. Every hotelbot.ops module supports check mode."""
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(supports_check_mode=True, **spec)
    task = Task(module.params, check_mode=module.check_mode, diff=module._diff,
                hide=module.no_log_values.add, warn=module.warn, progress=progress_file(module))
    result = execute(spec, work, task, name=module._name)
    if result.pop('failed', False):
        module.fail_json(**result)
    module.exit_json(**result)


def progress_file(module):
    """progress() of a module run async by plugin_utils.controller: the latest line, secrets removed,
    replaces the file the controller polls (HOTELBOT_PROGRESS_FILE, in async_status's format)."""
    path = os.environ.get('HOTELBOT_PROGRESS_FILE')
    if not path:
        return None
    from ansible.module_utils.common.parameters import remove_values

    def write(message):
        line = dict(started=True, finished=False, progress=remove_values(message, module.no_log_values))
        try:
            with open(path + '.tmp', 'w') as handle:
                json.dump(line, handle)
            os.replace(path + '.tmp', path)
        except OSError:
            pass  # a line not shown must not fail the work
    return write


def hide(module, *values):
    """Register values that must never appear in module output (even at -vvvv)."""
    for value in values:
        if value and len(str(value)) >= MIN_HIDDEN_LENGTH:
            module.no_log_values.add(str(value))
