"""The SPECs of ecs_release and ecs_release_info, checked the way ansible-core checks them
(ArgumentSpecValidator) plus the ranges common.execute checks: good arguments pass, each mistake is
refused naming the option, before any ECS call."""
import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.hotelbot.ops.plugins.module_utils.common import Task, execute, spec_problems
from ansible_collections.hotelbot.ops.plugins.modules import ecs_release, ecs_release_info

BASE = dict(cluster='hotel-voice-bot', service='hotel-voice-bot-service', region='us-east-1')


def problems(module, **args):
    """Every message a module's SPEC gives for args: ansible-core's validation, then the ranges."""
    validation = ArgumentSpecValidator(**module.SPEC).validate(dict(BASE, **args))
    if validation.error_messages:
        return validation.error_messages
    return spec_problems(module.SPEC, validation.validated_parameters)


@pytest.mark.parametrize('args', [
    {},
    dict(revision='previous', wait_timeout=300, wait_outage_grace=0),
    dict(revision=3, desired_count=0),
    dict(desired_count=5000, expected_current=4),
    dict(restore_desired_count=True),
    dict(image='ghcr.io/hotelbot/hotel-voice-bot:1.2.1', container='bot', force_new_deployment=False),
    dict(mark_stable=True, revision='current', max_attempts=1, connect_timeout=0.5),
], ids=str)
def test_ecs_release_takes_good_arguments(args):
    assert problems(ecs_release, **args) == []


@pytest.mark.parametrize('args, named', [
    (dict(desired_count=5001), 'desired_count must be between 0 and 5000, got 5001'),
    (dict(desired_count=-1), 'desired_count must be between 0 and 5000, got -1'),
    (dict(wait_timeout=0), 'wait_timeout must be at least 1, got 0'),
    (dict(wait_outage_grace=-1), 'wait_outage_grace must be at least 0, got -1'),
    (dict(max_attempts=0), 'max_attempts must be at least 1, got 0'),
    (dict(connect_timeout=0), 'connect_timeout must be greater than 0, got 0.0'),
    (dict(read_timeout=-2), 'read_timeout must be greater than 0, got -2.0'),
    (dict(desired_count=0, restore_desired_count=True), 'mutually exclusive: desired_count|restore_desired_count'),
    (dict(container='bot'), "required by 'container': image"),
    (dict(wait_timeout='soon'), "'wait_timeout' is of type str"),
    (dict(desired_count='many'), "'desired_count' is of type str"),
    (dict(mark_stable='perhaps'), "'mark_stable' is of type str"),
    (dict(cluster=''), 'cluster must not be empty'),
    (dict(revison=3), 'revison'),
], ids=str)
def test_ecs_release_refuses_naming_the_option(args, named):
    found = problems(ecs_release, **args)
    assert len(found) == 1 and named in found[0], found


@pytest.mark.parametrize('args', [
    {}, dict(target='previous', environment_of='current', diff_from=3, diff_to='current', events_limit=0),
], ids=str)
def test_ecs_release_info_takes_good_arguments(args):
    assert problems(ecs_release_info, **args) == []


@pytest.mark.parametrize('args, named', [
    (dict(events_limit=-1), 'events_limit must be at least 0, got -1'),
    (dict(events_limit='all'), "'events_limit' is of type str"),
    (dict(service=' '), 'service must not be empty'),
    (dict(max_attempts=0), 'max_attempts must be at least 1, got 0'),
    (dict(desired_count=1), 'desired_count'),
], ids=str)
def test_ecs_release_info_refuses_naming_the_option(args, named):
    found = problems(ecs_release_info, **args)
    assert len(found) == 1 and named in found[0], found


def test_a_range_is_refused_before_the_work_runs():
    ran = []
    validation = ArgumentSpecValidator(**ecs_release.SPEC).validate(dict(BASE, desired_count=100000000000))
    result = execute(ecs_release.SPEC, ran.append, Task(validation.validated_parameters))
    assert result['failed'] and 'desired_count' in result['msg'] and ran == []
