"""One source of truth for the variables the playbooks read (playbooks/vars/inputs_spec.yml): every
hotelbot_* variable and every playbook input read by playbooks/ and roles/*/{tasks,defaults} is in it,
every entry in it is read, the plays' defaults are its defaults, the shipped example inventory lists
exactly its inventory variables, and docs/inventory.md is generated from it.

Regenerate the docs after changing the spec: .venv/bin/python tests/unit/test_inventory_docs.py --write
"""

import functools
import json
import pathlib
import re
import sys
import textwrap

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC_FILE = ROOT / 'playbooks' / 'vars' / 'inputs_spec.yml'
DOCS = ROOT / 'docs' / 'inventory.md'
EXAMPLE = ROOT / 'examples' / 'inventory' / 'production'
SPEC_KEY = 'hotelbot_inputs_spec'
PLAYBOOKS = ('rollback', 'hotpatch', 'auto_rollback', 'backup')
# An input's name: the inventory's prefix, the playbooks' prefixes and the two incident inputs. Not a
# module (hotelbot.ops.release_lock) or a file (tasks/rollback_database.yml).
NAME = re.compile(r'(?<![\w./])(hotelbot_\w+|(?:rollback|hotpatch|auto_rollback|backup|release)_\w+|severity|hotfix_available)'
                  r'(?![\w.]*\.yml)(?!\w)')


# Keys whose value is a Jinja expression without braces; elsewhere only {{ }} and {% %} read variables.
CONDITIONS = ('when', 'that', 'failed_when', 'changed_when', 'until')
TEMPLATE = re.compile(r'{{.*?}}|{%.*?%}', re.S)


@functools.lru_cache(maxsize=None)
def _load(path):
    return yaml.load(path.read_text(), Loader=getattr(yaml, 'CSafeLoader', yaml.SafeLoader))


def spec():
    return _load(SPEC_FILE)[SPEC_KEY]


def _sources():
    files = sorted((ROOT / 'playbooks').rglob('*.yml'))
    for role in sorted((ROOT / 'roles').iterdir()):
        files += sorted((role / 'tasks').glob('*.yml')) + sorted((role / 'defaults').glob('*.yml'))
    return [path for path in files if path != SPEC_FILE]


def _walk(node, defined, read, in_vars=False, expression=False):
    """Names read (in templates and conditions) and names the plays define themselves (registered,
    set_fact, task vars, computed play vars): those are not inputs."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'register':
                defined.add(value)
            elif key in ('set_fact', 'ansible.builtin.set_fact') and isinstance(value, dict):
                defined.update(value)
            if in_vars and (not isinstance(value, (str, int, float, bool, list)) or '{{' in str(value)):
                defined.add(key)
            _walk(value, defined, read, in_vars=key == 'vars', expression=key in CONDITIONS)
    elif isinstance(node, list):
        for item in node:
            _walk(item, defined, read, expression=expression)
    elif isinstance(node, str):
        for code in [node] if expression else TEMPLATE.findall(node):
            read.update(name for name in NAME.findall(code) if '__' not in name)


@functools.lru_cache(maxsize=None)
def scan():
    """(names read, names the playbooks and roles compute themselves) over playbooks/ and the roles."""
    defined, read = set(), set()
    for path in _sources():
        doc = _load(path)
        if path.parent.name in ('defaults', 'vars'):
            defined.update(doc or {})
        else:
            # A play's own vars_files (the spec itself is not scanned).
            defined.update(name for play in doc or [] for name in [SPEC_KEY] if 'vars/inputs_spec.yml' in str(play.get('vars_files')))
        _walk(doc, defined, read)
    return read, defined


def plain_play_vars(playbook):
    """The main plays' vars with a plain default: inputs, unless the spec lists them as internal."""
    plays = _load(ROOT / 'playbooks' / f'{playbook}.yml')
    return {name: value for play in plays[1:] for name, value in (play.get('vars') or {}).items()
            if NAME.fullmatch(name) and '__' not in name and '{{' not in str(value)
            and name not in spec()[playbook].get('internal', ())}


def known(entries=None):
    entries = entries or spec()
    names = set(entries['inventory'])
    for playbook in PLAYBOOKS:
        names.update(entries[playbook]['options'])
        names.update(entries[playbook].get('internal', ()))
    return names


def test_every_variable_read_is_in_the_spec():
    read, defined = scan()
    assert read, 'the scan found nothing: the NAME pattern is broken'
    inputs = (read - defined).union(*(plain_play_vars(playbook) for playbook in PLAYBOOKS))
    missing = sorted(inputs - known())
    assert not missing, f'read by playbooks/ or roles/ but not in {SPEC_FILE.name}: {missing}'


def test_every_spec_entry_is_read():
    read, _defined = scan()
    stale = sorted(known() - read)
    assert not stale, f'in {SPEC_FILE.name} but read nowhere: {stale}'


@pytest.mark.parametrize('playbook', PLAYBOOKS)
def test_play_defaults_are_the_spec_defaults(playbook):
    """The first play checks the inputs; the main play's plain defaults are the spec's."""
    plays = _load(ROOT / 'playbooks' / f'{playbook}.yml')
    options = spec()[playbook]['options']
    first = plays[0]
    assert first['vars']['hotelbot__inputs_of'] == playbook and 'check_inputs.yml' in str(first['tasks']), \
        'the first play checks the inputs'
    plain = plain_play_vars(playbook)
    assert plain, 'no play vars found'
    wrong = {name: (value, options.get(name, {}).get('default', '(not in the spec)')) for name, value in plain.items()
             if name not in options or options[name].get('default') != value}
    assert not wrong, f'play default differs from {SPEC_FILE.name} (play, spec): {wrong}'


@pytest.mark.parametrize('entry', ('inventory',) + PLAYBOOKS)
def test_spec_is_an_argument_spec(entry):
    """validate_argument_spec takes it as it is: its defaults validate against their own types."""
    options = spec()[entry] if entry == 'inventory' else spec()[entry]['options']
    result = ArgumentSpecValidator(options).validate({})
    assert not result.error_messages
    assert all(option.get('description') for option in options.values())
    if entry != 'inventory':
        assert spec()[entry]['hosts'] in options


def _example_names():
    text = (EXAMPLE / 'group_vars' / 'hotelbot.yml').read_text()
    # Set (name: value) or shown commented out (# name: value).
    return set(re.findall(r'^(?:# )?(hotelbot_\w+):', text, re.M))


def test_example_inventory_lists_exactly_the_inventory_variables():
    listed, wanted = _example_names(), set(spec()['inventory'])
    assert not wanted - listed, f'not in the example inventory: {sorted(wanted - listed)}'
    assert not listed - wanted, f'in the example inventory but read nowhere: {sorted(listed - wanted)}'
    values = yaml.safe_load((EXAMPLE / 'group_vars' / 'hotelbot.yml').read_text())
    result = ArgumentSpecValidator(spec()['inventory']).validate(values)
    assert not result.error_messages


def test_example_inventory_is_what_the_repo_uses():
    """inventory/production (the repo's) is a copy of the shipped example."""
    for path in EXAMPLE.rglob('*.yml'):
        copy = ROOT / 'inventory' / 'production' / path.relative_to(EXAMPLE)
        assert copy.read_text() == path.read_text(), f'{copy} differs from {path}'


def test_example_inventory_ships_in_the_collection():
    ignored = yaml.safe_load((ROOT / 'galaxy.yml').read_text())['build_ignore']
    assert not {'examples', 'examples/inventory', 'docs', 'playbooks'} & set(ignored)


def render(entries=None):
    """docs/inventory.md from the spec."""
    entries = entries or spec()
    out = ['# Variables: the inventory and each playbook\'s inputs', '',
           '<!-- Generated from playbooks/vars/inputs_spec.yml by tests/unit/test_inventory_docs.py --write;',
           '     edit the spec, not this file. -->', '',
           'An inventory sets the `hotelbot_*` variables per deployment (one host per deployment, in the group',
           '`hotelbot`). The collection ships a commented one: `examples/inventory/production/` (in an installed',
           'collection: `ansible_collections/hotelbot/ops/examples/inventory/production/`). Copy it, fill it in, keep',
           'secrets in Ansible Vault or AWX credentials. The playbooks\' inputs are extra vars (`-e`, an AWX survey,',
           'a CI stage); each playbook checks them first and refuses a wrong value, an unknown name with its',
           'prefixes (naming the nearest known one) and a run that matches no host, before anything is touched.', '']
    out += _table('Inventory (`hotelbot_*`)', entries['inventory'])
    for playbook in PLAYBOOKS:
        title = f'`hotelbot.ops.{playbook}` (extra vars; unknown: {", ".join(p + "*" for p in entries[playbook]["prefixes"])})'
        out += _table(title, entries[playbook]['options'])
    return '\n'.join(out)


def _table(title, options):
    rows = [f'## {title}', '', '| variable | type | default | meaning |', '|---|---|---|---|']
    for name, option in options.items():
        kind = option['type'] + (f' of {option["elements"]}' if option.get('elements') else '')
        if option.get('choices'):
            kind += ': ' + ' \\| '.join(f'`{choice}`' for choice in option['choices'])
        default = option.get('default')
        default = 'unset' if default is None else f'`{default if isinstance(default, str) and default else json.dumps(default)}`'
        meaning = ' '.join(option['description'].split()).replace('|', '\\|')
        meaning = re.sub(r'V\(([^)]*)\)', r'`\1`', meaning)
        secret = ' Secret: Vault or AWX credential.' if option.get('no_log') else ''
        rows.append(f'| `{name}` | {kind} | {default} | {meaning}{secret} |')
    return rows + ['']


def test_docs_are_generated_from_the_spec():
    assert DOCS.read_text() == render(), f'regenerate: .venv/bin/python {pathlib.Path(__file__).relative_to(ROOT)} --write'


if __name__ == '__main__':
    if sys.argv[1:] == ['--write']:
        DOCS.write_text(render())
        print(textwrap.shorten(f'wrote {DOCS}', 200))
