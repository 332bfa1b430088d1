# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What is wrong with a playbook's inputs, one line each, in the words of the variable the user typed:
each playbook's first play refuses the run with these lines before anything is touched."""

import difflib
import re

DOCUMENTATION = r"""
name: input_problems
short_description: One line per wrong input of a playbook (value, unknown name, no host)
version_added: 0.1.0
description:
  - Rewrites the errors of M(ansible.builtin.validate_argument_spec) into one line each that names the variable
    (C(rollback_scope must be one of app, db, app+db, got 'datbase')).
  - Adds one line per given variable with one of the playbook's prefixes that its spec does not know, with the
    nearest known name, for example C(unknown variable rollback_targt), then C(did you mean rollback_target?) in
    parentheses.
  - Adds one line when the playbook's host pattern matches no host, naming the pattern, the limit and the inventory.
positional: spec, given, hosts
options:
  _input:
    description: The C(argument_errors) of M(ansible.builtin.validate_argument_spec) (empty when it passed).
    type: list
    elements: str
    required: true
  spec:
    description: The playbook's entry in C(playbooks/vars/inputs_spec.yml) (C(prefixes), C(hosts), C(options)).
    type: dict
    required: true
  given:
    description: The names of the variables defined for the run (C(lookup('ansible.builtin.varnames', ...))).
    type: list
    elements: str
    required: true
  hosts:
    description: The hosts the playbook's host pattern and C(--limit) leave.
    type: list
    elements: str
    required: true
  pattern:
    description: The playbook's host pattern, for the message.
    type: str
    default: hotelbot
  limit:
    description: The C(--limit) given, for the message.
    type: str
    default: ''
  inventory:
    description: The inventory sources, for the message.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Refuse a wrong value, an unknown variable or no host (nothing was touched)
  ansible.builtin.fail:
    msg: "{{ problems | join('; ') }}"
  when: problems
  vars:
    problems: >-
      {{ checked.argument_errors | default([]) | hotelbot.ops.input_problems(hotelbot_inputs_spec.rollback,
         query('ansible.builtin.varnames', '^(rollback|release)_'), query('ansible.builtin.inventory_hostnames', 'hotelbot')) }}
"""

RETURN = r"""
_value:
  description: The problems, one line each; empty when the inputs are right.
  type: list
  elements: str
"""

_CHOICES = re.compile(r"^value of (?P<name>\S+) must be one of: (?P<choices>.*), got: ?(?P<value>.*)$")
_TYPE = re.compile(r"^argument '(?P<name>[^']+)' is of type \S+ and we were unable to convert to (?P<type>\w+): (?P<why>.*)$")
_GOT = re.compile(r"""["']*'(?P<value>.*?)'""")


def input_problems(argument_errors, spec, given, hosts, pattern='hotelbot', limit='', inventory=()):
    """Every problem of a playbook's inputs, one line each, in the order the user would fix them."""
    known = sorted(spec.get('options') or {})
    problems = [_one_line(error) for error in argument_errors or []]
    prefixes = tuple(spec.get('prefixes') or ())
    problems += [_unknown(name, known, prefixes) for name in sorted(set(given))
                 if name not in known and name.startswith(prefixes)]
    if not hosts:
        problems.append(_no_host(pattern, limit, inventory))
    return problems


def _one_line(error):
    """validate_argument_spec's message, said with the variable first and the value quoted."""
    error = ' '.join(str(error).splitlines())
    found = _CHOICES.match(error)
    if found:
        return f"{found['name']} must be one of {found['choices']}, got '{found['value']}'"
    found = _TYPE.match(error)
    if found:
        value = _GOT.search(found['why'])
        got = f", got '{value['value']}'" if value else f": {found['why']}"
        return f"{found['name']} must be a{'n' if found['type'][0] in 'aeiou' else ''} {found['type']}{got}"
    return error


def _unknown(name, known, prefixes):
    nearest = _nearest(name, known, prefixes)
    return f"unknown variable {name}" + (f" (did you mean {nearest}?)" if nearest else
                                         " (the playbook's variables: docs/inventory.md)")


def _nearest(name, known, prefixes):
    """The known name closest to a typo, compared after the shared prefix (which makes every name look alike)."""
    prefix = next(p for p in prefixes if name.startswith(p))
    rests = {k[len(prefix):]: k for k in known if k.startswith(prefix)}
    found = difflib.get_close_matches(name[len(prefix):], list(rests), n=1, cutoff=0.6)
    if found:
        return rests[found[0]]
    found = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
    return found[0] if found else None


def _no_host(pattern, limit, inventory):
    where = ', '.join(inventory) or 'none'
    limited = f" with --limit '{limit}'" if limit else ''
    return (f"no host matches '{pattern}'{limited} in inventory {where}: pass -i <your inventory> "
            "(the collection's examples/inventory/production, docs/inventory.md)")


class FilterModule:
    """hotelbot.ops filters."""

    def filters(self):
        return {'input_problems': input_problems}
