"""The CI examples (examples/ci): both pipeline files call only scripts that exist, and those
scripts run here as a CI runner runs them - install.sh installs the collection from this checkout
into an empty collections path, then each stage script runs hotelbot.ops.<playbook> from that
installed copy against the sandbox. Assertions are on exit codes and sandbox state."""
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from sandbox import control
from tests.integration.conftest import FAMILY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
CI = os.path.join(ROOT, 'examples', 'ci')
SCRIPTS = os.path.join(CI, 'scripts')
SCRIPT_CALL = re.compile(r'(?:^|\s)(examples/ci/scripts/[^\s;&|]+)')


def load(name):
    with open(os.path.join(CI, name), encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def github_commands(workflow):
    return {job: [step['run'] for step in spec['steps'] if 'run' in step] for job, spec in workflow['jobs'].items()}


def gitlab_commands(pipeline):
    before = pipeline.get('default', {}).get('before_script', [])
    return {job: before + spec['script'] for job, spec in pipeline.items()
            if isinstance(spec, dict) and 'script' in spec and not job.startswith('.')}


def called(commands):
    return {path for lines in commands.values() for line in lines for path in SCRIPT_CALL.findall(line)}


def test_both_pipelines_call_existing_scripts_and_every_stage_script_is_called():
    stage_scripts = {'examples/ci/scripts/' + f for f in os.listdir(SCRIPTS) if f.endswith('.sh') and f != 'lib.sh'}
    github, gitlab = github_commands(load('github-actions.yml')), gitlab_commands(load('gitlab-ci.yml'))
    for commands in (github, gitlab):
        paths = called(commands)
        for path in paths:
            assert os.path.isfile(os.path.join(ROOT, path)) and os.access(os.path.join(ROOT, path), os.X_OK), path
        assert paths == stage_scripts
        # Each stage runs its own script after the install step.
        for job, script in (('rollback', 'rollback.sh'), ('hotpatch', 'hotpatch.sh'), ('auto-rollback', 'auto_rollback.sh')):
            assert called({job: commands[job]}) == {'examples/ci/scripts/install.sh', 'examples/ci/scripts/' + script}


def test_the_auto_rollback_stage_is_scheduled():
    workflow = load('github-actions.yml')
    triggers = workflow['on']
    assert triggers['schedule'][0]['cron'] == '*/5 * * * *'
    assert "github.event_name == 'schedule'" in workflow['jobs']['auto-rollback']['if']
    assert load('gitlab-ci.yml')['auto-rollback']['rules'] == [{'if': '$CI_PIPELINE_SOURCE == "schedule"'}]


@pytest.fixture(scope='module')
def runner_env(sandbox, tmp_path_factory):
    """A CI runner's environment after install.sh: the collection installed from this checkout."""
    collections = tmp_path_factory.mktemp('ci') / 'collections'
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get('PATH', ''), ANSIBLE_NOCOLOR='1',
               ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'),
               HOTELBOT_SANDBOX_DIR=str(sandbox.dir), HOTELBOT_INVENTORY='inventory/sandbox')
    installed = stage('install.sh', env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    manifest = collections / 'ansible_collections' / 'hotelbot' / 'ops' / 'MANIFEST.json'
    assert json.loads(manifest.read_text())['collection_info']['version']
    assert (manifest.parent / 'playbooks' / 'rollback.yml').is_file()
    return env


def stage(script, env, **variables):
    return subprocess.run([os.path.join(SCRIPTS, script)], cwd=ROOT, env=dict(env, **variables), capture_output=True,
                          text=True, timeout=400, check=False)


def test_the_stages_run_the_installed_collection(runner_env):
    found = subprocess.run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'list', 'hotelbot.ops', '--format', 'json'],
                           env=runner_env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    # Only the installed copy: the environment's collections path replaces ansible.cfg's link to the checkout.
    assert json.loads(found.stdout) == {
        os.path.join(runner_env['ANSIBLE_COLLECTIONS_PATH'], 'ansible_collections'): {'hotelbot.ops': {'version': '0.1.0'}}}


def test_rollback_stage_rolls_back(fresh, runner_env):
    fresh.deploy(4)
    control.reset_calls(fresh.dir)
    run = stage('rollback.sh', runner_env, ROLLBACK_APPROVED_BY='ci user "bob"')
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert fresh.revision() == 3
    assert fresh.tags()['hotelbot.ops/rollback'] == '%s:4->%s:3' % (FAMILY, FAMILY)
    assert fresh.calls()['ecs:UpdateService'] == 1


@pytest.mark.parametrize('inventory', [None, 'inventory/does-not-exist', 'no-hotelbot-group'])
def test_a_stage_with_no_hosts_fails_and_changes_nothing(fresh, runner_env, inventory, tmp_path):
    fresh.deploy(4)
    control.reset_calls(fresh.dir)
    env = {k: v for k, v in runner_env.items() if k != 'HOTELBOT_INVENTORY'}
    if inventory == 'no-hotelbot-group':
        # Not a directory holding executables: ansible would run each as an inventory script.
        inventory = tmp_path / 'hosts.yml'
        inventory.write_text('other:\n  hosts:\n    elsewhere:\n')
    if inventory:
        env['HOTELBOT_INVENTORY'] = str(inventory)
    run = stage('rollback.sh', env)
    assert run.returncode != 0
    assert 'HOTELBOT_INVENTORY' in run.stderr or 'no host' in run.stderr, run.stderr
    assert fresh.calls() == {}  # not even a read: the stage stopped before any playbook ran
    assert fresh.revision() == 4


def test_hotpatch_stage_fails_when_the_gate_says_roll_back(fresh, runner_env, tmp_path):
    before = fresh.ecs.list_task_definitions(familyPrefix=FAMILY, status='ACTIVE')['taskDefinitionArns']
    flaky = fresh.state['ecs']['images']['3'].rsplit(':', 1)[0] + ':1.2.1-flaky'
    failures = tmp_path / 'failures.jsonl'
    fresh.metrics_history()
    run = stage('hotpatch.sh', dict(
        runner_env, ANSIBLE_CALLBACK_PLUGINS=os.path.join(ROOT, 'tests', 'integration', 'callback_plugins'),
        ANSIBLE_CALLBACKS_ENABLED='failures_to_file', HOTELBOT_FAILURES_FILE=str(failures)),
        HOTPATCH_CHANGE_ID='CHG-9', HOTPATCH_IMAGE=flaky, HOTPATCH_TESTS_PASSED='true')
    assert run.returncode != 0, run.stdout[-3000:]
    new = [a for a in fresh.ecs.list_task_definitions(familyPrefix=FAMILY, status='ACTIVE')['taskDefinitionArns']
           if a not in before and a.rsplit(':', 1)[0].endswith('/' + FAMILY)]
    assert len(new) == 1, 'the hot-patch was shipped before the gate judged it'
    assert fresh.revision() == 3
    assert fresh.tags()['hotelbot.ops/last-stable'] == FAMILY + ':3'
    assert 'hotelbot.ops/stable' not in fresh.tags(new[0])
    recorded = [json.loads(line) for line in failures.read_text().splitlines() if line.strip()]
    assert any('gate says' in f.get('msg', '') and 'unhealthy' in f['msg'] for f in recorded), recorded


def test_hotpatch_stage_needs_a_change_id(fresh, runner_env):
    control.reset_calls(fresh.dir)
    run = stage('hotpatch.sh', runner_env, HOTPATCH_IMAGE='x')
    assert run.returncode != 0 and 'HOTPATCH_CHANGE_ID' in run.stderr
    assert fresh.calls() == {}


def test_scheduled_auto_rollback_stage_rolls_a_bad_release_back(fresh, runner_env):
    fresh.deploy(4)
    fresh.metrics_history()
    control.reset_calls(fresh.dir)
    run = stage('auto_rollback.sh', runner_env)
    assert run.returncode == 0, run.stdout[-3000:]
    assert fresh.revision() == 3
    assert fresh.bot()[0] == 200
    assert fresh.locks() == []
