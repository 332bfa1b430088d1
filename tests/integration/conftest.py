"""Integration fixtures: one real sandbox per test session, and helpers to drive it.

Tests run the real playbooks with ansible-playbook and look at platform state through
the same APIs an operator would (boto3 against the sandbox's moto, HTTP to the bot).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import boto3
import pytest

import psycopg

from sandbox import control, postgres as sandbox_postgres, state as sandbox_state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
FAMILY = 'hotel-voice-bot'
LEDGER = ('hotelbot.ops/last-stable', 'hotelbot.ops/rollback', 'hotelbot.ops/desired-count-before-scale')
FLY_SEED_VERSION = '1.3.0-bad'  # the Fly double's seed: the Machines run release v5's image


class Sandbox:
    """A running sandbox: its state, secrets, an ECS client and playbook runner."""

    def __init__(self, directory):
        self.started = time.monotonic()
        self.dir = directory
        self.state = sandbox_state.load(directory)
        self.secrets = sandbox_state.load_secrets(directory)
        self.cluster = self.state['ecs']['cluster']
        self.service = self.state['ecs']['service']
        self.ecs = boto3.client(
            'ecs', region_name=self.state['region'], endpoint_url=self.state['aws']['endpoint_url'],
            aws_access_key_id=self.state['aws']['access_key_id'],
            aws_secret_access_key=self.secrets['aws_secret_access_key'])

    # ---- reading platform state
    def describe(self, service=None):
        answer = self.ecs.describe_services(cluster=self.cluster, services=[service or self.service], include=['TAGS'])
        return answer['services'][0]

    def metrics_history(self, seconds=25):
        """Wait until Prometheus has `seconds` of the bots' traffic (the gate judges a window;
        a sandbox younger than that is, rightly, inconclusive)."""
        time.sleep(max(0.0, self.started + seconds - time.monotonic()))

    def admin(self, database='postgres'):
        pg = self.state['postgres']
        return psycopg.connect(host=pg['socket_dir'], port=pg['port'], user=pg['superuser'], dbname=database,
                               autocommit=True)

    def locks(self):
        """Rows of the release lock table (in the maintenance database, as the inventory says)."""
        with self.admin() as conn:
            if conn.execute("SELECT to_regclass('public.hotelbot_release_locks')").fetchone()[0] is None:
                return []
            return conn.execute('SELECT name, owner, purpose FROM public.hotelbot_release_locks').fetchall()

    def clear_locks(self):
        with self.admin() as conn:
            conn.execute('DROP TABLE IF EXISTS public.hotelbot_release_locks')

    def revision(self):
        return int(self.describe()['taskDefinition'].rsplit(':', 1)[1])

    def tags(self, arn=None):
        arn = arn or self.describe()['serviceArn']
        return {t['key']: t['value'] for t in self.ecs.list_tags_for_resource(resourceArn=arn).get('tags', [])}

    def td_arn(self, revision):
        return self.ecs.describe_task_definition(taskDefinition='%s:%d' % (FAMILY, revision))['taskDefinition']['taskDefinitionArn']

    def bot(self, path='/api/health'):
        """(status, json body) from the bot."""
        try:
            with urllib.request.urlopen(self.state['bot']['url'] + path, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    def calls(self):
        return control.calls(self.dir)

    # ---- the Fly side: the Fly double (its control endpoints and plain HTTP to its API) and its bots
    def fly_state(self):
        """The double's model: apps, machines (image, state, instance, lease, metadata), releases, spec_errors."""
        return control.fly_state(self.dir)

    def fly_serving(self, app=None):
        return control.fly_serving(app or self.state['fly']['app'], self.dir)

    def fly_faults(self, **faults):
        return control.fly_faults(self.dir, **faults)

    def fly_lease(self, machine_id, **lease):
        return control.fly_lease(machine_id, dir=self.dir, **lease)

    def fly_settings(self, **settings):
        return control.fly_settings(self.dir, **settings)

    def fly_calls(self):
        return control.fly_calls(self.dir)

    def fly_reset(self, **seed):
        return control.fly_reset(self.dir, **seed)

    def fly_api(self, method, path, body=None, token=None, timeout=70):
        """(status, json body) of a plain HTTP call to the double's Machines API (`/v1/...`) or GraphQL
        (`/graphql`), as any client would make it; the sandbox's token unless `token` is given."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.state['fly']['api_url'] + path, data=data, method=method)
        request.add_header('Authorization', self.secrets['fly_api_token'] if token is None else token)
        if data is not None:
            request.add_header('Content-Type', 'application/json')
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        return status, json.loads(raw) if raw else None

    def fly_bot(self, path='/api/health', staging=False):
        """(status, json body) from the bot that follows the Fly app (or its staging app)."""
        url = self.state['bot_fly_staging' if staging else 'bot_fly']['url'] + path
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    def wait_fly_bot_version(self, version, staging=False, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.fly_bot(staging=staging)
            if body.get('version') == version:
                return status, body
            time.sleep(0.1)
        raise AssertionError('the Fly bot did not answer with version %s: %r' % (version, self.fly_bot(staging=staging)))

    # ---- driving it
    def deploy(self, revision, deploy_seconds=0.2, wait=True):
        """Put the service on a revision the way a release pipeline would (boto3)."""
        control.set_deploy_seconds(deploy_seconds, self.dir)
        self.ecs.update_service(cluster=self.cluster, service=self.service, taskDefinition=self.td_arn(revision))
        if wait:
            self.wait_settled(revision)
            self.wait_bot_version(self.version_of(revision))

    def version_of(self, revision):
        """The version the bot answers with on a revision: its image tag."""
        return self.state['ecs']['images'][str(revision)].rsplit(':', 1)[1]

    def wait_settled(self, revision, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            svc = self.describe()
            deployments = svc['deployments']
            if (len(deployments) == 1 and deployments[0]['rolloutState'] == 'COMPLETED'
                    and svc['runningCount'] == svc['desiredCount'] and self.revision() == revision):
                # The bot follows the platform a poll later.
                if self.serving_revision() == revision:
                    return svc
            time.sleep(0.1)
        raise AssertionError('service did not settle on revision %d: %r' % (revision, self.describe()['deployments']))

    def serving_revision(self):
        return control.serving(dir=self.dir)['revision']

    def wait_bot_version(self, version, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.bot()
            if body.get('version') == version:
                return status, body
            time.sleep(0.1)
        raise AssertionError('bot did not answer with version %s: %r' % (version, self.bot()))

    def reset(self):
        """The seeded situation: revision 3 running (production and staging), production with 3
        tasks, marked stable, no other ledger, no revisions newer than the seeded 5, no release locks;
        the Fly double back to its seed (its apps' Machines on v5, 1.3.0-bad)."""
        control.aws_up(self.dir)
        control.set_deploy_seconds(0.2, self.dir)
        for arn in self.ecs.list_task_definitions(familyPrefix=FAMILY, status='ACTIVE')['taskDefinitionArns']:
            if arn.rsplit(':', 1)[0].endswith('/' + FAMILY) and int(arn.rsplit(':', 1)[1]) > 5:
                self.ecs.deregister_task_definition(taskDefinition=arn)
        staging = self.describe(self.state['ecs']['staging_service'])
        if not staging['taskDefinition'].endswith(':3'):
            self.ecs.update_service(cluster=self.cluster, service=staging['serviceName'], taskDefinition=self.td_arn(3))
        self.ecs.untag_resource(resourceArn=staging['serviceArn'], tagKeys=list(LEDGER))
        self.ecs.tag_resource(resourceArn=staging['serviceArn'], tags=[dict(key=LEDGER[0], value=FAMILY + ':3')])
        self.clear_locks()
        svc = self.describe()
        if self.revision() != 3 or svc['desiredCount'] != 3:
            self.ecs.update_service(cluster=self.cluster, service=self.service,
                                    taskDefinition=self.td_arn(3), desiredCount=3)
        self.wait_settled(3)
        self.ecs.untag_resource(resourceArn=svc['serviceArn'], tagKeys=list(LEDGER))
        self.ecs.tag_resource(resourceArn=svc['serviceArn'], tags=[dict(key=LEDGER[0], value=FAMILY + ':3')])
        self.wait_bot_version('1.2.0')
        control.reset_calls(self.dir)
        # Fly: the seed again (Machines on v5's bad image, no leases, no ledger, no faults).
        self.fly_reset()
        self.wait_fly_bot_version(FLY_SEED_VERSION)
        self.wait_fly_bot_version(FLY_SEED_VERSION, staging=True)

    def reset_database(self):
        """The seeded bot_messages (1000 rows) and no restore leftovers, whatever a test did."""
        pg = self.state['postgres']
        with psycopg.connect(host=pg['socket_dir'], port=pg['port'], user=pg['superuser'], dbname='postgres',
                             autocommit=True) as conn:
            leftovers = [r[0] for r in conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (pg['database'] + '__',))]
            for name in leftovers:
                conn.execute('DROP DATABASE "%s" WITH (FORCE)' % name.replace('"', '""'))
        with psycopg.connect(host=pg['socket_dir'], port=pg['port'], user=pg['superuser'], dbname=pg['database'],
                             autocommit=True) as conn:
            conn.execute('TRUNCATE public.bot_messages RESTART IDENTITY')
            conn.execute(sandbox_postgres.SEED)
            conn.execute('ANALYZE public.bot_messages')  # row estimates as after a fresh seed

    def playbook(self, *args, playbook='rollback.yml', timeout=300, **kwargs):
        """Run a playbook against this sandbox; returns CompletedProcess (text) with .failures."""
        failures = os.path.join(self.dir, 'failures.jsonl')
        if os.path.exists(failures):
            os.unlink(failures)
        env = dict(os.environ, HOTELBOT_SANDBOX_DIR=str(self.dir), ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'),
                   PATH=BIN + os.pathsep + os.environ.get('PATH', ''), ANSIBLE_NOCOLOR='1',
                   ANSIBLE_CALLBACK_PLUGINS=os.path.join(ROOT, 'tests', 'integration', 'callback_plugins'),
                   ANSIBLE_CALLBACKS_ENABLED='failures_to_file', HOTELBOT_FAILURES_FILE=failures)
        cmd = [os.path.join(BIN, 'ansible-playbook'), playbook] + list(args)
        completed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **kwargs, check=False)
        completed.failures = []
        if os.path.exists(failures):
            with open(failures) as handle:
                completed.failures = [json.loads(line) for line in handle if line.strip()]
        return completed

    def adhoc(self, module, args):
        """Run one module ad hoc on the sandbox inventory's hosts."""
        env = dict(os.environ, HOTELBOT_SANDBOX_DIR=str(self.dir), ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'),
                   PATH=BIN + os.pathsep + os.environ.get('PATH', ''), ANSIBLE_NOCOLOR='1')
        group_vars = 'region={{ hotelbot_aws_region }} endpoint_url={{ hotelbot_aws_endpoint_url }} ' \
                     'access_key={{ hotelbot_aws_access_key }} secret_key={{ hotelbot_aws_secret_key }} '
        cmd = [os.path.join(BIN, 'ansible'), 'hotelbot', '-m', module, '-a', group_vars + args]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)

    def fly_adhoc(self, module, args):
        """Run one module ad hoc on the sandbox's Fly host (sandbox_fly), with the Fly API options the
        inventory gives (templates in argv, so the token never is)."""
        env = dict(os.environ, HOTELBOT_SANDBOX_DIR=str(self.dir), ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'),
                   PATH=BIN + os.pathsep + os.environ.get('PATH', ''), ANSIBLE_NOCOLOR='1')
        api = 'api_url={{ hotelbot_fly_api_url }} graphql_url={{ hotelbot_fly_graphql_url }} ' \
              'api_token={{ hotelbot_fly_api_token }} '
        cmd = [os.path.join(BIN, 'ansible'), 'hotelbot_fly', '-m', module, '-a', api + args]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)

    def popen_playbook(self, *args, playbook='rollback.yml'):
        env = dict(os.environ, HOTELBOT_SANDBOX_DIR=str(self.dir), ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'),
                   PATH=BIN + os.pathsep + os.environ.get('PATH', ''), ANSIBLE_NOCOLOR='1')
        return subprocess.Popen([os.path.join(BIN, 'ansible-playbook'), playbook] + list(args), cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def failed_results(completed):
    """The failed task results of a playbook run (recorded by the failures_to_file callback)."""
    return [f for f in completed.failures if not f.get('ignore_errors')]


@pytest.fixture(scope='session')
def sandbox():
    # Not pytest's tmp_path: its 0700 parents keep the postgres OS user out.
    directory = tempfile.mkdtemp(prefix='hotelbot-sandbox-')
    os.chmod(directory, 0o755)
    env = dict(os.environ, HOTELBOT_SANDBOX_DIR=str(directory))
    up = subprocess.run([sys.executable, '-m', 'sandbox', 'up'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
    if up.returncode != 0:
        subprocess.run([sys.executable, '-m', 'sandbox', 'down'], cwd=ROOT, env=env, timeout=60, check=False)
        pytest.fail('sandbox up failed:\n%s\n%s' % (up.stdout, up.stderr))
    try:
        yield Sandbox(directory)
    finally:
        subprocess.run([sys.executable, '-m', 'sandbox', 'down'], cwd=ROOT, env=env,
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def fresh(sandbox):
    """The sandbox reset to its seeded release and data before the test, and its data after."""
    sandbox.reset()
    sandbox.reset_database()
    yield sandbox
    sandbox.reset_database()
