"""hotpatch.yml's hotpatch_on_inconclusive against an unusable Prometheus (answers 500, or answers
200 with data the gate cannot use), asserted on the ledger and on the revision ECS runs: the
hot-patch is marked stable only when the gate said healthy, whatever the policy; `keep` keeps it
running unmarked, `rollback` (the default) rolls it back."""
import http.server
import json
import threading

import pytest

from conftest import FAMILY
from test_pipeline import hotpatch, image, revisions, stable_tagged


class Unusable(http.server.BaseHTTPRequestHandler):
    """/500/...: HTTP 500; /list/...: 200 with `data` a list (crashed the gate before issue 11)."""
    protocol_version = 'HTTP/1.1'

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get('Content-Length') or 0))
        if self.path.startswith('/500/'):
            status, body = 500, {'status': 'error', 'errorType': 'internal', 'error': 'boom'}
        else:
            status, body = 200, {'status': 'success', 'data': []}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture(scope='module')
def unusable():
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Unusable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield 'http://127.0.0.1:%d' % server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize('policy, answer', [('keep', 'list'), ('keep', '500'), ('rollback', 'list')])
def test_an_inconclusive_gate_never_marks_the_hotpatch_stable(fresh, unusable, policy, answer):
    before = revisions(fresh)
    run = hotpatch(fresh, '-e', 'hotpatch_image=' + image(fresh, '1.2.1'), '-e', 'hotpatch_watch_for=3s',
                   '-e', 'hotpatch_on_inconclusive=' + policy,
                   '-e', 'hotelbot_prometheus_url=%s/%s/' % (unusable, answer))
    new = [r for r in revisions(fresh) if r not in before]
    assert len(new) == 1, run.stdout[-3000:]
    # the ledger: nothing marked stable, last-stable still the seeded revision 3
    assert not stable_tagged(fresh, new[0]), run.stdout[-3000:]
    assert fresh.tags()['hotelbot.ops/last-stable'] == FAMILY + ':3'
    assert fresh.locks() == []
    if policy == 'keep':
        # kept running, unmarked; the run itself did not fail
        assert run.returncode == 0, run.stdout[-3000:]
        assert fresh.revision() == new[0]
        assert fresh.bot()[1]['version'] == '1.2.1'
    else:
        assert run.returncode != 0
        assert fresh.revision() == 3
        fresh.wait_bot_version('1.2.0')
