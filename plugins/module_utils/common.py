# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared base for every hotelbot.ops module: errors, timing and the run loop.

A module builds its AnsibleModule, then hands one function to run(); that function
does the work through module_utils and returns the result dict. run() adds
elapsed_s, turns OpsError into fail_json with a plain message, and never lets a
traceback reach the user as the message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
import traceback


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


def empty_options(argument_spec, params, prefix=''):
    """Names of text options (str, path) given as empty or blank text where a value is needed.

    Needed: the option is required, or its default is a non-empty text. Ansible's `required` only
    asks for the key, so an unset inventory variable (`database: "{{ db | default('') }}"`) passes
    it, and libpq, boto3 and friends then quietly fall back to something else. Options whose
    default is empty or none may be given empty: there, empty means "not set". Suboptions are
    checked the same way and named as `checks[0].name`.
    """
    found = []
    for name, spec in (argument_spec or {}).items():
        value = (params or {}).get(name)
        default = spec.get('default')
        if (spec.get('type', 'str') in ('str', 'path') and isinstance(value, str) and not value.strip()
                and (spec.get('required') or (isinstance(default, str) and default.strip()))):
            found.append(prefix + name)
        if spec.get('options') and isinstance(value, (dict, list)):
            items = [(name, value)] if isinstance(value, dict) else [
                ('%s[%d]' % (name, index), item) for index, item in enumerate(value)]
            for label, item in items:
                if isinstance(item, dict):
                    found.extend(empty_options(spec['options'], item, '%s%s.' % (prefix, label)))
    return found


def run(module, operation):
    """Run operation() and exit the module with its result, or fail clearly.

    operation returns a dict of result fields (it must contain 'changed'). Options that must not
    be empty (empty_options) are refused before anything is done.
    """
    empty = empty_options(module.argument_spec, module.params)
    if empty:
        module.fail_json(msg='%s must not be empty' % ', '.join(empty), changed=False)
    timer = Timer()
    try:
        result = operation()
    except OpsError as err:
        fields = dict(err.result)
        fields.setdefault('elapsed_s', timer.elapsed())
        module.fail_json(msg=err.msg, changed=err.changed, **fields)
    except Exception as err:  # pylint: disable=broad-except
        # Last resort: a bug of ours. Say what happened; the traceback is shown at -vvv.
        module.fail_json(
            msg='unexpected error in %s: %s: %s' % (module._name, type(err).__name__, err),
            exception=traceback.format_exc(),
            elapsed_s=timer.elapsed(),
        )
    result.setdefault('elapsed_s', timer.elapsed())
    module.exit_json(**result)


# Shorter values (flags like "true", ports) would mask unrelated output everywhere;
# they are masked where they occur by name instead.
MIN_HIDDEN_LENGTH = 6


def hide(module, *values):
    """Register values that must never appear in module output (even at -vvvv)."""
    for value in values:
        if value and len(str(value)) >= MIN_HIDDEN_LENGTH:
            module.no_log_values.add(str(value))
