"""The release lock's heartbeat against the real sandbox: a live run keeps its short lease, a killed
run's lease lapses within its ttl and auto_rollback.yml then acts, and a dead run's lock can be broken
from the playbooks (audited). Assertions are on the lease and events rows and on the ECS revision.

ttls are shortened with -e to keep each test a few seconds long; the mechanism is the same at 90 s.
"""
import os
import shutil
import signal
import tempfile
import threading
import time

import pytest
from psycopg import sql

from ansible_collections.hotelbot.ops.plugins.module_utils import release_lock as r
from conftest import failed_results
from sandbox import control

TABLE = 'hotelbot_release_locks'
EVENTS = TABLE + '_events'

# A run that takes the service's lock and then works for a long time (its "module" is the sleep).
HOLDER = '''
- hosts: sandbox
  gather_facts: false
  module_defaults:
    group/hotelbot.ops.postgres:
      host: "{{ hotelbot_db_host }}"
      port: "{{ hotelbot_db_port }}"
      user: "{{ hotelbot_db_user }}"
  tasks:
    - name: Take the lock
      hotelbot.ops.release_lock:
        database: "{{ hotelbot_lock_database }}"
        name: "ecs/{{ hotelbot_ecs_cluster }}/{{ hotelbot_ecs_service }}"
        owner: "{{ holder_owner }}"
        purpose: hotpatch CHG-LIVE
        ttl: "{{ holder_ttl }}"
    - name: Work
      ansible.builtin.command: sleep 300
      changed_when: false
'''


def lock_name(sandbox):
    return 'ecs/%s/%s' % (sandbox.cluster, sandbox.service)


def lease(sandbox):
    """The service's lease row (dict, with `expired` by the server's clock), or None."""
    with sandbox.admin() as conn:
        if conn.execute('SELECT to_regclass(%s)', ('public.' + TABLE,)).fetchone()[0] is None:
            return None
        cursor = conn.execute(sql.SQL('SELECT *, expires_at <= now() AS expired FROM {} WHERE name = %s').format(
            sql.Identifier('public', TABLE)), (lock_name(sandbox),))
        row = cursor.fetchone()
        return None if row is None else dict(zip([d.name for d in cursor.description], row))


def events(sandbox):
    with sandbox.admin() as conn:
        if conn.execute('SELECT to_regclass(%s)', ('public.' + EVENTS,)).fetchone()[0] is None:
            return []
        cursor = conn.execute(sql.SQL('SELECT name, event, owner, purpose, broken_by, at FROM {} ORDER BY id').format(
            sql.Identifier('public', EVENTS)))
        return [dict(zip([d.name for d in cursor.description], row)) for row in cursor.fetchall()]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError('timed out after %ss waiting for %s' % (timeout, what))


def children(pid):
    """Every descendant of pid (by /proc's parent links): the workers and the modules they run."""
    parents = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/stat' % entry) as handle:
                    text = handle.read()
            except OSError:
                continue
            parents[int(entry)] = int(text[text.rfind(')') + 2:].split()[1])
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        kids = [p for p, parent in parents.items() if parent == current]
        found.extend(kids)
        todo.extend(kids)
    return found


def ticks_now():
    """Now, in /proc's unit for process start times (clock ticks since boot)."""
    with open('/proc/uptime') as handle:
        return float(handle.read().split()[0]) * os.sysconf('SC_CLK_TCK')


def started_at(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            text = handle.read()
    except OSError:
        return None
    return int(text[text.rfind(')') + 2:].split()[19])


def running(pid):
    """pid is a live process (not gone, not a zombie), read from /proc independently of the code under test."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            text = handle.read()
    except OSError:
        return False
    return text[text.rfind(')') + 2:].split()[0] not in ('Z', 'X')


def cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode('utf-8', 'replace')
    except OSError:
        return ''


def comm(pid):
    try:
        with open('/proc/%d/comm' % pid) as handle:
            return handle.read().strip()
    except OSError:
        return ''


def is_renewer(pid):
    """A fork of the release_lock module, or (the task run in the controller's worker) of an ansible-playbook
    worker, which the renewer names hotelbot-renew: its cmdline is the worker's."""
    return 'AnsiballZ_release_lock' in cmdline(pid) or comm(pid) == 'hotelbot-renew'


def renewers(sandbox, since=0):
    """Live heartbeat processes of this sandbox's runs (see is_renewer) started after
    `since` (ticks_now()); an earlier test's renewer may still sleep out its last period."""
    marker = ('HOTELBOT_SANDBOX_DIR=%s' % sandbox.dir).encode()
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit() and is_renewer(int(entry)):
            try:
                with open('/proc/%s/environ' % entry, 'rb') as handle:
                    if marker in handle.read().split(b'\0') and running(int(entry)) and \
                            (started_at(int(entry)) or 0) >= since:
                        found.append(int(entry))
            except OSError:
                continue
    return found


class Run:
    """A playbook running in the background, its output collected (so a full pipe never blocks it)."""

    def __init__(self, sandbox, *args, playbook):
        self.proc = sandbox.popen_playbook(*args, playbook=playbook)
        self.output = []
        self.reader = threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def module_running(self, name):
        return [p for p in children(self.proc.pid) if name in cmdline(p)]

    def kill(self):
        """SIGKILL the playbook and everything it started (the modules run in sessions of their own)."""
        victims = [self.proc.pid] + children(self.proc.pid)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)
        wait_for(lambda: not any(running(pid) for pid in victims), 10, 'the killed processes to go')

    def text(self):
        return ''.join(self.output)


@pytest.fixture
def holder_play():
    directory = tempfile.mkdtemp(prefix='lock-holder-')
    path = os.path.join(directory, 'holder.yml')
    with open(path, 'w') as handle:
        handle.write(HOLDER)
    yield path
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def clean_events(fresh):
    with fresh.admin() as conn:
        conn.execute(sql.SQL('DROP TABLE IF EXISTS {}').format(sql.Identifier('public', EVENTS)))
    yield fresh


def test_a_killed_hotpatch_lease_lapses_and_auto_rollback_then_rolls_back(fresh):
    """hotpatch.yml killed in its Prometheus watch (playbook and module) leaves a bad release serving;
    its lease lapses within the ttl and auto_rollback.yml takes the lock and rolls the release back."""
    fresh.metrics_history()
    ttl = 6
    since = ticks_now()
    image = fresh.state['ecs']['images']['3'].rsplit(':', 1)[0] + ':1.2.1-flaky'
    run = Run(fresh, '-e', 'hotpatch_change_id=CHG-KILL', '-e', 'hotpatch_tests_passed=true', '-e',
              'hotpatch_image=' + image, '-e', 'hotpatch_lock_ttl=%d' % ttl, '-e', 'hotpatch_watch_for=5m',
              playbook='hotpatch.yml')
    try:
        # the gate runs as a module, or in the controller's worker (then only its task banner shows it)
        wait_for(lambda: run.module_running('AnsiballZ_prometheus_gate') or 'TASK [Watch the error ratio' in run.text()
                 or run.proc.poll() is not None, 180, 'the hot-patch watch to start')
        assert run.proc.poll() is None, run.text()[-3000:]
        bad = fresh.revision()
        assert bad > 5, 'production runs the hot-patch revision'
        held = lease(fresh)
        # alive: its heartbeat renews the lease
        wait_for(lambda: lease(fresh)['renewed_at'] > held['acquired_at'], ttl / 3 + 3, 'the lease to be renewed')
        assert renewers(fresh, since)
        held = lease(fresh)
        # an owner without spaces, so that -e release_break_lock=<owner> takes it as printed
        assert held['owner'].startswith(os.environ.get('USER', 'ansible') + '@sandbox/CHG-KILL/')
    finally:
        run.kill()
    killed_at = time.monotonic()
    # The holder is gone: the renewer stops within one period and the lease lapses within the ttl.
    wait_for(lambda: not renewers(fresh, since), ttl / 3 + 3, 'the renewer to stop')
    wait_for(lambda: lease(fresh)['expired'], ttl + 3, 'the dead run\'s lease to lapse')
    assert time.monotonic() - killed_at <= ttl + 3
    assert lease(fresh)['owner'] == held['owner'] and fresh.revision() == bad  # the bad release still serves
    control.reset_calls(fresh.dir)

    rolled = fresh.playbook('-e', 'severity=P1', '-e', 'auto_rollback_lock_ttl=%d' % ttl,
                            playbook='playbooks/auto_rollback.yml')
    assert rolled.returncode == 0, rolled.stdout[-3000:]
    assert fresh.revision() == 3 and fresh.calls().get('ecs:UpdateService', 0) == 1
    assert lease(fresh) is None


def test_a_live_holder_keeps_its_lease_and_auto_rollback_fails_naming_it(fresh, holder_play):
    """A live run renews its 3 s lease for longer than the ttl; auto_rollback.yml with a bad release
    serving waits for it, then exits non-zero changing nothing, and the lease is still the holder's."""
    ttl = 3
    fresh.deploy(4)   # the bad release: health fails, so a rollback is called for
    control.reset_calls(fresh.dir)
    holder = Run(fresh, '-e', 'holder_owner=alice@ci/CHG-LIVE', '-e', 'holder_ttl=%d' % ttl, playbook=holder_play)
    try:
        wait_for(lambda: holder.module_running('sleep 300'), 60, 'the holder to take the lock and work')
        taken = lease(fresh)
        assert taken['owner'] == 'alice@ci/CHG-LIVE'
        fresh.metrics_history()
        started = time.monotonic()
        run = fresh.playbook('-e', 'auto_rollback_lock_wait=%d' % (3 * ttl), playbook='playbooks/auto_rollback.yml')
        assert time.monotonic() - started > 3 * ttl
        assert run.returncode != 0, run.stdout[-3000:]
        failed = ' '.join(f.get('msg', '') for f in failed_results(run))
        assert 'alice@ci/CHG-LIVE' in failed and 'hotpatch CHG-LIVE' in failed, failed
        assert fresh.revision() == 4 and fresh.calls().get('ecs:UpdateService', 0) == 0
        now = lease(fresh)
        assert now['owner'] == 'alice@ci/CHG-LIVE' and not now['expired']
        assert now['acquired_at'] == taken['acquired_at'] and now['renewed_at'] > taken['renewed_at']
        assert (now['renewed_at'] - now['acquired_at']).total_seconds() > ttl  # alive longer than one ttl
    finally:
        holder.kill()


def test_break_lock_refuses_the_wrong_owner_and_breaks_the_right_one(clean_events):
    fresh = clean_events
    fresh.deploy(4)
    control.reset_calls(fresh.dir)
    pg = fresh.state['postgres']
    # A dead run's lease, long enough that it cannot lapse during the test.
    r.run_release_lock(dict(host=pg['socket_dir'], port=pg['port'], user=pg['superuser'], database='postgres',
                            connect_timeout=5, connect_params={}, name=lock_name(fresh), state='acquired',
                            owner='alice@ci/CHG-9/dead', purpose='hotpatch CHG-9', ttl='10m', wait=0, renew=True,
                            fail_when_held=True, force=False, schema='public', table=TABLE))
    before = lease(fresh)

    wrong = fresh.playbook('-e', 'rollback_break_lock=bob@ci/CHG-8')
    assert wrong.returncode != 0
    failed = ' '.join(f.get('msg', '') for f in failed_results(wrong))
    assert 'is held by alice@ci/CHG-9/dead' in failed and 'not by bob@ci/CHG-8: not broken' in failed, failed
    assert lease(fresh) == before and events(fresh) == []
    assert fresh.revision() == 4 and fresh.calls().get('ecs:UpdateService', 0) == 0

    right = fresh.playbook('-e', 'rollback_break_lock=alice@ci/CHG-9/dead')
    assert right.returncode == 0, right.stdout[-3000:]
    assert fresh.revision() == 3 and fresh.calls().get('ecs:UpdateService', 0) == 1
    assert lease(fresh) is None
    audit = events(fresh)
    assert len(audit) == 1, audit
    assert audit[0]['event'] == 'broken' and audit[0]['owner'] == 'alice@ci/CHG-9/dead'
    assert audit[0]['purpose'] == 'hotpatch CHG-9' and audit[0]['name'] == lock_name(fresh)
    assert audit[0]['broken_by'].startswith('rollback:') and audit[0]['at'] >= before['acquired_at']


RELEASER = HOLDER.replace('''    - name: Work
      ansible.builtin.command: sleep 300''', '''    - name: Work a little
      ansible.builtin.command: sleep 3
      changed_when: false
    - name: Give it back
      hotelbot.ops.release_lock:
        database: "{{ hotelbot_lock_database }}"
        name: "ecs/{{ hotelbot_ecs_cluster }}/{{ hotelbot_ecs_service }}"
        owner: "{{ holder_owner }}"
        state: released
    - name: Work on without the lock
      ansible.builtin.command: sleep 300''')


def test_releasing_stops_the_renewer_while_the_holder_lives(fresh, holder_play):
    with open(holder_play, 'w') as handle:
        handle.write(RELEASER)
    since = ticks_now()
    run = Run(fresh, '-e', 'holder_owner=alice@ci/CHG-REL', '-e', 'holder_ttl=3', playbook=holder_play)
    try:
        wait_for(lambda: run.module_running('sleep 3 '), 60, 'the holder to take the lock and work')
        assert renewers(fresh, since), 'the holder has a heartbeat'
        wait_for(lambda: run.module_running('sleep 300'), 60, 'the holder to release and work on')
        assert lease(fresh) is None
        wait_for(lambda: not renewers(fresh, since), 1 + 3, 'the renewer to see its lease gone')
        assert run.proc.poll() is None  # the holder still runs
    finally:
        run.kill()
