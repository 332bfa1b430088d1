"""Synthetic Prometheus history for the prometheus_gate integration tests, and a real server on it.

Every scenario is a `job` label in one OpenMetrics file, backfilled with
`promtool tsdb create-blocks-from openmetrics`, then served by a real `prometheus` with no
scrape targets. Counters advance every SCRAPE seconds with REQUESTS requests; the error
share of each scrape comes from the scenario's function of the offset to T (the evaluation
time, negative before it). SCRAPE=20s with a 1m rate window makes Prometheus' rate
extrapolation factor exactly 1.5 or 1, so a 5% scenario is exactly 0.05, not 0.0500000001.
"""
import os
import shutil
import socket
import subprocess
import time
import urllib.request

PROMETHEUS = shutil.which('prometheus') or '/usr/bin/prometheus'
PROMTOOL = shutil.which('promtool') or '/usr/bin/promtool'
SCRAPE = 20
REQUESTS = 100
BEFORE = 40 * 60     # history before T
AFTER = 5 * 60       # history after T (the evaluation must ignore it)
BUCKETS = ('0.25', '0.5', '1', '2.5', '+Inf')
MINUTE = 60


def _errors(rate_from=None, share=0.06, gap=None, spike=None):
    """A function offset -> (errors, missing) for one scrape of REQUESTS requests."""
    def errors(offset):
        if gap and gap[0] <= offset < gap[1]:
            return None
        if spike is not None and spike <= offset < spike + SCRAPE:
            return 30
        if rate_from is not None and offset >= rate_from:
            return int(round(REQUESTS * share))
        return 0
    return errors


# job -> (errors function, has a 5xx series, slow from offset or None)
SCENARIOS = {
    'gate-6pct-11m': (_errors(rate_from=-11 * MINUTE), True, None),
    'gate-6pct-9m': (_errors(rate_from=-9 * MINUTE), True, None),
    'gate-spike': (_errors(spike=-5 * MINUTE), True, None),
    'gate-gap': (_errors(rate_from=-30 * MINUTE, gap=(-6 * MINUTE, -3 * MINUTE)), True, None),
    'gate-5pct': (_errors(rate_from=-30 * MINUTE, share=0.05), True, None),
    'gate-no-5xx-series': (_errors(), False, None),
    'gate-slow': (_errors(), True, -12 * MINUTE),
}


def write_openmetrics(path, evaluate_at):
    """Write the scenarios' history around evaluate_at (a multiple of 60) to path."""
    totals = {}
    lines = []
    for offset in range(-BEFORE, AFTER + 1, SCRAPE):
        ts = evaluate_at + offset
        for job, (errors_of, has_5xx, slow_from) in sorted(SCENARIOS.items()):
            errors = errors_of(offset)
            if errors is None:
                continue  # a gap: nothing was scraped
            state = totals.setdefault(job, dict(ok=0, err=0, buckets=dict.fromkeys(BUCKETS, 0), count=0))
            state['ok'] += REQUESTS - errors
            state['err'] += errors
            slow = slow_from is not None and offset >= slow_from
            for le in BUCKETS:
                if le in ('2.5', '+Inf') or not slow:
                    state['buckets'][le] += REQUESTS
            lines.append('http_requests_total{job="%s",status="200"} %d %d' % (job, state['ok'], ts))
            if has_5xx:
                lines.append('http_requests_total{job="%s",status="500"} %d %d' % (job, state['err'], ts))
            for le in BUCKETS:
                lines.append('http_request_duration_seconds_bucket{job="%s",le="%s"} %d %d'
                             % (job, le, state['buckets'][le], ts))
    lines.append('# EOF')
    with open(path, 'w') as handle:
        handle.write('\n'.join(lines) + '\n')


def free_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class Server:
    """A real Prometheus serving the backfilled scenarios; stop() ends it."""

    def __init__(self, directory, evaluate_at):
        self.dir = directory
        self.evaluate_at = evaluate_at
        self.port = free_port()
        self.url = 'http://127.0.0.1:%d' % self.port
        self.process = None
        self.log = os.path.join(directory, 'prometheus.log')

    def start(self, timeout=60):
        data = os.path.join(self.dir, 'data')
        source = os.path.join(self.dir, 'history.om.txt')
        write_openmetrics(source, self.evaluate_at)
        subprocess.run([PROMTOOL, 'tsdb', 'create-blocks-from', 'openmetrics', source, data],
                       check=True, capture_output=True, text=True, timeout=120)
        config = os.path.join(self.dir, 'prometheus.yml')
        with open(config, 'w') as handle:
            handle.write('global:\n  scrape_interval: 1m\nscrape_configs: []\n')
        with open(self.log, 'w') as log:
            self.process = subprocess.Popen(
                [PROMETHEUS, '--config.file=%s' % config, '--storage.tsdb.path=%s' % data,
                 '--web.listen-address=127.0.0.1:%d' % self.port, '--storage.tsdb.retention.time=100y',
                 '--log.level=warn'],
                cwd=self.dir, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError('prometheus exited: %s' % self.read_log())
            try:
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(self.url + '/-/ready', timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError('prometheus not ready after %ss: %s' % (timeout, self.read_log()))

    def read_log(self):
        with open(self.log) as handle:
            return handle.read()[-3000:]

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
