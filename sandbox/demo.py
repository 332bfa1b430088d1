"""`make demo`: a whole incident on the local sandbox, end to end.

1. start the sandbox (real PostgreSQL and Prometheus, moto + ECS controller, the bot)
2. a bad release (hotel-voice-bot:4, image 1.3.0-bad) goes out; the bot's health fails
3. `ansible-playbook rollback.yml`: preflight, rollback, wait, verify, mark stable
4. the bot answers healthy again on the last stable release (hotel-voice-bot:3)
5. stop the sandbox
"""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from sandbox import control, state as sandbox_state

ROOT = sandbox_state.REPO_ROOT
BIN = os.path.dirname(sys.executable)


def say(text):
    print('\n\033[1m==> %s\033[0m' % text, flush=True)


def health(url):
    try:
        with urllib.request.urlopen(url + '/api/health', timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def ansible_env():
    return dict(os.environ, ANSIBLE_CONFIG=str(ROOT / 'ansible.cfg'), PATH=BIN + os.pathsep + os.environ['PATH'])


def run(cmd, quiet=False):
    print('$ ' + ' '.join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, env=ansible_env(), check=False, capture_output=quiet, text=True)
    if quiet and done.returncode:
        print(done.stdout + done.stderr)
    return done.returncode


def main():
    started = time.monotonic()
    say('Starting the local sandbox')
    if subprocess.run([sys.executable, '-m', 'sandbox', 'up'], cwd=ROOT, check=False).returncode:
        sys.exit('sandbox did not start')
    try:
        state = sandbox_state.load()
        bot = state['bot']['url']
        status, body = health(bot)
        print('bot /api/health: HTTP %d %s' % (status, body))

        say('A bad release goes out: hotel-voice-bot:%d' % state['ecs']['bad_revision'])
        control.set_deploy_seconds(2.0)
        code = run([os.path.join(BIN, 'ansible'), 'hotelbot', '-m', 'hotelbot.ops.ecs_release', '-a',
                    'region={{ hotelbot_aws_region }} endpoint_url={{ hotelbot_aws_endpoint_url }} '
                    'access_key={{ hotelbot_aws_access_key }} secret_key={{ hotelbot_aws_secret_key }} '
                    'cluster={{ hotelbot_ecs_cluster }} service={{ hotelbot_ecs_service }} revision=%d'
                    % state['ecs']['bad_revision']], quiet=True)
        if code:
            sys.exit('could not release the bad revision')
        serving = control.serving()
        print('ECS now runs %s (%s), rollout %s' % (
            serving['taskDefinition'].rsplit('/', 1)[1], serving['image'], serving['rolloutState']))
        time.sleep(0.5)
        status, body = health(bot)
        print('bot /api/health: HTTP %d %s   <- the incident' % (status, body))

        say('On call runs: ansible-playbook rollback.yml')
        rollback_started = time.monotonic()
        code = run([os.path.join(BIN, 'ansible-playbook'), 'rollback.yml'])
        rollback_took = time.monotonic() - rollback_started
        if code:
            sys.exit('rollback.yml failed (exit %d)' % code)

        say('After the rollback')
        status, body = health(bot)
        serving = control.serving()
        print('bot /api/health: HTTP %d %s' % (status, body))
        print('ECS runs %s (%s), %d/%d tasks, rollout %s' % (
            serving['taskDefinition'].rsplit('/', 1)[1], serving['image'], serving['runningCount'],
            serving['desiredCount'], serving['rolloutState']))
        if status != 200:
            sys.exit('the bot is not healthy after the rollback')
        print('rollback.yml took %.1fs; the whole demo %.1fs' % (rollback_took, time.monotonic() - started))
    finally:
        say('Stopping the sandbox')
        subprocess.run([sys.executable, '-m', 'sandbox', 'down'], cwd=ROOT, check=False)


if __name__ == '__main__':
    main()
