"""The platform contract (docs/platforms.md): what roles/preflight/tasks/<platform>.yml and
roles/app_release/tasks/<platform>.yml must set, checked statically over every platform's file and
at run time by the roles themselves (a test-only platform that leaves a key out fails naming it).
No sandbox: the runtime cases run ansible-playbook on localhost with copies of the roles."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from ansible_collections.hotelbot.ops.plugins.filter.incident_decision import incident_decision
from ansible_collections.hotelbot.ops.plugins.filter.missing_keys import missing_keys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
PLAYBOOKS = ('playbooks/rollback.yml', 'playbooks/hotpatch.yml', 'playbooks/auto_rollback.yml',
             'rollback.yml', 'hotpatch.yml')


def load(path):
    with open(os.path.join(ROOT, path)) as handle:
        return yaml.safe_load(handle)


def role_vars(role):
    return load('roles/%s/vars/main.yml' % role)


def platforms(role):
    """Platform names of a role: its tasks files, minus the ones the role says are not a platform's."""
    not_platforms = role_vars(role)['%s__not_platforms' % role]
    names = [name[:-4] for name in os.listdir(os.path.join(ROOT, 'roles', role, 'tasks')) if name.endswith('.yml')]
    return sorted(name for name in names if name not in not_platforms and not name.startswith('mark_stable_'))


def tasks_of(tasks):
    """Every task of a tasks file, blocks flattened."""
    for task in tasks or []:
        if 'block' in task:
            for part in ('block', 'rescue', 'always'):
                yield from tasks_of(task.get(part))
        else:
            yield task


def facts_set(role, platform, fact):
    """The fact as the platform's tasks file sets it (merged over its set_fact tasks)."""
    value = {}
    for task in tasks_of(load('roles/%s/tasks/%s.yml' % (role, platform))):
        value.update((task.get('ansible.builtin.set_fact') or {}).get(fact) or {})
    return value


def test_every_platform_has_both_roles_files():
    assert platforms('preflight') == platforms('app_release')
    assert 'ecs' in platforms('preflight')
    for platform in platforms('app_release'):
        assert os.path.exists(os.path.join(ROOT, 'roles/app_release/tasks/mark_stable_%s.yml' % platform)), platform


@pytest.mark.parametrize('platform', platforms('preflight'))
def test_each_preflight_platform_sets_every_key(platform):
    facts = facts_set('preflight', platform, 'preflight_release')
    assert missing_keys(facts, role_vars('preflight')['preflight__release_keys']) == []
    assert facts['platform'] == platform


@pytest.mark.parametrize('platform', platforms('app_release'))
def test_each_app_release_platform_sets_every_key(platform):
    facts = facts_set('app_release', platform, 'app_release_result')
    assert missing_keys(facts, role_vars('app_release')['app_release__result_keys']) == []
    assert facts['platform'] == platform


@pytest.mark.parametrize('path', PLAYBOOKS)
def test_the_playbooks_name_no_platform(path):
    with open(os.path.join(ROOT, path)) as handle:
        # A platform's action group is mapped to its connection settings, one line per play (docs/platforms.md).
        text = re.sub(r'(?m)^ *group/hotelbot\.ops\.\w+: "\{\{ hotelbot_\w+_module_defaults \}\}"$', '', handle.read())
    for platform in platforms('preflight'):
        assert not re.search(r'\b%s\b' % platform, text, re.IGNORECASE), '%s names %s' % (path, platform)
        assert 'hotelbot_%s_' % platform not in text


def test_missing_keys_reads_dotted_keys():
    facts = {'platform': 'x', 'current': {'id': 1}, 'target': 'not a dict'}
    assert missing_keys(facts, ['platform', 'current.id', 'current.label', 'target.id', 'reason']) == [
        'current.label', 'target.id', 'reason']
    assert missing_keys(None, ['platform']) == ['platform']


MATRIX = load('roles/incident_policy/defaults/main.yml')['incident_policy_matrix']


@pytest.mark.parametrize('severity, default, hotfix, action, full', [
    ('', 'rollback', False, 'rollback', False),
    ('', 'evaluate', False, 'evaluate', False),
    ('p0', 'evaluate', False, 'rollback', True),
    ('P1', 'rollback', False, 'rollback', False),
    ('P1', 'rollback', 'true', 'hotfix', False),
    ('P2', 'rollback', False, 'evaluate', False),
    ('P3', 'rollback', True, 'plan', False),
])
def test_incident_decision(severity, default, hotfix, action, full):
    decision = incident_decision(severity, MATRIX, default, hotfix)
    assert decision['action'] == action and decision['full'] is full
    assert decision['severity'] == severity.upper()


def test_incident_decision_reasons():
    assert incident_decision('', MATRIX, 'evaluate')['reason'] == 'no severity given: evaluate'
    assert incident_decision('P1', MATRIX, 'rollback', True)['reason'] == (
        'P1 (High, respond 15 minutes): rollback unless hotfix - a hotfix is available')


@pytest.mark.parametrize('severity, default, message', [
    ('P9', 'rollback', "severity must be one of P0, P1, P2, P3 (or empty), got 'P9'"),
    ('', 'maybe', "the default action must be one of rollback, rollback_unless_hotfix, evaluate, plan"),
])
def test_incident_decision_refuses(severity, default, message):
    from ansible.errors import AnsibleFilterError
    with pytest.raises(AnsibleFilterError, match=message.replace('(', r'\(').replace(')', r'\)')):
        incident_decision(severity, MATRIX, default)


# ---- at run time: the roles check a platform's facts right after its tasks file

BROKEN_PREFLIGHT = """---
- name: Set the facts, leaving out lock_name and current.version
  ansible.builtin.set_fact:
    preflight_release:
      platform: testonly
      environment: test
      scope: app
      service: bot
      lock_backend: postgres
      current: {id: 2, label: bot:2, images: [bot:2]}
      target: {id: 1, label: bot:1, version: '1', images: [bot:1]}
      reason: test
      changes: true
      last_stable: ''
      ledger: nothing
      deployments: 1
      defined_env: []
      env_of: ''
      staging: ''
      approved_by: ''
"""

BROKEN_APP_RELEASE = """---
- name: Set the result, leaving out to_id and events
  ansible.builtin.set_fact:
    app_release_result:
      platform: testonly
      changed: false
      failed: false
      msg: ''
      from: bot:2
      to: bot:1
      to_images: [bot:1]
      deployment_id: null
      rollout_state: null
      waited_s: 0
"""


@pytest.fixture(scope='module')
def roles_copy(tmp_path_factory):
    """Copies of the two roles with a test-only platform `testonly` whose files leave keys out."""
    roles = tmp_path_factory.mktemp('roles')
    for role, broken in (('preflight', BROKEN_PREFLIGHT), ('app_release', BROKEN_APP_RELEASE)):
        shutil.copytree(os.path.join(ROOT, 'roles', role), roles / role)
        (roles / role / 'tasks' / 'testonly.yml').write_text(broken)
    return roles


def run_role(roles, role, platform):
    play = [{'hosts': 'localhost', 'gather_facts': False, 'tasks': [{
        'ansible.builtin.import_role': {'name': role, 'rolespec_validate': False},
        'vars': {'%s_platform' % role: platform, 'preflight_environment': 'test'}}]}]
    path = roles / ('play-%s-%s.yml' % (role, platform))
    path.write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'), ANSIBLE_ROLES_PATH=str(roles),
               ANSIBLE_NOCOLOR='1', ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, '.collections'))
    return subprocess.run([os.path.join(BIN, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local', str(path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize('role, missing', [
    ('preflight', ['preflight_release.lock_name', 'preflight_release.current.version']),
    ('app_release', ['app_release_result.to_id', 'app_release_result.events']),
])
def test_a_platform_that_leaves_a_key_out_fails_naming_it(roles_copy, role, missing):
    run = run_role(roles_copy, role, 'testonly')
    assert run.returncode != 0, run.stdout
    assert 'roles/%s/tasks/testonly.yml did not set %s' % (role, ', '.join(missing)) in run.stdout.replace('\n    ', ' ')


def test_a_platform_without_a_tasks_file_fails_naming_it_and_the_files_there(roles_copy):
    run = run_role(roles_copy, 'preflight', 'k8s')
    assert run.returncode != 0
    assert ("platform 'k8s' has no tasks file roles/preflight/tasks/k8s.yml (platforms: ecs, fly, testonly)"
            in run.stdout.replace('\n    ', ' ').replace("''", "'")), run.stdout
