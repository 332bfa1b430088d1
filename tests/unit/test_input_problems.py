"""The hotelbot.ops.input_problems filter: validate_argument_spec's real errors for the real spec, said
in one line naming the variable; unknown names with the nearest known one; no host."""

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.hotelbot.ops.plugins.filter.input_problems import input_problems
from test_inventory_docs import spec


def problems(playbook, given, hosts=('sandbox',), **kwargs):
    """The filter on what validate_argument_spec reports for `given` (the same validator it runs)."""
    entry = spec()[playbook]
    # The action plugin validates only the variables the spec names.
    errors = ArgumentSpecValidator(entry['options']).validate(
        {name: value for name, value in given.items() if name in entry['options']}).error_messages
    return input_problems(errors, entry, list(given), list(hosts), **kwargs)


@pytest.mark.parametrize('given, expected', [
    ({'rollback_scope': 'datbase'}, ["rollback_scope must be one of app, db, app+db, got 'datbase'"]),
    ({'rollback_scope': ''}, ["rollback_scope must be one of app, db, app+db, got ''"]),
    ({'rollback_targt': 'previous'}, ['unknown variable rollback_targt (did you mean rollback_target?)']),
    ({'rollback_qqqqqqq': 1}, ["unknown variable rollback_qqqqqqq (the playbook's variables: docs/inventory.md)"]),
    ({'rollback_approved': 'maybe'}, ["rollback_approved must be a bool, got 'maybe'"]),
    ({'rollback_wait_timeout': 'soon'}, ["rollback_wait_timeout must be an int, got 'soon'"]),
    ({'rollback_scope': 'app+db', 'rollback_approved': 'yes', 'rollback_wait_timeout': '60', 'severity': 'p1',
      'release_break_lock': 'alice@ci/1'}, []),
])
def test_rollback_inputs(given, expected):
    assert problems('rollback', given) == expected


def test_other_playbooks_prefixes_are_not_checked():
    """hotelbot_* and another playbook's names are not the rollback's business."""
    assert problems('rollback', {'hotpatch_image': 'x', 'hotelbot_whatever': 1, 'auto_rollback_lock_wait': '1m'}) == []
    assert problems('auto_rollback', {'auto_rollback_lock_wiat': '5m'}) == [
        'unknown variable auto_rollback_lock_wiat (did you mean auto_rollback_lock_wait?)']


def test_no_host():
    assert problems('backup', {}, hosts=(), pattern='hotelbot', limit='db-1', inventory=['/x/hosts.yml']) == [
        "no host matches 'hotelbot' with --limit 'db-1' in inventory /x/hosts.yml: pass -i <your inventory> "
        "(the collection's examples/inventory/production, docs/inventory.md)"]
