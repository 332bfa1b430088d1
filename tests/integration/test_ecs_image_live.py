"""ecs_release image= (hot-patch) against the sandbox's ECS double: the module through `ansible`,
platform state read back through boto3 and the bot's HTTP answers.

Revisions registered here are deregistered afterwards; the assertions compare the family's
revision list before and after, so leftovers of other tests do not matter.
"""
import json
import os
import subprocess

from sandbox import control

from tests.integration.conftest import BIN, FAMILY, ROOT

AWS_ARGS = dict(region='{{ hotelbot_aws_region }}', endpoint_url='{{ hotelbot_aws_endpoint_url }}',
                access_key='{{ hotelbot_aws_access_key }}', secret_key='{{ hotelbot_aws_secret_key }}',
                cluster='{{ hotelbot_ecs_cluster }}', service='{{ hotelbot_ecs_service }}')


def ecs_release(sandbox, *flags, **args):
    """Run hotelbot.ops.ecs_release once on the sandbox host; (rc, result dict, raw output)."""
    env = dict(os.environ, HOTELBOT_SANDBOX_DIR=str(sandbox.dir), ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'),
               PATH=BIN + os.pathsep + os.environ.get('PATH', ''), ANSIBLE_NOCOLOR='1')
    cmd = [os.path.join(BIN, 'ansible'), 'sandbox', '-o', '-m', 'hotelbot.ops.ecs_release',
           '-a', json.dumps(dict(AWS_ARGS, **args))] + list(flags)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    output = done.stdout + done.stderr
    line = next((l for l in done.stdout.splitlines() if l.startswith('sandbox | ')), None)
    assert line is not None, output
    return done.returncode, json.loads(line.split(' => ', 1)[1]), output


def family_revisions(sandbox):
    """{revision: status} of the family (exactly it: the -worker family shares the prefix)."""
    found = {}
    for status in ('ACTIVE', 'INACTIVE'):
        pages = sandbox.ecs.get_paginator('list_task_definitions').paginate(familyPrefix=FAMILY, status=status)
        for page in pages:
            for arn in page['taskDefinitionArns']:
                family, revision = arn.rsplit('/', 1)[1].rsplit(':', 1)
                if family == FAMILY:
                    found[int(revision)] = status
    return found


def secrets_of(sandbox):
    """The secret values in the seeded task definitions' plain environment."""
    td = sandbox.ecs.describe_task_definition(taskDefinition='%s:3' % FAMILY)['taskDefinition']
    env = dict((e['name'], e['value']) for e in td['containerDefinitions'][0]['environment'])
    return [env['OPENAI_API_KEY'], sandbox.secrets['postgres_password']]


def image_of(sandbox, revision):
    td = sandbox.ecs.describe_task_definition(taskDefinition='%s:%d' % (FAMILY, revision))['taskDefinition']
    return td['containerDefinitions'][0]['image']


def test_image_hot_patch_registers_deploys_and_converges(fresh):
    image = fresh.state['ecs']['images']['3'].rsplit(':', 1)[0] + ':1.2.1'
    secrets = secrets_of(fresh)
    before = family_revisions(fresh)
    try:
        # Check mode: predicts, registers nothing, deploys nothing.
        rc, result, output = ecs_release(fresh, '--check', '--diff', image=image)
        assert rc == 0, output
        assert result['changed'] is True and result['registered'] is None
        assert result['to_revision']['revision'] is None and result['to_revision']['images'] == [image]
        assert result['msg'] == 'would register a new revision of %s from %s:3 with image %s' % (FAMILY, FAMILY, image)
        assert family_revisions(fresh) == before and fresh.revision() == 3
        calls = fresh.calls()
        assert not [c for c in calls if c.endswith(('RegisterTaskDefinition', 'UpdateService', 'TagResource'))], calls
        assert not [s for s in secrets if s in output]

        # The hot-patch: a new revision from 3 with the image, rolled out and serving.
        rc, result, output = ecs_release(fresh, '--diff', image=image, expected_current=3)
        assert rc == 0, output
        assert not [s for s in secrets if s in output]
        assert result['changed'] is True and result['rollout_state'] == 'COMPLETED'
        after = family_revisions(fresh)
        new = fresh.revision()
        if result['registered'] is not None:
            assert result['registered'] == '%s:%d' % (FAMILY, new)
            assert new not in before and new > max(before) and sorted(after) == sorted(before) + [new]
        else:   # an identical newest revision left by another test was reused
            assert 'reused' in result['to_revision']['reason'] and after == before
        assert image_of(fresh, new) == image and result['to_revision']['images'] == [image]
        status, body = fresh.wait_bot_version('1.2.1')
        assert status == 200
        # The base's stable mark is not copied onto the unverified new revision.
        assert 'hotelbot.ops/stable' not in fresh.tags(fresh.td_arn(new))

        # Re-run: nothing registered, nothing deployed.
        control.reset_calls(fresh.dir)
        rc, result, output = ecs_release(fresh, image=image)
        assert rc == 0, output
        assert result['changed'] is False and result['registered'] is None
        assert result['to_revision']['revision'] == new and not result['deployment_started']
        assert family_revisions(fresh) == after and fresh.revision() == new
        calls = fresh.calls()
        assert not [c for c in calls if c.endswith(('RegisterTaskDefinition', 'UpdateService'))], calls
    finally:
        fresh.reset()
        for revision in set(family_revisions(fresh)) - set(before):
            fresh.ecs.deregister_task_definition(taskDefinition='%s:%d' % (FAMILY, revision))
