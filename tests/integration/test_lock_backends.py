"""The release lock's backends in the real playbooks, against the sandbox: an application rollback with
neither psycopg nor PostgreSQL (DynamoDB in the sandbox's moto), idempotent re-runs reporting changed=0,
the documented command for a dead run's lease, and what a postgres-backed run says when PostgreSQL is down.

Every assertion is on state: the ECS service, the lease item or row, the play recap's numbers (written by
the stats_to_file test callback).
"""
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import psycopg
import pytest

from sandbox import postgres as sandbox_postgres

from tests.integration.conftest import BIN, ROOT, failed_results

DOCS = Path(ROOT) / 'docs' / 'locking.md'
TABLE = 'hotelbot_release_locks'
# Makes `import psycopg` fail in every Python started with this directory on PYTHONPATH: ansible-playbook,
# its forked workers, and the module processes it starts (they inherit the environment).
NO_PSYCOPG = '''import sys


class _NoPsycopg:
    """Refuses psycopg and its binary builds, as in a Python where they are not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('psycopg', 'psycopg_binary', 'psycopg_c', 'psycopg2'):
            raise ImportError('No module named %r (hidden by the test)' % name)
        return None


sys.meta_path.insert(0, _NoPsycopg())
'''


def dynamodb(sandbox):
    return boto3.client('dynamodb', region_name=sandbox.state['region'], endpoint_url=sandbox.state['aws']['endpoint_url'],
                        aws_access_key_id=sandbox.state['aws']['access_key_id'],
                        aws_secret_access_key=sandbox.secrets['aws_secret_access_key'])


def items(sandbox, kind):
    found = dynamodb(sandbox).scan(TableName=TABLE, ConsistentRead=True).get('Items', [])
    return [i for i in found if i.get('kind', {}).get('S') == kind]


@pytest.fixture
def lock_table(fresh):
    """The sandbox's DynamoDB lease table, emptied before and after."""
    def clear():
        client = dynamodb(fresh)
        for item in client.scan(TableName=TABLE, ConsistentRead=True).get('Items', []):
            client.delete_item(TableName=TABLE, Key={'name': item['name']})
    clear()
    yield fresh
    clear()


@pytest.fixture
def ecs_inventory(tmp_path):
    """The sandbox inventory as a user on ECS writes it: no hotelbot_lock_backend, so the playbooks'
    default for the platform applies (dynamodb)."""
    copy = tmp_path / 'inventory'
    shutil.copytree(os.path.join(ROOT, 'inventory', 'sandbox'), copy)
    group_vars = copy / 'group_vars' / 'hotelbot.yml'
    text = group_vars.read_text()
    assert 'hotelbot_lock_backend: postgres\n' in text
    group_vars.write_text(text.replace('hotelbot_lock_backend: postgres\n', ''))
    return str(copy)


def run(sandbox, args, playbook='rollback.yml', env=None, tmp=None):
    """ansible-playbook against the sandbox: (CompletedProcess, recap of the sandbox host, changed tasks)."""
    stats_file = os.path.join(sandbox.dir, 'stats-%s.json' % uuid.uuid4().hex[:8])
    failures = os.path.join(sandbox.dir, 'failures-%s.jsonl' % uuid.uuid4().hex[:8])
    full_env = dict(os.environ, HOTELBOT_SANDBOX_DIR=str(sandbox.dir), ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'),
                    PATH=BIN + os.pathsep + os.environ.get('PATH', ''), ANSIBLE_NOCOLOR='1',
                    ANSIBLE_CALLBACK_PLUGINS=os.path.join(ROOT, 'tests', 'integration', 'callback_plugins'),
                    ANSIBLE_CALLBACKS_ENABLED='stats_to_file,failures_to_file', HOTELBOT_STATS_FILE=stats_file,
                    HOTELBOT_FAILURES_FILE=failures)
    full_env.update(env or {})
    completed = subprocess.run([os.path.join(BIN, 'ansible-playbook'), playbook] + list(args), cwd=ROOT, env=full_env,
                               capture_output=True, text=True, timeout=300, check=False)
    completed.failures = []
    if os.path.exists(failures):
        with open(failures) as handle:
            completed.failures = [json.loads(line) for line in handle if line.strip()]
    with open(stats_file) as handle:
        stats = json.load(handle)
    return completed, stats['hosts'].get('sandbox', {}), stats['changed_tasks']


def without_psycopg(tmp_path):
    site = tmp_path / 'no_psycopg'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(NO_PSYCOPG)
    env = dict(PYTHONPATH=str(site) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    probe = subprocess.run([os.path.join(BIN, 'python'), '-c', 'import psycopg'], env=dict(os.environ, **env),
                           capture_output=True, text=True, check=False)
    assert probe.returncode != 0 and 'hidden by the test' in probe.stderr, probe.stderr
    return env


def postgres_reachable(sandbox):
    pg = sandbox.state['postgres']
    try:
        psycopg.connect(host=pg['host'], port=pg['port'], user=pg['user'], password=sandbox.secrets['postgres_password'],
                        dbname=pg['database'], connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def start_postgres(sandbox):
    """Start the sandbox's stopped PostgreSQL again (on its data directory, as sandbox up left it)."""
    directory = Path(sandbox.dir)
    if sandbox_postgres.postmaster_pid(directory) is None:
        sandbox_postgres._run([str(sandbox_postgres.BIN_DIR / 'pg_ctl'), '-D', str(sandbox_postgres.data_dir(directory)),
                               '-l', str(sandbox_postgres.log_file(directory)), '-w', '-t', '20', 'start'],
                              directory, start_new_session=True)
    assert postgres_reachable(sandbox)


@pytest.fixture
def postgres_down(lock_table):
    """The sandbox's PostgreSQL stopped for the test (a database incident), started again after it."""
    sandbox_postgres.stop(Path(lock_table.dir))
    assert not postgres_reachable(lock_table)
    try:
        yield lock_table
    finally:
        start_postgres(lock_table)


def test_app_rollback_needs_neither_psycopg_nor_postgresql(postgres_down, ecs_inventory, tmp_path):
    sandbox = postgres_down
    sandbox.deploy(4)  # the bad release; revision 3 is the last stable
    env = without_psycopg(tmp_path)

    # Asked for the postgres lock (the sandbox inventory): refused before anything changed, saying how to go on.
    refused, recap, _changed = run(sandbox, [], env=env)
    assert refused.returncode != 0 and sandbox.revision() == 4
    lock_failure = [f for f in failed_results(refused) if 'lock' in f['task'].lower()]
    assert lock_failure, refused.stdout[-3000:]
    assert 'psycopg' in lock_failure[0]['msg'] and '-e hotelbot_lock_backend=dynamodb' in lock_failure[0]['msg']

    # An ECS inventory (the platform's default backend): rolled back, the lock taken and given back in DynamoDB.
    # The bot's own health needs its database, so verification fails - rightly - while PostgreSQL is down.
    rolled, recap, changed = run(sandbox, ['-i', ecs_inventory], env=env)
    assert sandbox.revision() == 3 and sandbox.serving_revision() == 3, rolled.stdout[-3000:]
    failed = [f['task'] for f in failed_results(rolled)]
    assert 'hotelbot.ops.verify : Show the verification summary, or fail when the verification failed' in failed
    assert not any('lock' in name.lower() for name in failed + changed), (failed, changed)
    assert items(sandbox, 'lease') == [] and not postgres_reachable(sandbox)

    # The incident is over; the same rollback again, still without psycopg: nothing to do, and the recap
    # says so (the lock taken and released is no change).
    start_postgres(sandbox)
    again, recap, changed = run(sandbox, ['-i', ecs_inventory], env=env)
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap['changed'] == 0 and changed == [] and recap['ok'] > 0
    assert sandbox.revision() == 3 and items(sandbox, 'lease') == []


def test_postgres_lock_with_postgresql_down_names_the_switch(postgres_down):
    sandbox = postgres_down
    sandbox.deploy(4)
    refused, _recap, _changed = run(sandbox, [])
    assert refused.returncode != 0 and sandbox.revision() == 4
    [failure] = [f for f in failed_results(refused) if 'lock' in f['task'].lower()]
    assert failure['msg'].startswith('cannot connect to PostgreSQL'), failure['msg']
    assert 'use backend=dynamodb (in the playbooks: -e hotelbot_lock_backend=dynamodb' in failure['msg']


def test_idempotent_rerun_with_the_postgres_lock_reports_changed_0(lock_table):
    sandbox = lock_table
    first, recap, _changed = run(sandbox, [])  # on the last stable release already; creates the lease table
    assert first.returncode == 0, first.stdout[-3000:]
    second, recap, changed = run(sandbox, [])
    assert second.returncode == 0 and recap['changed'] == 0 and changed == [], (recap, changed)
    assert sandbox.locks() == [] and sandbox.revision() == 3


def documented_break_command():
    """The command docs/locking.md gives for a dead run's lease (the line in its 'A dead run's lease' block)."""
    text = DOCS.read_text()
    section = text[text.index("## A dead run's lease"):]
    block = re.search(r'```sh\n(.*?)```', section, re.S).group(1)
    [line] = [ln for ln in block.splitlines() if ln.startswith('ansible-playbook hotelbot.ops.rollback ')]
    return line.split('#', 1)[0].strip()


def dead_lease_args(command, inventory, owner):
    """The documented command's arguments with its placeholders filled in, nothing else changed."""
    assert "<your inventory>" in command and "'<owner>'" in command, command
    words = command.replace('<your inventory>', inventory).replace("'<owner>'", owner).split()
    assert words[:2] == ['ansible-playbook', 'hotelbot.ops.rollback']
    return words[1], words[2:]


def test_documented_break_command_releases_a_dead_dynamodb_lease(lock_table, ecs_inventory):
    sandbox = lock_table
    ghost = 'rollback:ghost@ci/20261201T010203Z/4711'
    now = time.time()
    dynamodb(sandbox).put_item(TableName=TABLE, Item={
        'name': {'S': 'ecs/%s/%s' % (sandbox.cluster, sandbox.service)}, 'owner': {'S': ghost}, 'kind': {'S': 'lease'},
        'purpose': {'S': 'rollback app'}, 'acquired_at': {'N': '%.3f' % now}, 'renewed_at': {'N': '%.3f' % now},
        'expires_at': {'N': '%.3f' % (now + 3600)}})
    playbook, args = dead_lease_args(documented_break_command(), ecs_inventory, ghost)
    completed, recap, changed = run(sandbox, args, playbook=playbook)
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert items(sandbox, 'lease') == []
    [event] = items(sandbox, 'event')
    assert event['owner']['S'] == ghost and event['event']['S'] == 'broken'
    assert event['broken_by']['S'].startswith('rollback:') and recap['changed'] >= 1


def test_documented_break_command_releases_a_dead_postgres_lease(lock_table):
    sandbox = lock_table
    ghost = 'rollback:ghost@ci/20261201T010203Z/4712'
    name = 'ecs/%s/%s' % (sandbox.cluster, sandbox.service)
    with sandbox.admin() as conn:  # the maintenance database, where the sandbox inventory keeps the leases
        conn.execute('CREATE TABLE IF NOT EXISTS public.hotelbot_release_locks (name text PRIMARY KEY, owner text NOT NULL, '
                     "purpose text NOT NULL DEFAULT '', acquired_at timestamptz NOT NULL, renewed_at timestamptz NOT NULL, "
                     'expires_at timestamptz NOT NULL, host text, os_user text, db_user text NOT NULL DEFAULT current_user, '
                     'client_addr inet)')
        conn.execute("INSERT INTO public.hotelbot_release_locks (name, owner, acquired_at, renewed_at, expires_at) "
                     "VALUES (%s, %s, now(), now(), now() + interval '1 hour')", (name, ghost))
    playbook, args = dead_lease_args(documented_break_command(), os.path.join(ROOT, 'inventory', 'sandbox'), ghost)
    completed, _recap, _changed = run(sandbox, args, playbook=playbook)
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert sandbox.locks() == []
    with sandbox.admin() as conn:
        events = conn.execute('SELECT owner, event, broken_by FROM public.hotelbot_release_locks_events WHERE owner = %s',
                              (ghost,)).fetchall()
    assert [(owner, event) for owner, event, _by in events] == [(ghost, 'broken')] and events[0][2].startswith('rollback:')
