"""Playbook inputs checked up front, against the real sandbox: a wrong value, an unknown variable with a
playbook's prefixes and a run with no host each fail before anything is touched (no AWS call at all, the
ECS revision, its tags and the lock table as before), in one line naming what the user typed; a
correct run still works. And what the README says works: the built tarball, installed into a temp
collections path, runs `ansible-playbook hotelbot.ops.rollback -i <the example inventory, pointed at
the sandbox>` from outside the repository.
"""
import os
import shutil
import subprocess

import pytest
import yaml

from conftest import BIN, ROOT, failed_results
from sandbox import control

REFUSAL = 'Refuse a wrong value, an unknown variable or no host (nothing was touched)'


@pytest.fixture(scope='module')
def seeded(sandbox):
    sandbox.reset()
    return sandbox


def untouched(sandbox, run, message):
    """The run failed in the inputs check, with exactly `message`, and touched nothing."""
    assert run.returncode != 0, run.stdout
    failures = failed_results(run)
    assert [(f['task'], f['msg']) for f in failures] == [(REFUSAL, message)], run.stdout + run.stderr
    assert '\n' not in message
    assert sandbox.calls() == {}, 'no AWS call before the inputs are checked'
    assert sandbox.revision() == 3
    return failures


def state(sandbox):
    """What a run could change: the ECS revision and ledger tags, the lock table, the backups."""
    backups = os.path.join(sandbox.dir, 'backups')
    return (sandbox.revision(), sandbox.tags(), sandbox.locks(),
            sorted(os.listdir(backups)) if os.path.isdir(backups) else [])


@pytest.mark.parametrize('playbook, args, message', [
    ('rollback.yml', ['-e', 'rollback_scope=datbase'], "rollback_scope must be one of app, db, app+db, got 'datbase'"),
    ('rollback.yml', ['-e', 'rollback_targt=previous'], 'unknown variable rollback_targt (did you mean rollback_target?)'),
    ('rollback.yml', ['-e', 'rollback_approved=maybe', '-e', 'rollback_wait_timeout=soon'],
     "rollback_approved must be a bool, got 'maybe'; rollback_wait_timeout must be an int, got 'soon'"),
    ('rollback.yml', ['-e', 'release_brake_lock=alice'], 'unknown variable release_brake_lock (did you mean release_break_lock?)'),
    ('hotpatch.yml', ['-e', 'hotpatch_change_id=CHG-1', '-e', 'hotpatch_imgae=ghcr.io/acme/bot:9'],
     'unknown variable hotpatch_imgae (did you mean hotpatch_image?)'),
    ('hotpatch.yml', ['-e', 'hotpatch_on_inconclusive=ignore'], "hotpatch_on_inconclusive must be one of rollback, keep, got 'ignore'"),
    ('playbooks/auto_rollback.yml', ['-e', 'auto_rollback_lock_wiat=5m'],
     'unknown variable auto_rollback_lock_wiat (did you mean auto_rollback_lock_wait?)'),
    ('playbooks/backup.yml', ['-e', 'backup_kep=3'], 'unknown variable backup_kep (did you mean backup_keep?)'),
    ('playbooks/backup.yml', ['-e', 'backup_format=zip'], "backup_format must be one of custom, directory, plain, got 'zip'"),
])
def test_a_wrong_input_names_it_and_changes_nothing(seeded, playbook, args, message):
    before = state(seeded)
    control.reset_calls(seeded.dir)
    run = seeded.playbook(*args, playbook=playbook)
    untouched(seeded, run, message)
    assert state(seeded) == before


def test_no_inventory_is_an_error_naming_pattern_and_inventory(seeded, tmp_path):
    missing = tmp_path / 'no-such-inventory'
    control.reset_calls(seeded.dir)
    run = seeded.playbook('-i', str(missing), '-e', 'rollback_scope=app')
    untouched(seeded, run, f"no host matches 'hotelbot' in inventory {missing}: pass -i <your inventory> "
                           "(the collection's examples/inventory/production, docs/inventory.md)")


def test_a_limit_outside_the_pattern_is_an_error(seeded, tmp_path):
    """Hosts, but none of them in the playbook's pattern under --limit (AWX passes --limit)."""
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(yaml.safe_dump({'other': {'hosts': {'db-1': {'ansible_connection': 'local'}}},
                                         'hotelbot': {'hosts': {'bot-1': {'ansible_connection': 'local'}}}}))
    before = state(seeded)
    control.reset_calls(seeded.dir)
    run = seeded.playbook('-i', str(inventory), '--limit', 'db-1')
    untouched(seeded, run, f"no host matches 'hotelbot' with --limit 'db-1' in inventory {inventory}: pass -i "
                           "<your inventory> (the collection's examples/inventory/production, docs/inventory.md)")
    control.reset_calls(seeded.dir)
    run = seeded.playbook('-e', 'rollback_hosts=bots_eu', '--check')
    untouched(seeded, run, f"no host matches 'bots_eu' in inventory {os.path.join(ROOT, 'inventory', 'sandbox')}: "
                           "pass -i <your inventory> (the collection's examples/inventory/production, docs/inventory.md)")
    assert state(seeded) == before


def test_a_correct_run_still_works(seeded):
    """The check passes and the rollback runs: revision 3 -> 2."""
    run = seeded.playbook('-e', 'rollback_target=previous', '-e', 'rollback_lock_ttl=60s', '-e', 'severity=',
                          '-e', 'hotfix_available=false')
    assert run.returncode == 0, run.stdout + run.stderr
    assert failed_results(run) == []
    assert seeded.revision() == 2
    seeded.reset()


def _clean_env(tmp_path, collections):
    """A new user's environment: no ANSIBLE_* settings, not the repository's ansible.cfg (cwd outside it)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(('ANSIBLE_', 'HOTELBOT_'))}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR='1', PATH=BIN + os.pathsep + env.get('PATH', ''),
               HOME=str(tmp_path))
    return env


def _built_collection(tmp_path, env):
    out = tmp_path / 'dist'
    build = subprocess.run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'build', '--output-path', str(out), ROOT],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    (tarball,) = out.glob('hotelbot-ops-*.tar.gz')
    return tarball


def test_the_installed_collection_runs_from_the_readme(seeded, tmp_path):
    """README: install the built tarball, copy examples/inventory/production, point it at your AWS
    (here the sandbox), run hotelbot.ops.rollback --check from anywhere."""
    collections = tmp_path / 'collections'
    env = _clean_env(tmp_path, collections)
    install = subprocess.run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'install', '-p', str(collections),
                              str(_built_collection(tmp_path, env))], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    shipped = collections / 'ansible_collections' / 'hotelbot' / 'ops' / 'examples' / 'inventory' / 'production'
    inventory = tmp_path / 'work' / 'inventory'
    shutil.copytree(shipped, inventory)
    group_vars = inventory / 'group_vars' / 'hotelbot.yml'
    values = yaml.safe_load(group_vars.read_text())
    st, secrets = seeded.state, seeded.secrets
    values.update(hotelbot_aws_region=st['region'], hotelbot_aws_endpoint_url=st['aws']['endpoint_url'],
                  hotelbot_aws_access_key=st['aws']['access_key_id'], hotelbot_aws_secret_key=secrets['aws_secret_access_key'],
                  hotelbot_ecs_cluster=st['ecs']['cluster'], hotelbot_ecs_service=st['ecs']['service'],
                  hotelbot_base_url=st['bot']['url'], hotelbot_db_host=st['postgres']['socket_dir'],
                  hotelbot_db_port=st['postgres']['port'], hotelbot_db_user=st['postgres']['superuser'],
                  hotelbot_db_name=st['postgres']['database'], hotelbot_db_bin_dir=st['postgres']['bin_dir'],
                  hotelbot_lock_database='postgres', hotelbot_backup_dir=str(tmp_path / 'backups'))
    group_vars.write_text(yaml.safe_dump(values))

    def rollback(*args):
        return subprocess.run([os.path.join(BIN, 'ansible-playbook'), 'hotelbot.ops.rollback', '-i', 'inventory'] + list(args),
                              cwd=tmp_path / 'work', env=env, capture_output=True, text=True, timeout=300, check=False)

    before = state(seeded)
    wrong = rollback('-e', 'rollback_targt=previous')
    assert wrong.returncode != 0 and 'unknown variable rollback_targt (did you mean rollback_target?)' in wrong.stdout
    assert state(seeded) == before
    approved = ['-e', 'rollback_target=previous', '-e', 'rollback_approved=true', '-e', 'rollback_approved_by=ci']
    check = rollback('--check', *approved)
    assert check.returncode == 0, check.stdout + check.stderr
    assert state(seeded) == before
    done = rollback(*approved)
    assert done.returncode == 0, done.stdout + done.stderr
    assert seeded.revision() == 2
    seeded.reset()
