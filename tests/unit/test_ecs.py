"""Unit tests of module_utils.ecs against an in-memory ECS (tests/unit/fake_ecs.py)."""
import re

import botocore.exceptions
import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.hotelbot.ops.plugins.module_utils import ecs as ecs_utils
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, Task, execute
from ansible_collections.hotelbot.ops.plugins.modules import ecs_release, ecs_release_info
from tests.unit.fake_ecs import FakeEcs, td_arn

FAMILY = 'hotel-voice-bot'
CLUSTER = 'hotel-voice-bot'
SERVICE = 'hotel-voice-bot-service'


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(seconds, 0.01)


@pytest.fixture
def fake():
    fake = FakeEcs()
    fake.register(FAMILY, 1, 'bot:1.0.0', status='INACTIVE')
    fake.register(FAMILY, 2, 'bot:1.1.0')
    fake.register(FAMILY, 3, 'bot:1.2.0', env=[
        dict(name='LOG_LEVEL', value='info'),
        dict(name='OPENAI_API_KEY', value='sk-live-abcdef123456'),
        dict(name='DATABASE_URL', value='postgresql://bot:hunter2secret@db:5432/bot')])
    fake.register(FAMILY, 4, 'bot:1.3.0-bad', env=[
        dict(name='LOG_LEVEL', value='debug'),
        dict(name='OPENAI_API_KEY', value='sk-live-zzzzzz999999'),
        dict(name='NEW_FLAG', value='on')])
    fake.register(FAMILY + '-worker', 7, 'worker:9')   # prefix trap
    fake.add_service(CLUSTER, SERVICE, td_arn(FAMILY, 4),
                     tags={ecs_utils.TAG_LAST_STABLE: FAMILY + ':3'})
    return fake


def service(fake):
    return ecs_utils.EcsService(fake, CLUSTER, SERVICE)


def task_of(module, check_mode=False, hide=None, progress=None, **args):
    """A Task as the module would get it: args validated by its SPEC (defaults filled in)."""
    validation = ArgumentSpecValidator(**module.SPEC).validate(dict(args, cluster=CLUSTER, service=SERVICE))
    assert not validation.error_messages, validation.error_messages
    return Task(validation.validated_parameters, check_mode=check_mode, hide=hide, progress=progress)


def release_work(fake, clock=None):
    """ecs_utils.release on the fake ECS, sleeping on a fake clock."""
    clock = clock or FakeClock()
    return lambda task: ecs_utils.release(task, service=service(fake), sleep=clock.sleep, clock=clock)


def run_release(fake, spec, timeout=60, outage_grace=None, clock=None, **kwargs):
    grace = dict(wait_outage_grace=outage_grace) if outage_grace is not None else {}
    task = task_of(ecs_release, revision=spec, wait_timeout=timeout, **dict(grace, **kwargs))
    return release_work(fake, clock)(task)


def run_info(fake, **kwargs):
    return ecs_utils.release_info(task_of(ecs_release_info, **kwargs), service=service(fake))


def server_error(status=500, code='ServerException', message='internal'):
    return botocore.exceptions.ClientError(
        {'Error': {'Code': code, 'Message': message}, 'ResponseMetadata': {'HTTPStatusCode': status}}, 'DescribeServices')


def primary_id(fake):
    return ecs_utils.primary_deployment(fake.services[(CLUSTER, SERVICE)])['id']


def current_revision(fake):
    return fake.services[(CLUSTER, SERVICE)]['taskDefinition'].rsplit(':', 1)[1]


# ---------------------------------------------------------------- reading

def test_revisions_are_paged_filtered_to_the_family_and_marked(fake):
    revisions = service(fake).revisions(FAMILY)
    assert [(r['revision'], r['status']) for r in revisions] == [
        (4, 'ACTIVE'), (3, 'ACTIVE'), (2, 'ACTIVE'), (1, 'INACTIVE')]
    # 3 ACTIVE family revisions + the worker's at 2 a page, then 1 INACTIVE: 2 + 1 pages
    assert fake.calls.count('ListTaskDefinitions') == 3


def test_missing_service_and_cluster_are_plain_errors(fake):
    with pytest.raises(OpsError, match="service 'nope' not found in cluster"):
        ecs_utils.EcsService(fake, CLUSTER, 'nope').describe()
    with pytest.raises(OpsError, match="cluster 'nope' not found"):
        ecs_utils.EcsService(fake, 'nope', SERVICE).describe()


def test_endpoint_errors_become_messages(fake):
    fake.describe_failures.append(botocore.exceptions.EndpointConnectionError(endpoint_url='http://127.0.0.1:1'))
    with pytest.raises(OpsError, match='AWS endpoint unreachable'):
        service(fake).describe()


# ---------------------------------------------------------------- resolving

@pytest.mark.parametrize('spec, expected', [
    ('previous', 3), ('last_stable', 3), ('current', 4), (2, 2), ('2', 2), (FAMILY + ':2', 2), (td_arn(FAMILY, 3), 3),
])
def test_resolve_target(fake, spec, expected):
    revisions = service(fake).revisions(FAMILY)
    tags = {ecs_utils.TAG_LAST_STABLE: FAMILY + ':3'}
    assert ecs_utils.resolve_target(spec, FAMILY, 4, revisions, tags)['revision'] == expected


@pytest.mark.parametrize('spec, message', [
    (9, 'revision 9 of family hotel-voice-bot does not exist'),
    (1, 'INACTIVE'),
    ('hotel-voice-bot-worker:7', 'belongs to family hotel-voice-bot-worker'),
    ('latest', 'revision must be current, previous, last_stable'),
])
def test_resolve_target_refuses(fake, spec, message):
    revisions = service(fake).revisions(FAMILY)
    with pytest.raises(OpsError, match=message):
        ecs_utils.resolve_target(spec, FAMILY, 4, revisions, {})


def test_previous_skips_inactive_and_fails_when_none_left(fake):
    revisions = service(fake).revisions(FAMILY)
    with pytest.raises(OpsError, match='no ACTIVE revision of hotel-voice-bot older than hotel-voice-bot:2'):
        ecs_utils.resolve_target('previous', FAMILY, 2, revisions, {})


def test_last_stable_needs_a_mark(fake):
    revisions = service(fake).revisions(FAMILY)
    with pytest.raises(OpsError, match='no revision of hotel-voice-bot is marked stable'):
        ecs_utils.resolve_target('last_stable', FAMILY, 4, revisions, {})


# ---------------------------------------------------------------- release

def test_rollback_to_previous_waits_and_is_idempotent(fake):
    result = run_release(fake, 'previous')
    assert result['changed'] and result['deployment_started']
    assert result['from_revision']['revision'] == 4 and result['to_revision']['revision'] == 3
    assert result['rollout_state'] == 'COMPLETED'
    assert current_revision(fake) == '3'
    assert any('steady state' in e['message'] for e in result['events'])
    # Re-running `previous` stays on 3: it does not walk back to 2.
    fake.calls.clear()
    again = run_release(fake, 'previous')
    assert not again['changed'] and again['to_revision']['revision'] == 3
    assert 'UpdateService' not in fake.calls and current_revision(fake) == '3'


def test_check_mode_predicts_and_changes_nothing(fake):
    before = fake.describe_services(CLUSTER, [SERVICE], include=['TAGS'])
    fake.calls.clear()
    result = run_release(fake, 2, desired_count=5, check_mode=True, mark_stable=True)
    assert result['changed'] and result['deployment_started'] and result['marked_stable']
    assert result['diff']['before'] == dict(revision=FAMILY + ':4', desired_count=3, last_stable=FAMILY + ':3')
    assert result['diff']['after'] == dict(revision=FAMILY + ':2', desired_count=5, last_stable=FAMILY + ':2')
    assert not {'UpdateService', 'TagResource'} & set(fake.calls)
    after = fake.describe_services(CLUSTER, [SERVICE], include=['TAGS'])
    assert after['services'][0]['taskDefinition'] == before['services'][0]['taskDefinition']
    assert after['services'][0]['tags'] == before['services'][0]['tags']


def test_failed_deployment_fails_fast_and_marks_nothing(fake):
    fake.outcome = 'fail'
    with pytest.raises(OpsError, match='FAILED: ECS deployment circuit breaker') as err:
        run_release(fake, 2, mark_stable=True)
    assert err.value.changed is True
    assert fake.tags[fake.services[(CLUSTER, SERVICE)]['serviceArn']][ecs_utils.TAG_LAST_STABLE] == FAMILY + ':3'
    assert fake.tags.get(td_arn(FAMILY, 2), {}) == {}


def test_circuit_breaker_rollback_is_reported(fake):
    fake.outcome = 'rollback'
    with pytest.raises(OpsError, match='ECS rolled the service back to hotel-voice-bot:4 by itself') as err:
        run_release(fake, 2)
    assert err.value.result['rolled_back_to'] == FAMILY + ':4'


def test_circuit_breaker_rollback_seen_late_still_says_why(fake):
    fake.outcome, fake.forget_failed = 'rollback', True
    with pytest.raises(OpsError, match=r'back to hotel-voice-bot:4 by itself \(circuit breaker\): .*'
                                       r'deployment failed: tasks failed to start'):
        run_release(fake, 2)


def test_timeout_says_what_it_saw(fake):
    fake.outcome = 'hang'
    with pytest.raises(OpsError, match=r'timed out after 30s .* is IN_PROGRESS') as err:
        run_release(fake, 3, timeout=30)
    assert err.value.changed is True


def test_lost_contact_while_waiting_says_rerun(fake):
    fake.outcome = 'hang'
    real = fake.describe_services

    def flaky(**kwargs):
        if fake.calls.count('UpdateService'):
            raise botocore.exceptions.EndpointConnectionError(endpoint_url='http://127.0.0.1:1')
        return real(**kwargs)
    fake.describe_services = flaky
    with pytest.raises(OpsError, match='lost contact with ECS for 20s .* re-run to converge') as err:
        run_release(fake, 3, outage_grace=20)
    assert err.value.changed is True
    # Contact back, deployment still rolling: the re-run waits on it instead of starting another.
    fake.describe_services = real
    fake.outcome = 'complete'
    updates = fake.calls.count('UpdateService')
    result = run_release(fake, 3)
    assert fake.calls.count('UpdateService') == updates
    assert result['rollout_state'] == 'COMPLETED' and not result['deployment_started']


def test_scale_remembers_and_restores(fake):
    result = run_release(fake, 'current', desired_count=0)
    assert result['changed'] and result['previous_desired_count'] == 3
    svc = fake.services[(CLUSTER, SERVICE)]
    assert svc['desiredCount'] == 0 and svc['runningCount'] == 0
    # scaling to 0 again keeps the remembered 3
    assert not run_release(fake, 'current', desired_count=0)['changed']
    assert fake.tags[svc['serviceArn']][ecs_utils.TAG_DESIRED_BEFORE] == '3'
    restored = run_release(fake, 'current', restore_desired_count=True)
    assert restored['desired_count'] == dict(before=0, after=3)
    assert svc['desiredCount'] == 3 and svc['runningCount'] == 3


def test_restore_without_memory_is_refused(fake):
    with pytest.raises(OpsError, match='no remembered desired count'):
        run_release(fake, 'current', restore_desired_count=True)


def test_mark_stable_updates_the_ledger_once(fake):
    run_release(fake, 2, mark_stable=True)
    arn = fake.services[(CLUSTER, SERVICE)]['serviceArn']
    assert fake.tags[arn][ecs_utils.TAG_LAST_STABLE] == FAMILY + ':2'
    assert ecs_utils.TAG_STABLE_ON_REVISION in fake.tags[td_arn(FAMILY, 2)]
    assert not run_release(fake, 'current', mark_stable=True)['changed']
    assert run_release(fake, 'last_stable')['to_revision']['revision'] == 2


def test_mark_stable_without_wait_is_refused(fake):
    with pytest.raises(OpsError, match='mark_stable needs wait'):
        run_release(fake, 3, mark_stable=True, wait=False)
    assert 'UpdateService' not in fake.calls


# ---------------------------------------------------------------- environment

def test_environment_masks_secrets_and_url_passwords(fake):
    td = fake.task_defs[td_arn(FAMILY, 3)]
    env = ecs_utils.environment(td)['bot']['environment']
    assert env == {'LOG_LEVEL': 'info', 'OPENAI_API_KEY': ecs_utils.MASK,
                   'DATABASE_URL': 'postgresql://bot:%s@db:5432/bot' % ecs_utils.MASK}
    assert set(ecs_utils.secret_values(td)) == {'sk-live-abcdef123456', 'hunter2secret'}


def test_environment_diff(fake):
    diff = ecs_utils.environment_diff(fake.task_defs[td_arn(FAMILY, 3)], fake.task_defs[td_arn(FAMILY, 4)])['bot']
    assert diff['added'] == {'NEW_FLAG': 'on'}
    assert diff['removed'] == {'DATABASE_URL': 'postgresql://bot:%s@db:5432/bot' % ecs_utils.MASK}
    assert diff['changed'] == {'LOG_LEVEL': {'from': 'info', 'to': 'debug'},
                               'OPENAI_API_KEY': {'from': ecs_utils.MASK, 'to': ecs_utils.MASK}}


def test_release_info_resolves_like_release(fake):
    hidden = []
    info = run_info(fake, target='previous', environment_of='current', diff_from='last_stable', hide=hidden.append)
    assert info['current']['name'] == FAMILY + ':4' and info['target']['revision'] == 3
    assert info['target']['images'] == ['bot:1.2.0'] and info['target']['changes'] is True
    assert info['last_stable']['revision'] == 3 and info['previous']['revision'] == 3
    assert 'sk-live-zzzzzz999999' in hidden and 'sk-live-abcdef123456' in hidden
    assert info['environment']['containers']['bot']['environment']['OPENAI_API_KEY'] == ecs_utils.MASK
    assert info['environment_diff']['from_revision'] == FAMILY + ':3'


def test_expected_current_refuses_a_service_that_moved(fake):
    with pytest.raises(OpsError, match='runs hotel-voice-bot:4, not the expected hotel-voice-bot:3: nothing changed'):
        run_release(fake, 'current', expected_current=3, mark_stable=True)
    assert not {'UpdateService', 'TagResource'} & set(fake.calls)
    assert run_release(fake, 'previous', expected_current=4)['to_revision']['revision'] == 3


def test_release_lists_inactive_revisions_only_to_explain_a_refusal(fake):
    run_release(fake, 'previous')
    assert fake.calls.count('ListTaskDefinitions') == 2   # ACTIVE pages only
    fake.calls.clear()
    with pytest.raises(OpsError, match='INACTIVE'):
        run_release(fake, 1)


# ---------------------------------------------------------------- image (hot-patch)

PATCH = 'bot:1.2.1'
SECRETS = ('sk-live-abcdef123456', 'hunter2secret', 'sk-live-zzzzzz999999')


def registered_revisions(fake):
    return sorted(td['revision'] for td in fake.task_defs.values() if td['family'] == FAMILY)


def test_image_registers_from_current_and_deploys(fake):
    fake.tags[td_arn(FAMILY, 4)] = {'team': 'voice', ecs_utils.TAG_STABLE_ON_REVISION: 'yesterday'}
    fake.task_defs[td_arn(FAMILY, 4)].update(cpu='256', memory='512', requiresAttributes=[dict(name='x')],
                                             compatibilities=['EC2', 'FARGATE'], registeredAt='2026-01-01')
    result = run_release(fake, 'current', image=PATCH, mark_stable=True)
    new = fake.task_defs[td_arn(FAMILY, 5)]
    assert result['changed'] and result['deployment_started'] and result['registered'] == FAMILY + ':5'
    assert result['to_revision']['revision'] == 5 and result['to_revision']['images'] == [PATCH]
    assert result['rollout_state'] == 'COMPLETED' and current_revision(fake) == '5'
    assert new['containerDefinitions'][0]['image'] == PATCH
    # everything else copied from 4, read-only fields not sent
    assert new['containerDefinitions'][0]['environment'] == fake.task_defs[td_arn(FAMILY, 4)]['containerDefinitions'][0]['environment']
    assert (new['cpu'], new['memory']) == ('256', '512') and 'requiresAttributes' not in new and 'registeredAt' not in new
    # tags copied except the stable mark of the base; the new one is stable only once verified (mark_stable)
    assert fake.tags[td_arn(FAMILY, 5)]['team'] == 'voice'
    assert result['marked_stable'] and fake.tags[fake.services[(CLUSTER, SERVICE)]['serviceArn']][
        ecs_utils.TAG_LAST_STABLE] == FAMILY + ':5'
    assert 'rollback' not in str(fake.tags[fake.services[(CLUSTER, SERVICE)]['serviceArn']])


def test_image_does_not_copy_the_stable_mark(fake):
    fake.tags[td_arn(FAMILY, 3)] = {ecs_utils.TAG_STABLE_ON_REVISION: '2026-11-01T00:00:00+00:00', 'team': 'voice'}
    run_release(fake, 'last_stable', image=PATCH)
    assert fake.tags[td_arn(FAMILY, 5)] == {'team': 'voice'}


def test_image_from_a_named_revision(fake):
    result = run_release(fake, 3, image=PATCH)
    new = fake.task_defs[td_arn(FAMILY, 5)]
    assert result['registered'] == FAMILY + ':5' and current_revision(fake) == '5'
    assert new['containerDefinitions'][0]['environment'] == fake.task_defs[td_arn(FAMILY, 3)]['containerDefinitions'][0]['environment']
    assert 'from hotel-voice-bot:3 with image bot:1.2.1' in result['to_revision']['reason']
    assert result['diff']['before']['images'] == {'bot': 'bot:1.3.0-bad'}
    assert result['diff']['after']['images'] == {'bot': PATCH}


def test_image_needs_a_container_when_there_are_several(fake):
    fake.task_defs[td_arn(FAMILY, 4)]['containerDefinitions'].append(dict(name='sidecar', image='envoy:1'))
    with pytest.raises(OpsError, match=r'hotel-voice-bot:4 has 2 containers \(bot, sidecar\): set container'):
        run_release(fake, 'current', image=PATCH)
    with pytest.raises(OpsError, match=r"has no container 'nope' \(containers: bot, sidecar\)"):
        run_release(fake, 'current', image=PATCH, container='nope')
    assert 'RegisterTaskDefinition' not in fake.calls and 'UpdateService' not in fake.calls
    result = run_release(fake, 'current', image='envoy:2', container='sidecar')
    assert result['to_revision']['images'] == ['bot:1.3.0-bad', 'envoy:2']
    assert [c['image'] for c in fake.task_defs[td_arn(FAMILY, 5)]['containerDefinitions']] == ['bot:1.3.0-bad', 'envoy:2']


def test_image_rerun_changes_nothing(fake):
    run_release(fake, 'current', image=PATCH)
    fake.calls.clear()
    again = run_release(fake, 'current', image=PATCH)
    assert not again['changed'] and again['registered'] is None and not again['deployment_started']
    assert again['to_revision']['revision'] == 5 and 'already runs bot:1.2.1' in again['to_revision']['reason']
    assert not {'RegisterTaskDefinition', 'UpdateService'} & set(fake.calls)
    # the same hot-patch named from its base (4) is also what runs already
    assert not run_release(fake, 4, image=PATCH)['changed']
    assert registered_revisions(fake) == [1, 2, 3, 4, 5]


def test_image_reuses_an_identical_newest_revision(fake):
    # A run registered 5 but died before UpdateService (or timed out): the re-run deploys 5.
    ecs_utils.EcsService(fake, CLUSTER, SERVICE).register(
        ecs_utils.registration(dict(fake.task_defs[td_arn(FAMILY, 4)], containerDefinitions=[
            dict(fake.task_defs[td_arn(FAMILY, 4)]['containerDefinitions'][0], image=PATCH)])))
    fake.calls.clear()
    result = run_release(fake, 'current', image=PATCH)
    assert result['changed'] and result['registered'] is None and result['to_revision']['revision'] == 5
    assert 'reused' in result['to_revision']['reason'] and current_revision(fake) == '5'
    assert 'RegisterTaskDefinition' not in fake.calls and registered_revisions(fake) == [1, 2, 3, 4, 5]


def test_image_check_mode_registers_nothing(fake):
    result = run_release(fake, 'current', image=PATCH, check_mode=True, mark_stable=True)
    assert result['changed'] and result['deployment_started'] and result['registered'] is None
    assert result['to_revision']['revision'] is None and result['to_revision']['name'] is None
    assert result['to_revision']['images'] == [PATCH]
    assert result['msg'] == 'would register a new revision of hotel-voice-bot from hotel-voice-bot:4 with image bot:1.2.1'
    assert result['diff']['before']['images'] == {'bot': 'bot:1.3.0-bad'} and result['diff']['after']['images'] == {'bot': PATCH}
    assert not {'RegisterTaskDefinition', 'UpdateService', 'TagResource'} & set(fake.calls)
    assert registered_revisions(fake) == [1, 2, 3, 4] and current_revision(fake) == '4'


def test_image_result_holds_no_environment_values(fake):
    hidden = []
    for kwargs in (dict(check_mode=True), {}, {}):
        result = run_release(fake, 3, image=PATCH, hide=hidden.append, **kwargs)
        text = repr(result)
        assert not [s for s in SECRETS if s in text]
        assert 'OPENAI_API_KEY' not in text and 'DATABASE_URL' not in text
    assert {'sk-live-abcdef123456', 'hunter2secret'} <= set(hidden)


def test_image_failed_deployment_says_what_was_registered(fake):
    fake.outcome = 'rollback'
    with pytest.raises(OpsError, match='rolled the service back to hotel-voice-bot:4 by itself') as err:
        run_release(fake, 'current', image='bot:1.2.1-crash')
    assert err.value.changed is True and err.value.result['registered'] == FAMILY + ':5'
    assert 'sk-live' not in repr(err.value.result)


@pytest.mark.parametrize('kwargs, message', [
    (dict(image=PATCH, force_new_deployment=True), 'image and force_new_deployment are mutually exclusive'),
    (dict(image=' '), 'image must not be empty'),
    (dict(image=PATCH, expected_current=3), 'not the expected hotel-voice-bot:3: nothing changed'),
    (dict(image=PATCH, mark_stable=True, wait=False), 'mark_stable needs wait'),
])
def test_image_refusals_register_nothing(fake, kwargs, message):
    with pytest.raises(OpsError, match=message):
        run_release(fake, 'current', **kwargs)
    assert not {'RegisterTaskDefinition', 'UpdateService', 'TagResource'} & set(fake.calls)


def test_registration_copies_only_what_register_accepts():
    td = dict(taskDefinitionArn='arn', family=FAMILY, revision=4, status='ACTIVE', requiresAttributes=[],
              compatibilities=['EC2'], registeredAt='x', registeredBy='y', deregisteredAt=None, cpu='256',
              volumes=[], containerDefinitions=[dict(name='bot', image='a')])
    request = ecs_utils.registration(td, [dict(key=ecs_utils.TAG_STABLE_ON_REVISION, value='t'),
                                          dict(key='aws:cloudformation:stack-name', value='s'), dict(key='k', value='v')])
    assert request == dict(family=FAMILY, cpu='256', containerDefinitions=[dict(name='bot', image='a')],
                           tags=[dict(key='k', value='v')])


def test_to_revision_lists_images_without_image_too(fake):
    assert run_release(fake, 'previous')['to_revision']['images'] == ['bot:1.2.0']
    assert run_release(fake, 'current', check_mode=True)['to_revision']['images'] == ['bot:1.2.0']


def test_image_update_failure_after_registering_says_rerun(fake):
    def refuse(**kwargs):
        raise botocore.exceptions.EndpointConnectionError(endpoint_url='http://127.0.0.1:1')
    fake.update_service = refuse
    with pytest.raises(OpsError, match='hotel-voice-bot:5 was registered; a re-run deploys it') as err:
        run_release(fake, 'current', image=PATCH)
    assert err.value.changed is True and err.value.result['registered'] == FAMILY + ':5'
    del fake.update_service
    fake.calls.clear()
    result = run_release(fake, 'current', image=PATCH)
    assert result['to_revision']['revision'] == 5 and result['registered'] is None and current_revision(fake) == '5'
    assert 'RegisterTaskDefinition' not in fake.calls


# ---------------------------------------------------------------- the wait: transient errors, drain, bounds

@pytest.mark.parametrize('burst', [
    [server_error()] * 6,
    [server_error(503, 'ServiceUnavailableException', 'try later')] * 3,
    [server_error(400, 'ThrottlingException', 'Rate exceeded')] * 4,
    [botocore.exceptions.EndpointConnectionError(endpoint_url='http://127.0.0.1:1')] * 3,
    [botocore.exceptions.ReadTimeoutError(endpoint_url='http://127.0.0.1:1')] * 2,
], ids=['500', '503', 'throttling', 'unreachable', 'read-timeout'])
def test_transient_errors_during_the_wait_are_polled_through(fake, burst):
    fake.failures_after_update = list(burst)
    result = run_release(fake, 3)
    assert not fake.describe_failures   # every error of the burst was met by a poll
    assert result['rollout_state'] == 'COMPLETED' and current_revision(fake) == '3'
    assert fake.calls.count('UpdateService') == 1


def test_an_outage_longer_than_the_grace_ends_the_wait_naming_the_deployment(fake):
    fake.failures_after_update = [server_error()] * 1000
    with pytest.raises(OpsError, match=r'lost contact with ECS for 30s \(longer than wait_outage_grace, 30s\) while '
                                       r'waiting for deployment ecs-svc/\d+ of hotel-voice-bot:3 .*re-run to converge') as err:
        run_release(fake, 3, outage_grace=30, timeout=600)
    assert err.value.changed is True
    assert err.value.result['deployment_id'] == primary_id(fake) and err.value.result['deployment_started']
    assert 30 <= err.value.result['waited_s'] < 40


def test_a_deadline_inside_an_outage_times_out_naming_the_deployment(fake):
    fake.failures_after_update = [server_error()] * 1000
    with pytest.raises(OpsError, match=r'timed out after 30s waiting for deployment ecs-svc/\d+ .*ECS has not answered') as err:
        run_release(fake, 3, timeout=30)
    assert err.value.result['deployment_id'] == primary_id(fake)
    assert 30 <= err.value.result['waited_s'] < 35


def test_a_non_transient_error_during_the_wait_fails_at_once(fake):
    fake.failures_after_update = [server_error(400, 'AccessDeniedException', 'not allowed')] * 5
    with pytest.raises(OpsError, match=r'cannot follow deployment ecs-svc/\d+ .*AccessDeniedException: not allowed') as err:
        run_release(fake, 3)
    assert err.value.changed is True and err.value.result['deployment_id'] == primary_id(fake)
    assert len(fake.describe_failures) == 4   # one poll, no retry


def test_the_wait_ends_only_when_the_old_deployment_has_stopped_its_tasks(fake):
    fake.drain_steps = 3
    result = run_release(fake, 3)
    svc = fake.services[(CLUSTER, SERVICE)]
    assert fake.draining_shown == 3   # the waiter did see COMPLETED beside old tasks still running
    assert [d['taskDefinition'] for d in svc['deployments']] == [td_arn(FAMILY, 3)]
    assert svc['runningCount'] == svc['desiredCount'] == 3
    assert any(e['message'].endswith('has stopped 3 running tasks.') for e in result['events'])


def test_the_wait_says_where_the_deployment_is_every_ten_seconds(fake):
    fake.outcome = 'hang'
    lines = []
    with pytest.raises(OpsError, match='timed out after 35s'):
        run_release(fake, 3, timeout=35, progress=lines.append)
    assert len(lines) == 3, lines
    for line, waited in zip(lines, (10, 20, 30)):
        found = re.match(r'^deployment ecs-svc/\d+ IN_PROGRESS: 0 of 3 tasks running \(3 old still running\), '
                         r'waited (\d+)s$', line)
        assert found and waited <= int(found.group(1)) < waited + 5, line


def test_the_wait_of_a_scale_and_through_an_outage_say_so(fake):
    lines = []
    with pytest.raises(OpsError, match='timed out after 15s'):
        run_release(fake, 'current', desired_count=5000, timeout=15, progress=lines.append)
    assert re.match(r'^hotel-voice-bot-service: \d+ of 5000 tasks running, waited 1\ds$', lines[0]), lines
    fake.failures_after_update, lines[:] = [server_error()] * 1000, []
    with pytest.raises(OpsError, match='lost contact'):
        run_release(fake, 'current', desired_count=0, outage_grace=25, progress=lines.append)
    assert re.match(r'^hotel-voice-bot-service to run 0 tasks: no answer from ECS for 1\ds '
                    r'\(DescribeServices for hotel-voice-bot-service failed: ServerException: internal\), '
                    r'waited 1\ds$', lines[0]), lines


@pytest.mark.parametrize('count', [100000000000, 5001, -1])
def test_desired_count_beyond_ecs_limits_is_refused_before_any_call(fake, count):
    # The range is the spec's (common.execute checks it before the work runs).
    result = execute(ecs_release.SPEC, release_work(fake), task_of(ecs_release, desired_count=count))
    assert result['failed'] and result['msg'] == 'desired_count must be between 0 and 5000, got %d' % count
    assert fake.calls == []


def test_desired_count_at_the_limit_is_taken(fake):
    assert run_release(fake, 'current', desired_count=5000, check_mode=True)['desired_count']['after'] == 5000


def test_restore_of_a_remembered_count_beyond_the_limit_is_refused(fake):
    fake.tags[fake.services[(CLUSTER, SERVICE)]['serviceArn']][ecs_utils.TAG_DESIRED_BEFORE] = '100000000000'
    with pytest.raises(OpsError, match=r'restore_desired_count: the count remembered in tag '
                                       r'hotelbot.ops/desired-count-before-scale .* between 0 and 5000'):
        run_release(fake, 'current', restore_desired_count=True)
    assert not {'UpdateService', 'TagResource'} & set(fake.calls)
    assert fake.services[(CLUSTER, SERVICE)]['desiredCount'] == 3


@pytest.mark.parametrize('answer', [{}, {'message': '<html><body>Welcome</body></html>'}, {'ResponseMetadata': {}}])
def test_an_answer_that_is_not_ecs_is_not_called_missing(fake, answer):
    fake.answer = answer
    with pytest.raises(OpsError, match=r'did not answer as AWS ECS does \(DescribeServices for hotel-voice-bot-service: '
                                       r'the answer has no services or failures\)') as err:
        run_release(fake, 'previous')
    assert 'not found' not in err.value.msg and 'MISSING' not in err.value.msg
    assert 'UpdateService' not in fake.calls


# ---------------------------------------------------------------- secrets in every form (issue 11, item 2)

REAL_WORLD_ENV = [
    dict(name='REDIS_URL', value='redis://:Redis-pw-7f3@cache:6379/0'),
    dict(name='DATABASE_URL', value='postgres://bot:p@ss-w0rd-9@db/hotel'),
    dict(name='JDBC_URL', value='jdbc:postgresql://db/hotel?user=bot&password=Jdbc-pw-17'),
    dict(name='SMTP_PWD', value='Smtp-pw-2024'),
    dict(name='STRIPE_SK', value='Stripe-sk-99999'),
    dict(name='LOG_LEVEL', value='info'),
]
REAL_WORLD_SECRETS = ('Redis-pw-7f3', 'p@ss-w0rd-9', 'ss-w0rd-9', 'Jdbc-pw-17', 'Smtp-pw-2024', 'Stripe-sk-99999')


def test_info_and_hot_patch_never_return_secrets_of_any_form(fake):
    fake.task_defs[td_arn(FAMILY, 4)]['containerDefinitions'][0]['environment'] = list(REAL_WORLD_ENV)
    hidden = []
    info = run_info(fake, environment_of='current', diff_from=3, diff_to='current', hide=hidden.append)
    patched = run_release(fake, 'current', image=PATCH, hide=hidden.append)
    shown = repr(info) + repr(patched)
    assert [s for s in REAL_WORLD_SECRETS if s in shown] == []
    assert {'Redis-pw-7f3', 'p@ss-w0rd-9', 'Jdbc-pw-17', 'Smtp-pw-2024', 'Stripe-sk-99999'} <= set(hidden)
    assert info['environment']['containers']['bot']['environment']['LOG_LEVEL'] == 'info'
    # the registered revision carries the real values: masking is for display only
    assert fake.task_defs[td_arn(FAMILY, 5)]['containerDefinitions'][0]['environment'] == REAL_WORLD_ENV
