# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which keys of a facts contract a dict lacks: the roles check a platform's facts with it right
after the platform's tasks set them (docs/platforms.md), in the task that uses them anyway."""

from collections.abc import Mapping

DOCUMENTATION = r"""
name: missing_keys
short_description: The keys of a contract a dict does not have
version_added: 0.2.0
description:
  - Returns, in the order given, each required key the input lacks. A dotted key (V(current.id)) looks inside a nested
    dict; when the outer key is missing or not a dict, its dotted keys are all missing.
  - An input that is not a dict (for example an undefined fact defaulted to V(none)) lacks every key.
positional: required
options:
  _input:
    description: The facts to check.
    type: raw
    required: true
  required:
    description: The keys the facts must have.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Check the platform's facts
  ansible.builtin.assert:
    that: missing | length == 0
    fail_msg: "the platform's tasks did not set {{ missing | join(', ') }}"
  vars:
    missing: "{{ preflight_release | default(none) | hotelbot.ops.missing_keys(['platform', 'current.id']) }}"
"""

RETURN = r"""
_value:
  description: The required keys that are missing, dotted as given.
  type: list
  elements: str
"""


def missing_keys(facts, required):
    """The keys of `required` (dotted for nested dicts) that `facts` does not have."""
    return [key for key in required if not _has(facts, key.split('.'))]


def _has(facts, path):
    for part in path:
        if not isinstance(facts, Mapping) or part not in facts:
            return False
        facts = facts[part]
    return True


class FilterModule:
    """hotelbot.ops filters."""

    def filters(self):
        return {'missing_keys': missing_keys}
