"""The sandbox's Fly.io side: the Fly double started by `python -m sandbox up`, the bots that
follow its apps' Machines, their Prometheus jobs, and `down` stopping all of it.

The Machines are moved with plain HTTP to the double's Machines API (lease-free updates, as
`fly machine update --image` makes them), so these tests depend on no module of ours.
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from sandbox import procs, state as sandbox_state

ROOT = Path(__file__).resolve().parents[2]
RELEASES = '''query($app: String!) { app(name: $app) { releasesUnprocessed(first: 10) {
  nodes { version status stable imageRef } } } }'''
FLY_PROCESSES = ('fly', 'bot_fly', 'bot_fly_staging')


def release_image(sandbox, version, app=None):
    """A Fly release's image, read through the double's GraphQL as fly_release_info reads it."""
    status, body = sandbox.fly_api('POST', '/graphql', {'query': RELEASES, 'variables': {'app': app or sandbox.state['fly']['app']}})
    assert status == 200 and 'errors' not in body, body
    return next(node['imageRef'] for node in body['data']['app']['releasesUnprocessed']['nodes'] if node['version'] == version)


def machines(sandbox, app):
    status, body = sandbox.fly_api('GET', '/v1/apps/%s/machines' % app)
    assert status == 200, body
    return body


def switch_image(sandbox, app, image):
    """Update every Machine to `image` (all else in its config kept) and wait until each is started."""
    for machine in machines(sandbox, app):
        config = dict(machine['config'], image=image)
        status, updated = sandbox.fly_api('POST', '/v1/apps/%s/machines/%s' % (app, machine['id']), {'config': config})
        assert status == 200, updated
        query = urllib.parse.urlencode({'instance_id': updated['instance_id'], 'state': 'started', 'timeout': 30})
        status, waited = sandbox.fly_api('GET', '/v1/apps/%s/machines/%s/wait?%s' % (app, machine['id'], query))
        assert status == 200, waited


def images_of(sandbox, app):
    """{machine id: image} in the double's own model."""
    return {machine_id: machine['image'] for machine_id, machine in sandbox.fly_state()['apps'][app]['machines'].items()}


def prometheus_series(sandbox, selector):
    url = sandbox.state['prometheus']['url'] + '/api/v1/series?' + urllib.parse.urlencode({'match[]': selector})
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)['data']


def test_fly_bot_serves_the_seeded_bad_release(fresh):
    app = fresh.state['fly']['app']
    assert {m['config']['image'] for m in machines(fresh, app)} == {release_image(fresh, 5)}
    assert release_image(fresh, 5).endswith(':1.3.0-bad')
    status, health = fresh.fly_bot()
    assert (status, health['version'], health['status'], health['app']) == (503, '1.3.0-bad', 'unhealthy', app)
    faqs = [fresh.fly_bot('/api/faqs?language=en')[0] for _request in range(10)]
    assert faqs.count(500) == 3 and faqs.count(200) == 7  # the bad release fails 3 of every 10
    staging = fresh.fly_bot(staging=True)
    assert (staging[0], staging[1]['version'], staging[1]['app']) == (503, '1.3.0-bad', fresh.state['fly']['staging_app'])
    assert fresh.fly_state()['spec_errors'] == []


def test_fly_bot_follows_the_machines_to_v3(fresh):
    app, v3 = fresh.state['fly']['app'], release_image(fresh, 3)
    assert v3.endswith(':1.2.0')
    fresh.fly_settings(start_seconds=0.3)
    try:
        switch_image(fresh, app, v3)
        assert set(images_of(fresh, app).values()) == {v3}
        assert fresh.fly_serving(app)['image'] == v3
        status, health = fresh.wait_fly_bot_version('1.2.0')
        assert (status, health['status'], health['image']) == (200, 'healthy', v3)
        assert [fresh.fly_bot('/api/faqs?language=en')[0] for _request in range(10)] == [200] * 10
        # The staging app and its bot did not move.
        assert fresh.fly_bot(staging=True)[1]['version'] == '1.3.0-bad'
        assert fresh.fly_state()['spec_errors'] == []
    finally:
        fresh.fly_settings(start_seconds=2)
        fresh.fly_reset()


def test_fresh_puts_the_fly_double_back_on_its_seed(fresh):
    app, v3 = fresh.state['fly']['app'], release_image(fresh, 3)
    first = machines(fresh, app)[0]['id']
    fresh.fly_settings(start_seconds=0.2)
    switch_image(fresh, app, v3)
    fresh.fly_lease(first, owner='someone@example.com')
    fresh.wait_fly_bot_version('1.2.0')
    fresh.reset()  # what the `fresh` fixture does before each test
    model = fresh.fly_state()['apps'][app]['machines']
    assert {m['image'] for m in model.values()} == {release_image(fresh, 5)}
    assert [m['lease'] for m in model.values()] == [None] * len(model)
    assert fresh.fly_state()['settings']['start_seconds'] == 2
    assert fresh.fly_bot()[1]['version'] == '1.3.0-bad'


def test_fly_faults_reach_the_api_not_the_bot(fresh):
    app = fresh.state['fly']['app']
    fresh.fly_faults(status_burst={'status': 503, 'count': 1, 'retry_after': 1})
    assert fresh.fly_api('GET', '/v1/apps/%s/machines' % app)[0] == 503
    assert fresh.fly_api('GET', '/v1/apps/%s/machines' % app)[0] == 200
    fresh.fly_faults(down=True)
    try:
        with pytest.raises(OSError):  # the connection is dropped, as by an unreachable API
            fresh.fly_api('GET', '/v1/apps/%s/machines' % app, timeout=5)
        assert fresh.fly_bot()[1]['version'] == '1.3.0-bad'  # the Machines keep serving
    finally:
        fresh.fly_faults(down=False)
    assert fresh.fly_api('GET', '/v1/apps/%s/machines' % app)[0] == 200


def test_fly_api_refuses_another_token(sandbox):
    app = sandbox.state['fly']['app']
    assert sandbox.fly_api('GET', '/v1/apps/%s/machines' % app, token='Bearer not-the-token')[0] == 401
    assert sandbox.fly_api('GET', '/v1/apps/%s/machines' % app)[0] == 200


def test_prometheus_scrapes_the_fly_bots(sandbox):
    prom = sandbox.state['prometheus']
    assert (prom['fly_job'], prom['fly_staging_job']) == ('hotel-voice-bot-fly', 'hotel-voice-bot-fly-staging')
    deadline = time.monotonic() + 15
    while True:
        found = {job: prometheus_series(sandbox, 'http_requests_total{job="%s"}' % job)
                 for job in (prom['fly_job'], prom['fly_staging_job'])}
        if all(found.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for job, series in found.items():
        assert series, 'no http_requests_total series of job %s' % job
        assert {s['instance'] for s in series} == {sandbox.state['bot_fly_staging' if 'staging' in job else 'bot_fly']['url'][len('http://'):]}


def test_inventory_has_the_fly_host(sandbox):
    """inventory/sandbox: sandbox_fly in hotelbot_fly only, its variables pointing at the Fly double, its bot
    and its Prometheus job (the token compared by digest, never printed)."""
    facts = ('{{ {"platform": hotelbot_platform, "app": hotelbot_fly_app, "staging_app": hotelbot_staging_fly_app, '
             '"api_url": hotelbot_fly_api_url, "graphql_url": hotelbot_fly_graphql_url, "base_url": hotelbot_base_url, '
             '"staging_base_url": hotelbot_staging_base_url, "job": hotelbot_prometheus_job, "groups": group_names, '
             '"token_sha1": hotelbot_fly_api_token | hash("sha1")} | to_json }}')
    env = dict(os.environ, HOTELBOT_SANDBOX_DIR=str(sandbox.dir), ANSIBLE_CONFIG=str(ROOT / 'ansible.cfg'), ANSIBLE_NOCOLOR='1')
    ansible = os.path.join(os.path.dirname(sys.executable), 'ansible')
    done = subprocess.run([ansible, 'sandbox_fly', '-m', 'ansible.builtin.debug', '-a', 'msg=' + facts], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # `sandbox_fly | SUCCESS =>` and the result in YAML (ansible.cfg's callback_result_format); msg is our JSON.
    fly = json.loads(yaml.safe_load(done.stdout.split('=>', 1)[1])['msg'])
    ecs_hosts = subprocess.run([ansible, 'hotelbot', '--list-hosts'], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=60, check=False).stdout.split()
    assert 'sandbox' in ecs_hosts and 'sandbox_fly' not in ecs_hosts
    st = sandbox.state
    assert fly == {'platform': 'fly', 'app': st['fly']['app'], 'staging_app': st['fly']['staging_app'],
                   'api_url': st['fly']['api_url'], 'graphql_url': st['fly']['graphql_url'],
                   'base_url': st['bot_fly']['url'], 'staging_base_url': st['bot_fly_staging']['url'],
                   'job': st['prometheus']['fly_job'], 'groups': ['hotelbot_fly'],
                   'token_sha1': hashlib.sha1(sandbox.secrets['fly_api_token'].encode()).hexdigest()}
    assert sandbox.secrets['fly_api_token'] not in done.stdout + done.stderr


def test_up_status_down_with_the_fly_processes():
    """A sandbox of its own: the Fly double and bots are up, the token only in 0600 files, and
    `down` leaves no process of them."""
    directory = Path(tempfile.mkdtemp(prefix='hotelbot-sbx-fly-'))
    directory.chmod(0o755)
    env = dict(os.environ, HOTELBOT_SANDBOX_DIR=str(directory))

    def cli(command):
        return subprocess.run([sys.executable, '-m', 'sandbox', command], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
    try:
        up = cli('up')
        assert up.returncode == 0, up.stdout + up.stderr
        st, secrets = sandbox_state.load(directory), sandbox_state.load_secrets(directory)
        assert set(st['fly']) == {'api_url', 'graphql_url', 'control_url', 'app', 'staging_app', 'pid'}
        token = secrets['fly_api_token']
        assert token.startswith('FlyV1 fm2_') and token not in (directory / 'state.json').read_text()
        token_file = sandbox_state.fly_token_path(directory)
        assert token_file.read_text() == token and stat.S_IMODE(token_file.stat().st_mode) == 0o600
        pids = {name: st[name]['pid'] for name in FLY_PROCESSES}
        assert all(procs.alive(pid) for pid in pids.values())
        assert not [name for name, pid in pids.items() if token in procs.cmdline(pid)]  # not in argv
        status, _body = procs.http_json(st['fly']['api_url'] + '/v1/apps/%s/machines' % st['fly']['app'])
        assert status == 401  # no token: refused (and the refusal logged, without any token)
        assert not [log.name for log in (directory / 'logs').glob('*.log') if token in log.read_text()]
        status = cli('status')
        assert status.returncode == 0 and all(' %s ' % name in status.stdout for name in FLY_PROCESSES), status.stdout
        down = cli('down')
        assert down.returncode == 0, down.stderr
        assert not [name for name, pid in pids.items() if procs.alive(pid)]
        assert not [pid for pid in map(int, filter(str.isdigit, os.listdir('/proc')))
                    if str(directory) in procs.cmdline(pid) and procs.alive(pid)]
        assert not token_file.exists()
    finally:
        cli('down')
        shutil.rmtree(directory, ignore_errors=True)
