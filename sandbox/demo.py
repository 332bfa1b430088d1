"""`make demo`: a whole incident on the local sandbox, end to end.

1. start the sandbox (real PostgreSQL and Prometheus, moto + ECS controller, two bots -
   production and staging - each with guest traffic)
2. a hot-patch goes out with `ansible-playbook hotpatch.yml`: image 1.2.1-flaky, whose
   German FAQ is broken. It passes staging and the production smoke tests (health, English
   FAQ); then the guests' traffic pushes the error ratio past 5%, the Prometheus gate sees it
   sustained, and the play rolls production and staging back to the last stable release by
   itself, verifies, releases its lock and fails with a summary
3. later, someone ships the known-bad revision 4 by hand; the every-minute
   `auto_rollback.yml` finds the bot unhealthy and rolls it back
4. on Fly.io (the sandbox's Fly double, host sandbox_fly): release v5 serves and fails; the same
   `ansible-playbook rollback.yml` (-e rollback_hosts=hotelbot_fly) puts every Machine back on
   v3's image, one at a time under a lease, waits for each to start and pass its checks,
   verifies the bot and marks v3 stable
5. the end state is checked: revision 3 serving and healthy, the bad releases not marked
   stable, no lock left; every Fly Machine on v3 with no lease left; then the sandbox stops

The sandbox compresses the runbook's "5% for 10 minutes" to 5% for 15 s (inventory
hotelbot_gate_*), so the incident fits in about two minutes.
"""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from sandbox import control, state as sandbox_state

ROOT = sandbox_state.REPO_ROOT
BIN = os.path.dirname(sys.executable)
HISTORY_SECONDS = 20   # the gate judges a 15 s window: let Prometheus collect that much first


def say(text):
    print('\n\033[1m==> %s\033[0m' % text, flush=True)


def health(url):
    try:
        with urllib.request.urlopen(url + '/api/health', timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def error_ratio(state):
    """The production bot's 5xx ratio over the last 10 s, from Prometheus."""
    job = state['prometheus']['job']
    query = ('sum(rate(http_requests_total{job="%s",status=~"5.."}[10s]) or vector(0)) / '
             'sum(rate(http_requests_total{job="%s"}[10s]))' % (job, job))
    url = state['prometheus']['url'] + '/api/v1/query?' + urllib.parse.urlencode({'query': query})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            result = json.load(response)['data']['result']
        return float(result[0]['value'][1]) if result else float('nan')
    except (OSError, ValueError, KeyError, IndexError):
        return float('nan')


def ansible_env():
    return dict(os.environ, ANSIBLE_CONFIG=str(ROOT / 'ansible.cfg'), PATH=BIN + os.pathsep + os.environ['PATH'])


def run(cmd, quiet=False):
    print('$ ' + ' '.join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, env=ansible_env(), check=False, capture_output=quiet, text=True)
    if quiet and done.returncode:
        print(done.stdout + done.stderr)
    return done.returncode


def show(state, label):
    status, body = health(state['bot']['url'])
    serving = control.serving()
    print('%s: ECS runs %s (%s), bot /api/health HTTP %d version %s, error ratio over the last 10 s %.1f%%' % (
        label, serving['taskDefinition'].rsplit('/', 1)[1], serving['image'].rsplit('/', 1)[1], status,
        body.get('version'), 100 * error_ratio(state)))
    return status, serving


def check_end_state(state):
    """Revision 3 serving and healthy, no bad release marked stable, no lock left."""
    import boto3
    import psycopg
    secrets = sandbox_state.load_secrets()
    ecs = boto3.client('ecs', region_name=state['region'], endpoint_url=state['aws']['endpoint_url'],
                       aws_access_key_id=state['aws']['access_key_id'],
                       aws_secret_access_key=secrets['aws_secret_access_key'])
    problems = []
    for service in (state['ecs']['service'], state['ecs']['staging_service']):
        svc = ecs.describe_services(cluster=state['ecs']['cluster'], services=[service], include=['TAGS'])['services'][0]
        tags = dict((t['key'], t['value']) for t in svc.get('tags', []))
        if not svc['taskDefinition'].endswith(':3'):
            problems.append('%s runs %s' % (service, svc['taskDefinition']))
        if tags.get('hotelbot.ops/last-stable') != '%s:3' % state['ecs']['family']:
            problems.append('%s ledger names %s as stable' % (service, tags.get('hotelbot.ops/last-stable')))
    pg = state['postgres']
    with psycopg.connect(host=pg['socket_dir'], port=pg['port'], user=pg['superuser'], dbname='postgres') as conn:
        if conn.execute("SELECT to_regclass('public.hotelbot_release_locks')").fetchone()[0]:
            held = conn.execute('SELECT name, owner FROM public.hotelbot_release_locks').fetchall()
            if held:
                problems.append('locks still held: %s' % held)
    if health(state['bot']['url'])[0] != 200:
        problems.append('the bot is not healthy')
    return problems


def show_fly(state, label):
    status, body = health(state['bot_fly']['url'])
    machines = control.fly_state()['apps'][state['fly']['app']]['machines']
    print('%s: Fly Machines %s, the Fly bot /api/health HTTP %d version %s' % (
        label, ', '.join('%s %s %s' % (mid, m['image'].rsplit(':', 1)[1], m['state']) for mid, m in sorted(machines.items())),
        status, body.get('version')))


def check_fly_end_state(state):
    """Every Machine of the Fly app on v3's image, started, checks passing, marked stable; no lease left."""
    problems = []
    v3 = next(r['imageRef'] for r in control.fly_state()['apps'][state['fly']['app']]['releases'] if r['version'] == 3)
    for machine_id, machine in sorted(control.fly_state()['apps'][state['fly']['app']]['machines'].items()):
        mark = json.loads(machine['metadata'].get('hotelbot.ops/last-stable') or '{}')
        if machine['image'] != v3 or machine['state'] != 'started' or machine['checks'] != 'passing':
            problems.append('Fly Machine %s runs %s (%s, checks %s)'
                            % (machine_id, machine['image'], machine['state'], machine['checks']))
        if mark.get('image') != v3:
            problems.append('Fly Machine %s ledger names %s as stable' % (machine_id, mark.get('image')))
        if machine['lease']:
            problems.append('Fly Machine %s still leased by %s' % (machine_id, machine['lease']['owner']))
    if health(state['bot_fly']['url'])[0] != 200:
        problems.append('the Fly bot is not healthy')
    return problems


def main():
    started = time.monotonic()
    say('Starting the local sandbox')
    if subprocess.run([sys.executable, '-m', 'sandbox', 'up'], cwd=ROOT, check=False).returncode:
        sys.exit('sandbox did not start')
    failed = None
    try:
        state = sandbox_state.load()
        control.set_deploy_seconds(1.0)
        time.sleep(HISTORY_SECONDS)   # guest traffic builds the history the gate needs
        show(state, 'before')

        flaky = state['ecs']['images']['3'].rsplit(':', 1)[0] + ':1.2.1-flaky'
        say('CI ships hot-patch CHG-1122 (%s): staging, production, then the gate watches' % flaky)
        hotpatch_started = time.monotonic()
        code = run([os.path.join(BIN, 'ansible-playbook'), 'hotpatch.yml', '-e', 'hotpatch_change_id=CHG-1122',
                    '-e', 'hotpatch_image=' + flaky, '-e', 'hotpatch_tests_passed=true'])
        hotpatch_took = time.monotonic() - hotpatch_started
        print('hotpatch.yml exited %d after %.1fs (non-zero: the hot-patch did not stick, as it should not)'
              % (code, hotpatch_took))
        status, serving = show(state, 'after the hot-patch')
        if code == 0 or not serving['taskDefinition'].endswith(':3') or status != 200:
            failed = 'the bad hot-patch was not rolled back to revision 3'
            return

        say('Later, someone ships the known-bad hotel-voice-bot:%d by hand' % state['ecs']['bad_revision'])
        code = run([os.path.join(BIN, 'ansible'), 'hotelbot', '-m', 'hotelbot.ops.ecs_release', '-a',
                    'region={{ hotelbot_aws_region }} endpoint_url={{ hotelbot_aws_endpoint_url }} '
                    'access_key={{ hotelbot_aws_access_key }} secret_key={{ hotelbot_aws_secret_key }} '
                    'cluster={{ hotelbot_ecs_cluster }} service={{ hotelbot_ecs_service }} revision=%d'
                    % state['ecs']['bad_revision']], quiet=True)
        if code:
            failed = 'could not release the bad revision'
            return
        show(state, 'the incident')

        say('The every-minute job runs: ansible-playbook playbooks/auto_rollback.yml')
        auto_started = time.monotonic()
        code = run([os.path.join(BIN, 'ansible-playbook'), 'playbooks/auto_rollback.yml'])
        auto_took = time.monotonic() - auto_started
        show(state, 'after auto_rollback')
        if code:
            failed = 'auto_rollback.yml failed (exit %d)' % code
            return

        fly = control.fly_state()['apps'][state['fly']['app']]['machines']
        say('On Fly.io, release v5 (%s) serves on %d Machines and fails: ansible-playbook rollback.yml, '
            'host sandbox_fly' % (sorted({m['image'] for m in fly.values()})[0].rsplit('/', 1)[1], len(fly)))
        show_fly(state, 'before')
        fly_started = time.monotonic()
        code = run([os.path.join(BIN, 'ansible-playbook'), 'rollback.yml', '-e', 'rollback_hosts=hotelbot_fly',
                    '-e', 'rollback_target=previous'])
        fly_took = time.monotonic() - fly_started
        show_fly(state, 'after rollback.yml')
        if code:
            failed = 'rollback.yml on Fly failed (exit %d)' % code
            return

        say('End state')
        problems = check_end_state(state) + check_fly_end_state(state)
        if problems:
            failed = '; '.join(problems)
            return
        print('revision 3 serves healthy on production and staging; the bad releases are not marked stable; '
              'no lock is held')
        print('on Fly, every Machine runs v3 and passes its checks, v3 is marked stable, no lease is left')
        print('hotpatch.yml (ship, watch, roll back) took %.1fs, auto_rollback.yml %.1fs, rollback.yml on Fly %.1fs; '
              'the whole demo %.1fs' % (hotpatch_took, auto_took, fly_took, time.monotonic() - started))
    finally:
        say('Stopping the sandbox')
        subprocess.run([sys.executable, '-m', 'sandbox', 'down'], cwd=ROOT, check=False)
        if failed:
            sys.exit('demo failed: ' + failed)


if __name__ == '__main__':
    main()
