"""rollback.yml end to end against the sandbox: ECS state, the bot's version, the ledger."""
import copy
import threading
import time

import pytest
import yaml

from sandbox import control, procs
from tests.integration.conftest import FAMILY, failed_results

STABLE_TAG = 'hotelbot.ops/stable'


def sandbox_control(sandbox, path, body=None):
    """POST to the AWS double's control API (faults and settings sandbox.control has no call for)."""
    status, data = procs.http_json(sandbox.state['aws']['control_url'] + path, method='POST', body=body or {}, timeout=10)
    assert status == 200, data
    return data


def when_update_sent(sandbox, action, timeout=60):
    """Run action() in a thread as soon as the sandbox has received UpdateService."""
    def watch():
        deadline = time.monotonic() + timeout
        while 'ecs:UpdateService' not in sandbox.calls() and time.monotonic() < deadline:
            time.sleep(0.05)
        action()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def adhoc_result(completed):
    """The result of a one-host ad hoc run ("host | CHANGED => ..."; YAML, as ansible.cfg asks)."""
    return yaml.safe_load(completed.stdout.split('=>', 1)[1])


def comparable(svc):
    """DescribeServices output minus nothing: deep copy for before/after comparison."""
    return copy.deepcopy(svc)


def test_bad_release_is_rolled_back_verified_and_marked(fresh):
    fresh.deploy(4)
    assert fresh.bot()[0] == 503 and fresh.bot()[1]['version'] == '1.3.0-bad'
    control.reset_calls(fresh.dir)

    run = fresh.playbook()
    assert run.returncode == 0, run.stdout + run.stderr

    svc = fresh.describe()
    assert fresh.revision() == 3
    assert [d['rolloutState'] for d in svc['deployments']] == ['COMPLETED']
    assert svc['runningCount'] == svc['desiredCount'] == 3
    status, body = fresh.bot()
    assert status == 200 and body['version'] == '1.2.0'
    tags = fresh.tags()
    assert tags['hotelbot.ops/last-stable'] == FAMILY + ':3'
    assert tags['hotelbot.ops/rollback'] == '%s:4->%s:3' % (FAMILY, FAMILY)
    assert STABLE_TAG in fresh.tags(fresh.td_arn(3))
    calls = fresh.calls()
    assert calls.get('ecs:UpdateService') == 1


def test_rerun_changes_nothing_and_previous_does_not_walk_back(fresh):
    fresh.deploy(4)
    assert fresh.playbook().returncode == 0
    control.reset_calls(fresh.dir)
    for target in ('last_stable', 'previous'):
        run = fresh.playbook('-e', 'rollback_target=%s' % target)
        assert run.returncode == 0, run.stdout
        assert fresh.revision() == 3
    assert 'ecs:UpdateService' not in fresh.calls()
    assert fresh.bot()[1]['version'] == '1.2.0'


def test_previous_rolls_back_one_revision(fresh):
    fresh.deploy(4)
    fresh.ecs.untag_resource(resourceArn=fresh.describe()['serviceArn'], tagKeys=['hotelbot.ops/last-stable'])
    run = fresh.playbook('-e', 'rollback_target=previous')
    assert run.returncode == 0, run.stdout
    assert fresh.revision() == 3
    assert fresh.tags()['hotelbot.ops/last-stable'] == FAMILY + ':3'


def test_check_mode_changes_nothing(fresh):
    fresh.deploy(4)
    before = comparable(fresh.describe())
    control.reset_calls(fresh.dir)
    run = fresh.playbook('--check', '--diff')
    assert run.returncode == 0, run.stdout + run.stderr
    assert comparable(fresh.describe()) == before
    calls = fresh.calls()
    assert not [c for c in calls if c.endswith(('UpdateService', 'TagResource', 'UntagResource'))], calls
    assert fresh.bot()[1]['version'] == '1.3.0-bad'


@pytest.mark.parametrize('extra, message', [
    (['-e', 'rollback_target=99'], 'revision 99 of family hotel-voice-bot does not exist'),
    (['-e', 'rollback_target=hotel-voice-bot-worker:1'], 'belongs to family hotel-voice-bot-worker'),
    (['-e', 'rollback_target=1'], 'INACTIVE'),
    (['-e', 'rollback_target=tomorrow'], 'revision must be current, previous, last_stable'),
    (['-e', 'hotelbot_ecs_service=no-such-service'], "service 'no-such-service' not found"),
    (['-e', 'hotelbot_ecs_cluster=no-such-cluster'], "cluster 'no-such-cluster' not found"),
    (['-e', 'hotelbot_environment=production'], 'production environment'),
    # Issue 13: the variable the user typed, not the role's internal preflight_scope.
    (['-e', 'rollback_scope=everything'], "rollback_scope must be one of app, db, app+db, got 'everything'"),
])
def test_bad_input_fails_clearly_and_changes_nothing(fresh, extra, message):
    fresh.deploy(4)
    before = comparable(fresh.describe())
    tags_before = fresh.tags()
    control.reset_calls(fresh.dir)
    run = fresh.playbook(*extra)
    assert run.returncode != 0
    failures = failed_results(run)
    assert failures and message in failures[0]['msg'], failures
    assert comparable(fresh.describe()) == before
    assert fresh.tags() == tags_before
    assert not [c for c in fresh.calls() if c.endswith(('UpdateService', 'TagResource'))]


def test_production_with_approval_goes_ahead(fresh):
    fresh.deploy(4)
    run = fresh.playbook('-e', 'hotelbot_environment=production', '-e', 'rollback_approved=true',
                         '-e', 'rollback_approved_by=alice')
    assert run.returncode == 0, run.stdout
    assert fresh.revision() == 3


def test_failed_deployment_stops_before_marking_stable(fresh):
    fresh.deploy(4)
    stable_tags_before = fresh.tags(fresh.td_arn(5))
    run = fresh.playbook('-e', 'rollback_target=5')
    assert run.returncode != 0
    failures = failed_results(run)
    assert 'rolled the service back to hotel-voice-bot:4 by itself' in failures[0]['msg'], failures
    # ECS's circuit breaker put 4 back; nothing was marked stable.
    fresh.wait_settled(4)
    assert fresh.tags()['hotelbot.ops/last-stable'] == FAMILY + ':3'
    assert fresh.tags(fresh.td_arn(5)) == stable_tags_before


def test_aws_endpoint_dies_while_waiting_then_rerun_converges(fresh):
    fresh.deploy(4)
    control.set_deploy_seconds(8, fresh.dir)
    control.reset_calls(fresh.dir)
    run = fresh.popen_playbook('-e', 'rollback_wait_timeout=120', '-e', 'rollback_wait_outage_grace=5')
    # Wait until the update has been sent, then take the endpoint away mid-wait.
    deadline = time.monotonic() + 60
    while 'ecs:UpdateService' not in fresh.calls():
        assert time.monotonic() < deadline and run.poll() is None, 'update never sent'
        time.sleep(0.05)
    control.aws_down(fresh.dir)
    try:
        output = run.communicate(timeout=180)[0]
    finally:
        control.aws_up(fresh.dir)
    assert run.returncode != 0, output
    assert 'lost contact with ECS' in output
    # Nothing marked stable by the broken run.
    assert fresh.tags()['hotelbot.ops/last-stable'] == FAMILY + ':3'
    control.reset_calls(fresh.dir)
    rerun = fresh.playbook()
    assert rerun.returncode == 0, rerun.stdout
    assert fresh.revision() == 3
    assert fresh.bot()[1]['version'] == '1.2.0'
    assert 'ecs:UpdateService' not in fresh.calls()   # converged without a second deployment


def test_endpoint_down_before_start_fails_in_preflight(fresh):
    fresh.deploy(4)
    control.aws_down(fresh.dir)
    try:
        run = fresh.playbook('-e', 'hotelbot_aws_max_attempts=2')
    finally:
        control.aws_up(fresh.dir)
    assert run.returncode != 0
    assert 'AWS endpoint unreachable' in failed_results(run)[0]['msg']
    assert fresh.revision() == 4


def test_scale_to_zero_and_restore(fresh):
    zero = fresh.adhoc('hotelbot.ops.ecs_release', 'cluster=%s service=%s desired_count=0' % (fresh.cluster, fresh.service))
    assert zero.returncode == 0, zero.stdout
    assert fresh.describe()['desiredCount'] == 0 and fresh.describe()['runningCount'] == 0
    assert fresh.bot()[0] == 503
    back = fresh.adhoc('hotelbot.ops.ecs_release', 'cluster=%s service=%s restore_desired_count=true' % (fresh.cluster, fresh.service))
    assert back.returncode == 0, back.stdout
    svc = fresh.describe()
    assert svc['desiredCount'] == svc['runningCount'] == 3
    fresh.wait_bot_version('1.2.0')
    assert fresh.bot()[0] == 200


def test_secrets_never_printed_even_at_vvvv(fresh):
    fresh.deploy(4)
    run = fresh.playbook('-vvvv')
    assert run.returncode == 0, run.stdout
    printed = run.stdout + run.stderr
    td = fresh.ecs.describe_task_definition(taskDefinition=fresh.td_arn(4))['taskDefinition']
    env_secrets = [e['value'] for e in td['containerDefinitions'][0]['environment'] if 'KEY' in e['name']]
    for name, value in list(fresh.secrets.items()) + [('env', v) for v in env_secrets]:
        if name == 'aws_secret_access_key':
            continue  # moto's dummy "testing" is a common word, not a secret
        assert value not in printed, '%s leaked' % name


def test_a_burst_of_aws_500s_during_the_wait_is_polled_through(fresh):
    fresh.deploy(4)
    control.set_deploy_seconds(6, fresh.dir)
    control.reset_calls(fresh.dir)
    # max_attempts=2: a poll inside the burst runs out of botocore's own retries.
    burst = when_update_sent(fresh, lambda: sandbox_control(fresh, '/sandbox/aws/errors', {'seconds': 4, 'status': 500}))
    try:
        run = fresh.playbook('-e', 'hotelbot_aws_max_attempts=2')
    finally:
        burst.join()
        fault = sandbox_control(fresh, '/sandbox/aws/errors', {'seconds': 0})   # ends it, says what it did
    assert run.returncode == 0, run.stdout[-3000:]
    assert fresh.revision() == 3 and fresh.serving_revision() == 3
    assert fresh.bot()[1]['version'] == '1.2.0'
    assert fresh.tags()['hotelbot.ops/last-stable'] == FAMILY + ':3'
    assert fresh.calls()['ecs:UpdateService'] == 1
    assert fault['injected'] >= 2   # the burst was met: at least one poll ran out of botocore's attempts


def test_an_outage_longer_than_the_grace_fails_naming_the_deployment(fresh):
    fresh.deploy(4)
    control.set_deploy_seconds(30, fresh.dir)
    control.reset_calls(fresh.dir)
    outage = when_update_sent(fresh, lambda: sandbox_control(fresh, '/sandbox/aws/errors', {'seconds': 60, 'status': 503}))
    try:
        run = fresh.playbook('-e', 'hotelbot_aws_max_attempts=2', '-e', 'rollback_wait_outage_grace=3')
    finally:
        outage.join()
        sandbox_control(fresh, '/sandbox/aws/errors', {'seconds': 0})
    assert run.returncode != 0
    failures = failed_results(run)
    release = next(f for f in failures if f['task'].endswith('Roll the ECS service and wait for the deployment'))
    primary = fresh.describe()['deployments'][0]
    assert primary['taskDefinition'] == fresh.td_arn(3) and primary['rolloutState'] == 'IN_PROGRESS'
    assert release['msg'].startswith('lost contact with ECS for ')
    assert release['deployment_id'] == primary['id'] and release['changed'] is True
    assert 3 <= release['waited_s'] < 30
    # The summary (and the run's last word) name the deployment that was started, not "none started".
    assert 'deployment: %s IN_PROGRESS, waited ' % primary['id'] in failures[-1]['msg']
    assert fresh.tags()['hotelbot.ops/last-stable'] == FAMILY + ':3' and fresh.calls()['ecs:UpdateService'] == 1


def test_the_wait_returns_only_after_the_old_deployment_stopped_its_tasks(fresh):
    fresh.deploy(4)
    sandbox_control(fresh, '/sandbox/config', {'drain_seconds': 3})
    try:
        done = fresh.adhoc('hotelbot.ops.ecs_release', 'cluster=%s service=%s revision=3' % (fresh.cluster, fresh.service))
        svc = fresh.describe()   # at once: a wait that stopped at COMPLETED leaves the old deployment draining
    finally:
        sandbox_control(fresh, '/sandbox/config', {'drain_seconds': 0.5})
    assert done.returncode == 0, done.stdout
    result = adhoc_result(done)
    messages = [e['message'] for e in result['events']]
    assert any(m.endswith('has begun draining connections on 3 tasks.') for m in messages), messages
    assert any('has stopped 3 running tasks' in m for m in messages), messages
    assert [d['taskDefinition'] for d in svc['deployments']] == [fresh.td_arn(3)]
    assert svc['runningCount'] == svc['desiredCount'] == 3 and result['waited_s'] >= 3
