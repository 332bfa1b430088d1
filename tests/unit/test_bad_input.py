"""Plain mistakes, fed to every module as a real process: each fails (or, for an unusable Prometheus
answer, is inconclusive) with a one-line message naming the option, never the "unexpected error"
bug path, and no secret in anything the module prints. Every server option points at a closed
local port, so nothing real is touched."""
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from module_runner import closed_port, module_names, run_module

CANARY = 'SECRETPW'


PORT = closed_port()
CLOSED = 'http://127.0.0.1:%d' % PORT
AWS = dict(region='us-east-1', endpoint_url=CLOSED, access_key='AKIAEXAMPLE', secret_key='aws-' + CANARY,
           max_attempts=1, connect_timeout=2)
PG = dict(host='127.0.0.1', port=PORT, user='hotelbot', password='pg-' + CANARY, database='hotel_voice_bot',
          connect_timeout=2)

FLY = dict(app='hotel-voice-bot', api_url=CLOSED, graphql_url=CLOSED + '/graphql', api_token='FlyV1 fm2_' + CANARY)


def base(module, tmp):
    """Arguments that are valid apart from the closed ports."""
    return {
        'ecs_release': dict(AWS, cluster='hotelbot', service='hotel-voice-bot', revision=3),
        'ecs_release_info': dict(AWS, cluster='hotelbot', service='hotel-voice-bot'),
        'http_check': dict(base_url=CLOSED, checks=[dict(name='health', path='/api/health')]),
        'prometheus_gate': dict(url=CLOSED, job='hotel-voice-bot', retries=0),
        'pg_check': dict(PG, tables=['public.bot_messages']),
        'pg_backup': dict(PG, dest=tmp, verify_tables=['public.bot_messages']),
        'pg_restore': dict(PG, src=os.path.join(tmp, 'hotel.dump'), confirm=True),
        'release_lock': dict(PG, name='ecs/hotelbot/hotel-voice-bot', owner='oncall@laptop'),
        'fly_release': dict(FLY, release='previous'),
        'fly_release_info': dict(FLY),
    }[module]


URI = 'postgresql://u:%s@127.0.0.1:%d/db' % (CANARY, PORT)

# (module, bad arguments, the option the message must name)
ROWS = [
    # ---- ECS (endpoint_url, desired_count: another engineer's fix)
    ('ecs_release', dict(endpoint_url='http://localhost:99999'), 'endpoint_url'),
    ('ecs_release', dict(endpoint_url='localhost:4566'), 'endpoint_url'),
    ('ecs_release', dict(desired_count=100000000000), 'desired_count'),
    ('ecs_release', dict(desired_count=-1), 'desired_count'),
    ('ecs_release', dict(cluster=''), 'cluster'),
    ('ecs_release', dict(wait_timeout='soon'), 'wait_timeout'),
    ('ecs_release_info', dict(endpoint_url='http://[::1'), 'endpoint_url'),
    ('ecs_release_info', dict(service=''), 'service'),
    ('ecs_release_info', dict(events_limit=-1), 'events_limit'),
    # ---- Fly
    ('fly_release', dict(api_url='localhost:4280'), 'api_url'),
    ('fly_release', dict(app=''), 'app'),
    ('fly_release', dict(max_unavailable=1.5), 'max_unavailable'),
    ('fly_release', dict(wait_timeout='soon'), 'wait_timeout'),
    ('fly_release', dict(release='3', image='registry.fly.io/hotel-voice-bot:1.2.1'), 'image'),
    ('fly_release', dict(api_token=''), 'api_token'),
    ('fly_release_info', dict(graphql_url='nope'), 'graphql_url'),
    ('fly_release_info', dict(releases_limit=0), 'releases_limit'),
    # ---- http_check
    ('http_check', dict(base_url='http://[::1'), 'base_url'),
    ('http_check', dict(base_url='http://u:%s@[::1' % CANARY), 'base_url'),
    ('http_check', dict(base_url='http://localhost:99999'), 'base_url'),
    ('http_check', dict(base_url=''), 'base_url'),
    ('http_check', dict(ca_path='/nonexistent/ca.pem'), 'ca_path'),
    ('http_check', dict(count='many'), 'count'),
    ('http_check', dict(count=100000000000), 'count'),
    ('http_check', dict(concurrency=100000), 'concurrency'),
    ('http_check', dict(timeout=-1), 'timeout'),
    ('http_check', dict(max_body_bytes=0), 'max_body_bytes'),
    ('http_check', dict(checks=[dict(name='h', path='/x', status=[99])]), 'status'),
    ('http_check', dict(checks=[dict(name='h', url='http://[::1/x')]), 'url'),
    ('http_check', dict(base_url='ftp://h', secret_headers={'Authorization': 'Bearer ' + CANARY}), 'base_url'),
    # ---- prometheus_gate
    ('prometheus_gate', dict(threshold=5), 'threshold'),
    ('prometheus_gate', dict(retries=1000), 'retries'),
    ('prometheus_gate', dict(url='http://[::1'), 'url'),
    ('prometheus_gate', dict(url='http://localhost:99999'), 'url'),
    ('prometheus_gate', dict(url=''), 'url'),
    ('prometheus_gate', dict(url='http://ops:%s@[::1' % CANARY), 'url'),
    ('prometheus_gate', dict(ca_path='/nonexistent/ca.pem'), 'ca_path'),
    ('prometheus_gate', dict(step='soon'), 'step'),
    ('prometheus_gate', dict(for_duration='-5m'), 'for'),
    ('prometheus_gate', dict(timeout='x'), 'timeout'),
    ('prometheus_gate', dict(url='ftp://h', bearer_token='tok-' + CANARY), 'url'),
    # ---- pg_check
    ('pg_check', dict(tables=['bot_messages;drop']), 'tables'),
    ('pg_check', dict(tables=['bot_messages; DROP TABLE bot_messages']), 'tables'),
    ('pg_check', dict(min_rows={'public.bot_messages': 'lots'}), 'min_rows'),
    ('pg_check', dict(slow_query_limit=100000000000), 'slow_query_limit'),
    ('pg_check', dict(slow_query_threshold_ms=-1), 'slow_query_threshold_ms'),
    ('pg_check', dict(port=99999), 'port'),
    ('pg_check', dict(database=''), 'database'),
    ('pg_check', dict(database=URI), 'database'),
    # ---- pg_backup
    ('pg_backup', dict(verify_tables=['bot_messages;drop']), 'verify_tables'),
    ('pg_backup', dict(keep=-1), 'keep'),
    ('pg_backup', dict(jobs=0), 'jobs'),
    ('pg_backup', dict(database=''), 'database'),
    ('pg_backup', dict(database=URI), 'database'),
    # ---- pg_restore
    ('pg_restore', dict(src='/nonexistent/hotel.dump'), 'src'),
    ('pg_restore', dict(jobs=0), 'jobs'),
    ('pg_restore', dict(database=''), 'database'),
    ('pg_restore', dict(database=URI), 'database'),
    # ---- release_lock
    ('release_lock', dict(ttl='forever'), 'ttl'),
    ('release_lock', dict(ttl=100000000000), 'ttl'),
    ('release_lock', dict(name=''), 'name'),
    ('release_lock', dict(database=''), 'database'),
    ('release_lock', dict(database=URI), 'database'),
]


class BadPrometheus(BaseHTTPRequestHandler):
    """A Prometheus-looking server whose answers the gate cannot use (path picks the answer)."""
    protocol_version = 'HTTP/1.1'
    ANSWERS = {
        '/list': {'status': 'success', 'data': []},
        '/string': {'status': 'success', 'data': {'resultType': 'matrix', 'result': [
            {'metric': {}, 'values': [[1795298400, 'abc']]}]}},
        '/result': {'status': 'success', 'data': {'resultType': 'matrix', 'result': 'none'}},
    }

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get('Content-Length') or 0))
        body = json.dumps(self.ANSWERS[self.path.split('/api/')[0]]).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Every row run once, in parallel (each is a module process; the table takes seconds, not minutes)."""
    tmp = str(tmp_path_factory.mktemp('bad-input'))
    with open(os.path.join(tmp, 'hotel.dump'), 'wb') as handle:
        handle.write(b'PGDMP not really')
    server = ThreadingHTTPServer(('127.0.0.1', 0), BadPrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bad_prometheus = ['http://127.0.0.1:%d%s' % (server.server_address[1], path) for path in BadPrometheus.ANSWERS]

    def one(item):
        module, bad = item
        return run_module(module, dict(base(module, tmp), **bad), timeout=60)

    items = [(module, bad) for module, bad, _option in ROWS]
    items += [('prometheus_gate', dict(url=url)) for url in bad_prometheus]
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            outcomes = list(pool.map(one, items))
    finally:
        server.shutdown()
        server.server_close()
    return dict(zip((json.dumps(item, sort_keys=True) for item in items), outcomes)), bad_prometheus


def test_every_module_is_in_the_table():
    assert sorted(set(module for module, _bad, _option in ROWS)) == module_names()


def row_id(row):
    module, bad, _option = row
    return '%s-%s' % (module, json.dumps(bad, sort_keys=True)[:60])


@pytest.mark.parametrize('row', ROWS, ids=[row_id(r) for r in ROWS])
def test_a_plain_mistake_is_a_one_line_message_naming_the_option(runs, row):
    module, bad, option = row
    outcome = runs[0][json.dumps((module, bad), sort_keys=True)]
    result = outcome.result
    assert result is not None, 'no JSON result: %s' % outcome.stderr[-1000:]
    msg = str(result.get('msg', ''))
    assert CANARY not in outcome.stdout and CANARY not in outcome.stderr
    assert result.get('failed') is True and outcome.rc != 0, msg
    assert not msg.lower().startswith('unexpected error') and 'Traceback' not in msg, msg
    assert '\n' not in msg.strip(), msg
    assert option in msg, msg
    assert result.get('changed', False) is False


def test_an_unusable_prometheus_answer_is_inconclusive(runs):
    outcomes, urls = runs
    for url, what in zip(urls, ('data is a list', 'has the value "abc", not a number', 'data.result is a string')):
        outcome = outcomes[json.dumps(('prometheus_gate', dict(url=url)), sort_keys=True)]
        result = outcome.result
        assert outcome.rc == 0 and result['decision'] == 'inconclusive', (url, result.get('msg'))
        assert what in result['reason'] and '\n' not in result['reason']
