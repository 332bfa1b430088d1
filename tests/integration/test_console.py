"""The console at 3 a.m.: progress during long waits (ansible-playbook and ansible-runner's events,
the controller path and the module path), a summary that prints for every outcome and tells the
truth after a failure, --check --diff in production without approval, and P2 with Prometheus down.

The summary is the product here: tests read the Summary task's msg from ansible-runner's events, line
by line, and check the platform's state (the revision running, ECS calls, the lock rows) beside it.
"""
import datetime
import os
import re
import shlex
import tempfile

import ansible_runner
import pytest

from conftest import BIN, ROOT
from sandbox import control

DEPLOY_SECONDS = 40
# The gap the issue allows between two lines while a wait lasts longer than 15 s.
MAX_SILENCE_S = 15.0
RELEASE_TASK = 'Roll the ECS service and wait for the deployment'


def updates(sandbox):
    return sandbox.calls().get('ecs:UpdateService', 0)


def run_playbook(sandbox, *args, playbook='rollback.yml'):
    """A playbook run through ansible-runner (as AWX runs it): (rc, {task name: result on host sandbox}),
    the results read from runner's events."""
    runner, events = runner_playbook(sandbox, *args, playbook=playbook)
    results = {}
    for event in events:
        data = event.get('event_data', {})
        if event['event'] in ('runner_on_ok', 'runner_on_failed') and data.get('host') == 'sandbox':
            results[data['task']] = data['res']
    return runner.rc, results


def summary(results):
    """The Summary task's lines as {label: text} (outcome, deployment, left, next, ...)."""
    assert 'Summary' in results, sorted(results)
    lines = {}
    msg = results['Summary']['msg']
    # rollback.yml's summary is one text; hotpatch.yml's and auto_rollback.yml's a list of lines.
    for line in msg.splitlines() if isinstance(msg, str) else msg:
        label, text = line.split(': ', 1) if ': ' in line else (line, '')
        lines[label] = text
    return lines


def runner_playbook(sandbox, *extra, playbook='rollback.yml', on_event=None):
    """A playbook through ansible-runner; returns (runner, events)."""
    private = tempfile.mkdtemp(prefix='hotelbot-runner-')
    env = dict(HOTELBOT_SANDBOX_DIR=str(sandbox.dir), ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'),
               PATH=BIN + os.pathsep + os.environ.get('PATH', ''), ANSIBLE_NOCOLOR='1')
    events = []

    def handler(event):
        events.append(event)
        if on_event:
            on_event(event)
        return True

    runner = ansible_runner.run(private_data_dir=private, project_dir=ROOT, playbook=os.path.join(ROOT, playbook),
                                envvars=env, cmdline=' '.join(shlex.quote(a) for a in extra), event_handler=handler,
                                quiet=True, timeout=400)
    return runner, events


def created(event):
    return datetime.datetime.fromisoformat(event['created'].replace('Z', '+00:00')).timestamp()


def release_window(events):
    """The events from the release task's start to its result, and the progress lines among them."""
    start = next(i for i, e in enumerate(events) if e['event'] == 'playbook_on_task_start'
                 and e['event_data'].get('task') == RELEASE_TASK)
    end = next(i for i, e in enumerate(events) if i > start and e['event'] in ('runner_on_ok', 'runner_on_failed')
               and e['event_data'].get('task') == RELEASE_TASK)
    window = events[start:end + 1]
    lines = [e['stdout'] for e in window if e['event'] == 'verbose' and e.get('stdout', '').strip()]
    return window, lines


def longest_silence(window):
    stamps = [created(e) for e in window if e['event'] in ('playbook_on_task_start', 'verbose')
              or e is window[-1]]
    return max(b - a for a, b in zip(stamps, stamps[1:]))


@pytest.mark.parametrize('path', ['controller', 'module'])
def test_a_long_wait_shows_progress_in_runner_events(fresh, path):
    """A 40 s deployment: runner's events carry a line at most 15 s apart (what AWX shows), naming
    the deployment, its state and the counts; on the module path too (async polling). While that
    run holds the lock, a second rollback is refused and still prints its summary."""
    control.set_deploy_seconds(DEPLOY_SECONDS, fresh.dir)
    extra = ['-e', 'rollback_target=previous']
    if path == 'module':
        extra += ['-e', 'hotelbot_controller_modules=false']
    refused = {}

    def while_holding(event):
        # The release task started: this run holds the lock for the next 40 s.
        if (path == 'controller' and not refused and event['event'] == 'playbook_on_task_start'
                and event['event_data'].get('task') == RELEASE_TASK):
            refused['run'] = run_playbook(fresh, '-e', 'rollback_target=previous')

    runner, events = runner_playbook(fresh, *extra, on_event=while_holding)
    assert runner.rc == 0, runner.stdout.read()[-3000:]
    assert fresh.revision() == 2
    window, lines = release_window(events)
    assert created(window[-1]) - created(window[0]) > DEPLOY_SECONDS - 5   # the wait did last
    assert longest_silence(window) <= MAX_SILENCE_S, [(round(created(e) - created(window[0]), 1), e['event'])
                                                      for e in window]
    deployment = [line for line in lines if 'IN_PROGRESS' in line and 'tasks running' in line]
    assert deployment, lines
    if path == 'controller':
        rc, results = refused['run']
        assert rc == 2
        lines = summary(results)
        assert lines['outcome'].startswith('failed - Take the release lock')
        assert 'not moved' in lines['left'] and 'release_break_lock' in lines['next']
        assert lines['deployment'] == 'none started'


def test_a_timed_out_wait_says_what_was_started_and_what_to_run(fresh):
    """After a wait timeout the summary names the deployment ECS is rolling, how long it waited,
    the state it left the service in and a next command; that command then finishes the job."""
    control.set_deploy_seconds(30, fresh.dir)
    rc, results = run_playbook(fresh, '-e', 'rollback_target=previous', '-e', 'rollback_wait_timeout=12')
    assert rc == 2
    primary = next(d for d in fresh.describe()['deployments'] if d['status'] == 'PRIMARY')
    assert primary['rolloutState'] == 'IN_PROGRESS' and fresh.revision() == 2
    lines = summary(results)
    assert lines['outcome'].startswith('failed - %s: timed out after 12s' % RELEASE_TASK)
    shown = re.fullmatch(r'(\S+) IN_PROGRESS, waited ([0-9.]+)s \(the wait failed; the platform goes on with it\)',
                         lines['deployment'])
    assert shown and shown.group(1) == primary['id'], lines['deployment']
    assert 12.0 <= float(shown.group(2)) < 20
    assert results[RELEASE_TASK]['waited_s'] >= 12.0 and results[RELEASE_TASK]['deployment_id'] == primary['id']
    assert lines['left'].endswith(' on hotel-voice-bot:2, deployment %s IN_PROGRESS (the platform goes on with it)' % primary['id'])
    assert lines['next'].startswith('the deployment goes on; to follow it and verify, re-run with ')
    assert fresh.locks() == []
    # The next command, as the summary gives it: follows the same deployment, starts no other.
    again = lines['next'].split('re-run with ', 1)[1].split()
    before = updates(fresh)
    rc, results = run_playbook(fresh, *again)
    assert rc == 0, summary(results)
    assert updates(fresh) == before and fresh.revision() == 2
    assert summary(results)['deployment'].startswith('%s COMPLETED' % primary['id'])


def test_check_diff_in_production_shows_the_plan_without_approval(fresh):
    production = ['-e', 'hotelbot_environment=production', '-e', 'rollback_target=previous']
    rc, results = run_playbook(fresh, '--check', '--diff', *production)
    assert rc == 0, summary(results)
    lines = summary(results)
    assert lines['from'].startswith('hotel-voice-bot:3 to: hotel-voice-bot:2')
    assert lines['outcome'].startswith('checked (nothing changed); approval is needed to act')
    assert 'rollback_approved=true' in lines['outcome']
    plan = results['Check the request and the release facts, and show the plan']['msg']
    assert 'Will roll it to hotel-voice-bot:2' in plan and 'Approval is needed to act' in plan
    assert updates(fresh) == 0 and fresh.revision() == 3 and fresh.locks() == []
    # Acting still needs the approval.
    rc, results = run_playbook(fresh, *production)
    assert rc == 2
    lines = summary(results)
    assert 'production is a production environment' in lines['outcome']
    assert lines['next'].startswith('see the plan with --check --diff')
    assert updates(fresh) == 0 and fresh.revision() == 3 and fresh.locks() == []


def test_p2_with_prometheus_down_fails_like_auto_rollback(fresh):
    """An unknown verdict must not look like success to a CI stage: held, exit 2, nothing changed."""
    fresh.metrics_history()
    rc, results = run_playbook(fresh, '-e', 'severity=P2', '-e', 'hotelbot_prometheus_url=http://127.0.0.1:9')
    assert rc == 2
    lines = summary(results)
    assert lines['outcome'].startswith('held (no rollback)') and 'gate cannot decide' in lines['outcome']
    assert lines['next'].startswith('look at Prometheus')
    assert updates(fresh) == 0 and fresh.revision() == 3 and fresh.locks() == []
    auto = fresh.playbook('-e', 'severity=P2', '-e', 'hotelbot_prometheus_url=http://127.0.0.1:9',
                          playbook='playbooks/auto_rollback.yml')
    assert auto.returncode == rc


def test_a_successful_rollback_fits_on_one_screen(fresh):
    completed = fresh.playbook('-e', 'rollback_target=previous')
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert fresh.revision() == 2
    lines = completed.stdout.rstrip('\n').splitlines()
    assert len(lines) <= 50, completed.stdout
    assert any(line.strip().startswith('outcome: rolled back and verified') for line in lines)


@pytest.mark.parametrize('extra, says', [
    (('-e', 'severity=P3'), 'no rollback (plan the fix for the next deployment)'),
    (('-e', 'severity=P1', '-e', 'hotfix_available=true'), 'no rollback (ship the hotfix with hotpatch.yml within'),
])
def test_a_severity_that_calls_for_no_rollback_ends_with_the_summary(fresh, extra, says):
    before = fresh.revision()
    rc, results = run_playbook(fresh, *extra)
    assert rc == 0
    lines = summary(results)
    assert lines['outcome'].startswith(says) and lines['outcome'].endswith('nothing was changed')
    assert lines['deployment'] == 'none started' and lines['verification'] == 'not run'
    assert updates(fresh) == 0 and fresh.revision() == before and fresh.locks() == []


def crash_image(sandbox):
    """An image whose tasks never start (the ECS double's -crash mark)."""
    return sandbox.state['ecs']['images']['3'].rsplit(':', 1)[0] + ':1.2.1-crash'


HOTPATCH = ('-e', 'hotpatch_change_id=CHG-9', '-e', 'hotpatch_tests_passed=true', '-e', 'hotpatch_staging=false',
            '-e', 'hotpatch_backup=false')


def test_a_hotpatch_rolled_back_by_itself_says_where_it_left_production(fresh):
    """Production never starts the new image: the run rolls back by itself; the summary says production
    is back on the last stable release, verified, and what to do next."""
    fresh.metrics_history()
    rc, results = run_playbook(fresh, *HOTPATCH, '-e', 'hotpatch_image=' + crash_image(fresh),
                               '-e', 'hotpatch_wait_timeout=6', playbook='hotpatch.yml')
    assert rc == 2
    lines = summary(results)
    assert lines['outcome'].startswith('rolled back to hotel-voice-bot:'), lines
    back_on = lines['outcome'].split()[3]
    assert fresh.revision() == int(back_on.rsplit(':', 1)[1]), lines
    service = fresh.state['ecs']['cluster'] + '/' + fresh.state['ecs']['service']
    assert lines['left'] == 'production %s back on %s, verified' % (service, back_on), lines
    assert lines['next'].startswith('the hot-patch is not marked stable')
    assert lines['rollback'] == back_on and fresh.locks() == []


def test_a_hotpatch_whose_rollback_fails_says_how_to_finish_it(fresh):
    """The safety net fails too (both waits time out): the summary names the deployment ECS goes on
    with and the one command that finishes the rollback; that command then does."""
    fresh.metrics_history()
    control.set_deploy_seconds(14, fresh.dir)
    rc, results = run_playbook(fresh, *HOTPATCH, '-e', 'hotpatch_image=' + crash_image(fresh),
                               '-e', 'hotpatch_wait_timeout=5', playbook='hotpatch.yml')
    assert rc == 2
    lines = summary(results)
    assert lines['outcome'].startswith('failed, and the automatic rollback failed too'), lines
    shown = re.search(r'deployment (\S+) IN_PROGRESS: the automatic rollback to (hotel-voice-bot:\d+) failed', lines['left'])
    assert shown, lines['left']
    primary = next(d for d in fresh.describe()['deployments'] if d['status'] == 'PRIMARY')
    assert primary['id'] == shown.group(1) and primary['rolloutState'] == 'IN_PROGRESS'
    assert lines['next'].startswith('finish the rollback now, with the same inventory: ansible-playbook hotelbot.ops.rollback ')
    assert fresh.locks() == []
    # The command the summary gives, as given (the repo's rollback.yml is what hotelbot.ops.rollback runs).
    target = int(shown.group(2).rsplit(':', 1)[1])
    assert fresh.revision() == target
    again = lines['next'].split('hotelbot.ops.rollback ', 1)[1].split()
    before = updates(fresh)
    rc, results = run_playbook(fresh, *again, '-e', 'rollback_wait_timeout=60')
    assert rc == 0, summary(results)
    # It followed the rollback ECS was rolling, and started no other.
    assert updates(fresh) == before and fresh.revision() == target
    primary = next(d for d in fresh.describe()['deployments'] if d['status'] == 'PRIMARY')
    assert primary['rolloutState'] == 'COMPLETED'


def test_an_automatic_rollback_that_times_out_says_what_it_left_and_what_to_run(fresh):
    fresh.deploy(4)   # the bad release: health fails, so the run rolls back
    fresh.metrics_history()
    control.set_deploy_seconds(12, fresh.dir)
    rc, results = run_playbook(fresh, '-e', 'auto_rollback_wait_timeout=6', playbook='playbooks/auto_rollback.yml')
    assert rc == 2
    lines = summary(results)
    primary = next(d for d in fresh.describe()['deployments'] if d['status'] == 'PRIMARY')
    assert primary['rolloutState'] == 'IN_PROGRESS' and fresh.revision() == 3
    assert lines['deployment'].startswith('%s IN_PROGRESS after waiting ' % primary['id']), lines
    assert lines['left'].endswith('on hotel-voice-bot:3, deployment %s IN_PROGRESS (the platform goes on with it)'
                                  % primary['id']), lines
    assert lines['next'].startswith('the deployment goes on; to follow it and verify, run hotelbot.ops.rollback')
    assert fresh.locks() == []
    again = lines['next'].split('with the same inventory and ', 1)[1].split()
    before = updates(fresh)
    rc, results = run_playbook(fresh, *again)
    assert rc == 0, summary(results)
    assert updates(fresh) == before and fresh.revision() == 3
