# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollback runbook's decision matrix applied to a severity, on the controller: a filter
costs no task (a task costs a worker fork per host, even when skipped)."""

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: incident_decision
short_description: What an incident severity calls for (the runbook's decision matrix)
version_added: 0.2.0
description:
  - Looks the severity up in the matrix (as in the C(incident_policy) role's defaults) and says what to do now.
  - An unknown severity or default action fails, naming what is allowed; nothing has changed at that point.
positional: matrix, default_action, hotfix_available
options:
  _input:
    description: The severity, V(P0) to V(P3) in any case, or empty for none given.
    type: str
    required: true
  matrix:
    description: Rows keyed by severity, each with C(name), C(response_time), C(action) and C(full).
    type: dict
    required: true
  default_action:
    description: The action when no severity is given.
    type: str
    choices: [rollback, rollback_unless_hotfix, evaluate, plan]
    default: rollback
  hotfix_available:
    description: Whether a hotfix is ready (turns V(rollback_unless_hotfix) into V(hotfix)).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Decide
  ansible.builtin.set_fact:
    decision: "{{ 'P1' | hotelbot.ops.incident_decision(incident_policy_matrix, 'rollback', true) }}"
  # decision.action == 'hotfix'
"""

RETURN = r"""
_value:
  description:
    - C(severity) (upper case, empty when none given), C(name), C(response_time), C(full) (bool),
      C(action) (V(rollback), V(evaluate), V(hotfix) or V(plan)) and C(reason), a line for people.
  type: dict
"""

ACTIONS = ('rollback', 'rollback_unless_hotfix', 'evaluate', 'plan')


def incident_decision(severity, matrix, default_action='rollback', hotfix_available=False):
    """The decision for one severity; the rule is the matrix's row, else the caller's default."""
    key = str(severity or '').strip().upper()
    if key and key not in matrix:
        raise AnsibleFilterError(
            f"severity must be one of {', '.join(matrix)} (or empty), got '{severity}'; nothing was changed")
    if default_action not in ACTIONS:
        raise AnsibleFilterError(
            f"the default action must be one of {', '.join(ACTIONS)}, got '{default_action}'; nothing was changed")
    row = matrix.get(key) or {}
    action = row.get('action', default_action)
    hotfix = action == 'rollback_unless_hotfix' and _truthy(hotfix_available)
    return {
        'severity': key,
        'name': row.get('name', 'not given'),
        'response_time': row.get('response_time', ''),
        'full': _truthy(row.get('full', False)),
        'action': _action_now(action, hotfix),
        'reason': _reason(key, row, action, default_action) + (' - a hotfix is available' if hotfix else ''),
    }


def _action_now(action, hotfix):
    if action == 'rollback_unless_hotfix':
        return 'hotfix' if hotfix else 'rollback'
    return action


def _reason(key, row, action, default_action):
    if not row:
        return f'no severity given: {default_action}'
    readable = action.replace('_', ' ')
    return f"{key} ({row.get('name')}, respond {row.get('response_time')}): {readable}"


def _truthy(value):
    """Extra vars arrive as text: 'true', 'yes', '1' and 'on' mean true, as in Ansible's bool filter."""
    if isinstance(value, str):
        return value.strip().lower() in ('true', 'yes', '1', 'on', 'y', 't')
    return bool(value)


class FilterModule:
    """hotelbot.ops filters."""

    def filters(self):
        return {'incident_decision': incident_decision}
