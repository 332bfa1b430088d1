"""fly_release_info and fly_release run by ansible itself (ad hoc, -c local) against the Fly double started
as its own process (python -m sandbox.fly_double --validate), both where the work runs in the controller's
worker and as an async module (hotelbot_controller_modules=false). Assertions read the double's state;
the token is a canary that must appear in no output (even at -vvvv) and no file ansible wrote."""
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.path.dirname(sys.executable)
TOKEN = 'FlyV1 fm2_integration_canary_0c9e1d2b7a'
CANARY = TOKEN[len('FlyV1 '):]
APP = 'hotel-voice-bot'
GOOD = 'registry.fly.io/hotel-voice-bot:1.2.0'
BAD = 'registry.fly.io/hotel-voice-bot:1.3.0-bad'


@pytest.fixture(scope='module')
def double(tmp_path_factory):
    home = tmp_path_factory.mktemp('fly')
    token_file = home / 'token'
    token_file.write_text(TOKEN)
    process = subprocess.Popen([sys.executable, '-m', 'sandbox.fly_double', '--host', '127.0.0.1', '--port', '0',
                                '--token-file', str(token_file), '--start-seconds', '0.2', '--validate'],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = ''
        while not line.startswith('{'):
            line = process.stdout.readline()
            assert line, 'the Fly double did not start'
        url = json.loads(line)['url']
        yield url, home
    finally:
        process.terminate()
        process.wait(timeout=10)


def control(url, method, name, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request('%s/sandbox/fly/%s' % (url, name), data=data, method=method,
                                     headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.fixture
def fly(double):
    url, home = double
    control(url, 'POST', 'reset', {})
    yield url, home
    assert control(url, 'GET', 'state')['spec_errors'] == []


def machines(url):
    return control(url, 'GET', 'state')['apps'][APP]['machines']


def ansible(fly, module, args, *extra):
    """One module ad hoc on localhost at -vvvv, the token from FLY_API_TOKEN; (CompletedProcess, result)."""
    url, home = fly
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / 'ansible.cfg'), ANSIBLE_HOME=str(home / 'ansible'),
               ANSIBLE_LOCAL_TEMP=str(home / 'tmp'), ANSIBLE_REMOTE_TEMP=str(home / 'remote'),
               ANSIBLE_ASYNC_DIR=str(home / 'async'), ANSIBLE_STDOUT_CALLBACK='ansible.builtin.default',
               ANSIBLE_CALLBACK_RESULT_FORMAT='json', ANSIBLE_NOCOLOR='1', FLY_API_TOKEN=TOKEN,
               PATH=BIN + os.pathsep + os.environ.get('PATH', ''))
    for name in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY'):
        env.pop(name, None)
    args = dict(dict(app=APP, api_url=url, graphql_url=url + '/graphql'), **args)
    cmd = [os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local', '-vvvv',
           '-e', 'ansible_python_interpreter=%s' % sys.executable, '-m', module, '-a', json.dumps(args)] + list(extra)
    completed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    # The default callback's `localhost | CHANGED => {...}`, after -vvvv's lines.
    marker = completed.stdout.rfind('localhost | ')
    assert marker >= 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    start = completed.stdout.index('{', marker)
    result = json.JSONDecoder().raw_decode(completed.stdout[start:])[0]
    result['failed'] = completed.stdout[marker:start].startswith('localhost | FAILED')   # the callback drops it
    return completed, result


def assert_no_token(completed, home):
    assert CANARY not in completed.stdout and CANARY not in completed.stderr
    for path in Path(home).rglob('*'):
        if path.is_file() and path.name != 'token':
            assert CANARY not in path.read_text(errors='replace'), path


@pytest.mark.parametrize('controller', ['true', 'false'])
def test_rollback_check_mode_then_for_real_then_again(fly, controller):
    url, home = fly
    flag = ('-e', 'hotelbot_controller_modules=%s' % controller)
    info_run, info = ansible(fly, 'hotelbot.ops.fly_release_info', dict(release='previous'), *flag)
    assert info['target']['id'] == 3 and info['current']['id'] == 5, info_run.stdout[-2000:]
    planned_run, planned = ansible(fly, 'hotelbot.ops.fly_release', dict(release='previous'), '--check', '--diff', *flag)
    assert planned['changed'] and not planned.get('failed'), planned.get('msg')
    assert set(planned['diff']['after']['machines'].values()) == {GOOD}
    assert set(m['image'] for m in machines(url).values()) == {BAD}
    done_run, done = ansible(fly, 'hotelbot.ops.fly_release',
                             dict(release='previous', mark_stable=True, expected_current=5), *flag)
    assert done['changed'] and not done.get('failed'), done.get('msg')
    state = machines(url)
    assert set(m['image'] for m in state.values()) == {GOOD} and not any(m['lease'] for m in state.values())
    assert all('hotelbot.ops/last-stable' in m['metadata'] for m in state.values())
    again_run, again = ansible(fly, 'hotelbot.ops.fly_release', dict(release='previous', mark_stable=True), *flag)
    assert not again['changed'] and not again.get('failed'), again.get('msg')
    assert dict((i, m['instance_id']) for i, m in machines(url).items()) == dict((i, m['instance_id']) for i, m in state.items())
    for completed in (info_run, planned_run, done_run, again_run):
        assert_no_token(completed, home)


def test_bad_input_changes_nothing_and_hides_a_token_given_as_an_option(fly):
    url, home = fly
    before = machines(url)
    given_run, given = ansible(fly, 'hotelbot.ops.fly_release', dict(release='3', image=GOOD, api_token=TOKEN))
    assert given['failed'] and 'mutually exclusive' in given['msg']
    fraction_run, fraction = ansible(fly, 'hotelbot.ops.fly_release', dict(release='3', max_unavailable=1.5))
    assert fraction['failed'] and 'max_unavailable' in fraction['msg']
    app_run, unknown = ansible(fly, 'hotelbot.ops.fly_release', dict(release='previous', api_token=TOKEN, app='nope'))
    assert unknown['failed']
    assert machines(url) == before
    for completed in (given_run, fraction_run, app_run):
        assert_no_token(completed, home)
