"""hotpatch.yml, auto_rollback.yml and rollback.yml's severity and lock, against the sandbox:
real Prometheus scraping the real (demo) bot under guest traffic, ECS through moto, locks in
the real PostgreSQL. Assertions are on platform state: the revision ECS runs, the ledger,
the lock table, the API calls made."""
import http.server
import os
import threading

import pytest

from conftest import FAMILY, failed_results
from sandbox import control


def image(sandbox, tag):
    return sandbox.state['ecs']['images']['3'].rsplit(':', 1)[0] + ':' + tag


def revisions(sandbox):
    arns = sandbox.ecs.list_task_definitions(familyPrefix=FAMILY, status='ACTIVE')['taskDefinitionArns']
    return sorted(int(a.rsplit(':', 1)[1]) for a in arns if a.rsplit(':', 1)[0].endswith('/' + FAMILY))


def stable_tagged(sandbox, revision):
    arn = sandbox.td_arn(revision)
    return 'hotelbot.ops/stable' in sandbox.tags(arn)


def updates(sandbox):
    return sandbox.calls().get('ecs:UpdateService', 0)


def hotpatch(sandbox, *extra, timeout=400):
    sandbox.metrics_history()
    return sandbox.playbook('-e', 'hotpatch_change_id=CHG-1', '-e', 'hotpatch_tests_passed=true', *extra,
                            playbook='hotpatch.yml', timeout=timeout)


def test_a_bad_hotpatch_is_rolled_back_by_the_gate(fresh):
    before = revisions(fresh)
    run = hotpatch(fresh, '-e', 'hotpatch_image=' + image(fresh, '1.2.1-flaky'))
    assert run.returncode != 0, run.stdout[-3000:]
    new = [r for r in revisions(fresh) if r not in before]
    assert len(new) == 1, 'one new revision registered for the hot-patch'
    # production and staging are back on the last stable release, verified by the play
    assert fresh.revision() == 3
    assert fresh.describe(fresh.state['ecs']['staging_service'])['taskDefinition'].endswith(':3')
    fresh.wait_bot_version('1.2.0')
    # the bad release is not stable; the ledger still names revision 3; the lock is gone
    assert not stable_tagged(fresh, new[0])
    assert fresh.tags()['hotelbot.ops/last-stable'] == FAMILY + ':3'
    assert fresh.locks() == []
    # it was the gate that decided (verification passed: the English smoke test works)
    gate = [f for f in failed_results(run) if 'gate says' in f.get('msg', '')]
    assert gate and 'unhealthy' in gate[0]['msg'], run.stdout[-3000:]


def test_a_good_hotpatch_ends_marked_stable(fresh):
    before = revisions(fresh)
    run = hotpatch(fresh, '-e', 'hotpatch_image=' + image(fresh, '1.2.1'), '-e', 'hotpatch_watch_for=20s')
    assert run.returncode == 0, run.stdout[-3000:]
    new = [r for r in revisions(fresh) if r not in before]
    assert len(new) == 1
    assert fresh.revision() == new[0]
    assert fresh.describe(fresh.state['ecs']['staging_service'])['taskDefinition'].endswith(':%d' % new[0])
    assert fresh.tags()['hotelbot.ops/last-stable'] == '%s:%d' % (FAMILY, new[0])
    assert stable_tagged(fresh, new[0])
    assert fresh.locks() == []
    assert fresh.bot()[1]['version'] == '1.2.1'


def test_hotpatch_check_mode_changes_nothing(fresh):
    before, tags = revisions(fresh), fresh.tags()
    backups = fresh.state['dir'] + '/backups'
    listed = sorted(os.listdir(backups)) if os.path.isdir(backups) else []
    run = hotpatch(fresh, '--check', '-e', 'hotpatch_image=' + image(fresh, '1.2.1'))
    assert run.returncode == 0, run.stdout[-3000:]
    assert 'would register a new revision' in run.stdout
    assert revisions(fresh) == before and fresh.revision() == 3 and fresh.tags() == tags
    assert updates(fresh) == 0 and fresh.calls().get('ecs:RegisterTaskDefinition', 0) == 0 and fresh.locks() == []
    assert (sorted(os.listdir(backups)) if os.path.isdir(backups) else []) == listed


@pytest.mark.parametrize('extra', [
    ['-e', 'hotpatch_tests_passed=false'],
    ['-e', 'hotpatch_change_id='],
    ['-e', 'hotpatch_revision=4'],            # two things to ship at once
    ['-e', 'hotelbot_environment=production'],  # production without approval
])
def test_a_refused_hotpatch_touches_nothing(fresh, extra):
    before, tags = revisions(fresh), fresh.tags()
    run = hotpatch(fresh, '-e', 'hotpatch_image=' + image(fresh, '1.2.1'), *extra)
    assert run.returncode != 0
    assert 'refusing the hot-patch, nothing was touched' in ' '.join(f.get('msg', '') for f in failed_results(run))
    assert revisions(fresh) == before and fresh.revision() == 3 and fresh.tags() == tags
    assert updates(fresh) == 0 and fresh.locks() == []


def test_a_hotpatch_is_refused_while_another_release_holds_the_lock(fresh):
    with fresh.admin() as conn:
        conn.execute('CREATE TABLE public.hotelbot_release_locks (name text PRIMARY KEY, owner text NOT NULL, '
                     'purpose text NOT NULL DEFAULT \'\', acquired_at timestamptz NOT NULL DEFAULT now(), '
                     'renewed_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz NOT NULL, host text, '
                     'os_user text, db_user text DEFAULT current_user, client_addr inet)')
        conn.execute("INSERT INTO public.hotelbot_release_locks (name, owner, purpose, expires_at) VALUES "
                     "(%s, 'alice@laptop', 'rollback db', now() + interval '10 minutes')",
                     ('ecs/%s/%s' % (fresh.cluster, fresh.service),))
    before = revisions(fresh)
    run = hotpatch(fresh, '-e', 'hotpatch_image=' + image(fresh, '1.2.1'))
    assert run.returncode != 0
    assert 'alice@laptop' in ' '.join(f.get('msg', '') for f in failed_results(run))
    assert revisions(fresh) == before and updates(fresh) == 0
    assert [row[1] for row in fresh.locks()] == ['alice@laptop']
    # rollback.yml on the same service is refused the same way
    run = fresh.playbook('-e', 'rollback_target=2')
    assert run.returncode != 0 and fresh.revision() == 3 and updates(fresh) == 0


def auto_rollback(sandbox, *extra, **kwargs):
    sandbox.metrics_history()
    return sandbox.playbook(*extra, playbook='playbooks/auto_rollback.yml', **kwargs)


def test_auto_rollback_on_a_healthy_service_changes_nothing(fresh):
    tags = fresh.tags()
    run = auto_rollback(fresh)
    assert run.returncode == 0, run.stdout[-3000:]
    assert fresh.revision() == 3 and updates(fresh) == 0 and fresh.tags() == tags and fresh.locks() == []


def test_two_auto_rollbacks_at_once_only_one_acts(fresh):
    fresh.deploy(4)   # the bad release: health fails
    control.reset_calls(fresh.dir)
    fresh.metrics_history()
    runs = [fresh.popen_playbook(playbook='playbooks/auto_rollback.yml') for _index in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert fresh.revision() == 3
    assert updates(fresh) == 1, 'exactly one run rolled back'
    assert fresh.locks() == []


class Failing(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b'{"status":"error","errorType":"internal","error":"boom"}')

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def prometheus_500():
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield 'http://127.0.0.1:%d' % server.server_address[1]
    server.shutdown()


@pytest.mark.parametrize('where', ['down', '500'])
def test_prometheus_unusable_is_never_healthy(fresh, prometheus_500, where):
    url = 'http://127.0.0.1:9' if where == 'down' else prometheus_500
    fresh.deploy(2)   # a healthy but not-stable release
    control.reset_calls(fresh.dir)
    held = auto_rollback(fresh, '-e', 'hotelbot_prometheus_url=' + url)
    # policy hold (default): no rollback, but a non-zero exit so someone looks
    assert held.returncode != 0
    assert fresh.revision() == 2 and updates(fresh) == 0 and fresh.locks() == []
    rolled = auto_rollback(fresh, '-e', 'hotelbot_prometheus_url=' + url, '-e', 'auto_rollback_on_inconclusive=rollback')
    assert rolled.returncode == 0, rolled.stdout[-3000:]
    assert fresh.revision() == 3 and updates(fresh) == 1


@pytest.mark.parametrize('severity, hotfix, acts', [
    ('P0', False, True),    # immediate rollback, whatever the metrics say
    ('P1', False, True),
    ('P1', True, False),    # a hotfix is available: ship it instead
    ('P2', False, False),   # evaluate: healthy and the gate says healthy
    ('P3', False, False),   # plan for the next deployment
])
def test_severity_selects_the_behaviour(fresh, severity, hotfix, acts):
    fresh.metrics_history()
    fresh.deploy(2)   # healthy, not the stable release
    control.reset_calls(fresh.dir)
    run = fresh.playbook('-e', 'severity=' + severity, '-e', 'hotfix_available=%s' % hotfix)
    assert run.returncode == 0, run.stdout[-3000:]
    assert fresh.revision() == (3 if acts else 2)
    assert updates(fresh) == (1 if acts else 0)
    assert fresh.locks() == []


def test_unknown_severity_is_refused(fresh):
    run = fresh.playbook('-e', 'severity=P9')
    assert run.returncode != 0 and fresh.revision() == 3 and updates(fresh) == 0
