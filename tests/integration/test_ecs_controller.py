"""ecs_release and ecs_release_info give the same result and leave ECS in the same state whether
their work runs in the controller's worker (a local connection: plugins/action/ecs_release*.py) or as
the module process (hotelbot_controller_modules=false)."""
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PLAY = '''
- name: One ecs_release and one ecs_release_info, results written to a file
  hosts: hotelbot
  gather_facts: false
  vars_files: [%(root)s/playbooks/vars/module_defaults.yml]
  module_defaults:
    group/hotelbot.ops.aws: "{{ hotelbot_aws_module_defaults }}"
  tasks:
    - name: Release
      hotelbot.ops.ecs_release: "{{ release_args }}"
      register: release
      ignore_errors: true
    - name: Info
      hotelbot.ops.ecs_release_info:
        cluster: "{{ hotelbot_sandbox.ecs.cluster }}"
        service: "{{ hotelbot_sandbox.ecs.service }}"
        target: previous
        environment_of: current
      register: info
    - name: Write
      ansible.builtin.copy:
        content: "{{ dict(release=release, info=info) | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
'''
# What differs between two runs whatever path they took: times, ids, events, how the task ran.
VOLATILE = ('elapsed_s', 'waited_s', 'deployment_id', 'events', 'invocation', 'warnings', 'deployments')


def stable_fields(result):
    return dict((k, v) for k, v in result.items() if k not in VOLATILE and not k.startswith('_'))


def run(fresh, tmp_path, args, in_process):
    play = tmp_path / 'play.yml'
    play.write_text(PLAY % dict(root=ROOT))
    out = tmp_path / ('%s.json' % in_process)
    extra = dict(release_args=dict(args, cluster=fresh.cluster, service=fresh.service), out=str(out))
    if not in_process:
        extra['hotelbot_controller_modules'] = False
    done = fresh.playbook('-vvv', '-e', json.dumps(extra), playbook=str(play))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # The two paths are really two: only the module process is shipped as AnsiballZ.
    assert ('AnsiballZ_ecs_release' in done.stdout) is (not in_process)
    svc = fresh.describe()
    state = dict(revision=fresh.revision(), desired=svc['desiredCount'],
                 tags=dict((t['key'], t['value']) for t in svc.get('tags') or []))
    results = json.loads(out.read_text())
    return results, state


@pytest.mark.parametrize('args', [
    dict(revision='previous', mark_stable=True),
    dict(revision=9),
    dict(desired_count=100000),
], ids=['rollback-and-mark', 'unknown-revision', 'count-out-of-range'])
def test_controller_and_module_end_in_the_same_state_with_the_same_result(fresh, tmp_path, args):
    here, here_state = run(fresh, tmp_path, args, in_process=True)
    fresh.reset()
    there, there_state = run(fresh, tmp_path, args, in_process=False)
    assert here_state == there_state
    assert stable_fields(here['release']) == stable_fields(there['release'])
    assert stable_fields(here['info']) == stable_fields(there['info'])
    assert here['info']['environment'] == there['info']['environment']
