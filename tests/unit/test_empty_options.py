"""Every module refuses an empty value for an option that needs one (common.run's empty_options),
before doing anything: an unset inventory variable must not turn into libpq's, boto3's or our
own fallback (`database: ""` once backed up the database named like the user)."""
import importlib
import json
import pkgutil

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.hotelbot.ops.plugins import modules as modules_package
from ansible_collections.hotelbot.ops.plugins.module_utils import common

MODULES = sorted(info.name for info in pkgutil.iter_modules(modules_package.__path__))
POSTGRES_MODULES = ('pg_backup', 'pg_check', 'pg_restore', 'release_lock')
# What a module needs besides its required options to get as far as common.run.
# release_lock needs a database only with backend=postgres (its default), so it is not required in the spec.
EXTRA_ARGS = dict(pg_backup=dict(dest='/nonexistent/backups'), release_lock=dict(database='hotel'))


class SpecSeen(Exception):
    pass


def argument_spec_of(name):
    """The argument spec the module hands to AnsibleModule (captured, the module not run)."""
    module = importlib.import_module('ansible_collections.hotelbot.ops.plugins.modules.' + name)
    if hasattr(module, 'SPEC'):   # the module contract: the spec is module data
        return module, module.SPEC['argument_spec']
    seen = {}

    class Recorder:
        def __init__(self, argument_spec, **kwargs):
            seen['spec'] = argument_spec
            raise SpecSeen()

    original = module.AnsibleModule
    module.AnsibleModule = Recorder
    try:
        with pytest.raises(SpecSeen):
            module.main()
    finally:
        module.AnsibleModule = original
    return module, seen['spec']


def placeholder(spec):
    """A valid value for a required option."""
    if spec.get('type') == 'list' and spec.get('options'):
        return [dict((key, placeholder(sub)) for key, sub in spec['options'].items() if sub.get('required'))]
    return '/nonexistent/x' if spec.get('type') == 'path' else 'x'


def needs_value(spec):
    """Written out here, independently of common.empty_options: text options that are required or
    default to a non-empty text (options with choices are Ansible's to refuse)."""
    default = spec.get('default')
    return (spec.get('type', 'str') in ('str', 'path') and not spec.get('choices')
            and (spec.get('required') or (isinstance(default, str) and default != '')))


def cases():
    for name in MODULES:
        spec = argument_spec_of(name)[1]
        for option, option_spec in sorted(spec.items()):
            if needs_value(option_spec):
                yield name, option
            for sub, sub_spec in sorted((option_spec.get('options') or {}).items()):
                if needs_value(sub_spec):
                    yield name, '%s[0].%s' % (option, sub)


CASES = list(cases()) + [('release_lock', 'database')]


def run_module(name, args, capsys):
    module = argument_spec_of(name)[0]
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exited:
            module.main()
    assert exited.value.code == 1
    return json.loads(capsys.readouterr().out)


def valid_args(name):
    spec = argument_spec_of(name)[1]
    args = dict((option, placeholder(s)) for option, s in spec.items() if s.get('required'))
    args.update(EXTRA_ARGS.get(name, {}))
    return args


def test_every_postgres_module_is_covered_for_database():
    assert set(POSTGRES_MODULES) <= set(MODULES)
    for name in POSTGRES_MODULES:
        assert (name, 'database') in CASES
    assert ('http_check', 'checks[0].name') in CASES and ('pg_restore', 'maintenance_database') in CASES


@pytest.mark.parametrize('name, option', CASES, ids=['%s-%s' % case for case in CASES])
@pytest.mark.parametrize('empty', ['', '  '])
def test_empty_value_is_refused_naming_the_option(name, option, empty, capsys):
    args = valid_args(name)
    if '[0].' in option:
        outer, inner = option.split('[0].')
        args[outer][0][inner] = empty
    else:
        args[option] = empty
    result = run_module(name, args, capsys)
    assert result['failed'] is True and result['changed'] is False
    assert result['msg'] == '%s must not be empty' % option


def test_run_refuses_before_the_operation_starts():
    spec = dict(argument_spec=dict(database=dict(type='str', required=True), purpose=dict(type='str', default=''),
                                   host=dict(type='str'), schema=dict(type='str', default='public')))
    calls = []
    failed = common.execute(spec, lambda task: calls.append('worked') or dict(changed=True),
                            common.Task(dict(database='', purpose='', host='', schema=' ')))
    assert calls == [] and failed['msg'] == 'database, schema must not be empty'
    # empty where empty means "not set" is fine
    worked = common.execute(spec, lambda task: calls.append('worked') or dict(changed=False),
                            common.Task(dict(database='hotel', purpose='', host='', schema='public')))
    assert calls == ['worked'] and 'failed' not in worked
