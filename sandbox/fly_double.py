"""The sandbox's Fly.io: a double of the Machines API (under /v1) and of Fly's GraphQL API
(/graphql, the releases query), one HTTP server on loopback.

    python -m sandbox.fly_double --host 127.0.0.1 --port N --token-file PATH \
        [--start-seconds 2] [--seed default] [--validate]

prints one JSON line {"url": ...} once it listens, then serves until SIGTERM. In-process:

    server = fly_double.serve('127.0.0.1', 0, token, start_seconds=2.0, validate=True)
    server.url, server.state (the model, for tests), server.shutdown()

Paths, fields, status codes and error bodies follow sandbox/specs/fly-machines-openapi.json
(with the overlay in sandbox/fly_spec.py, for what the spec is thin on) and the flaps client
flyctl uses. GraphQL requests are executed by graphql-core against Fly's own schema file, so a
query Fly would refuse is refused here with Fly's `{"errors": [...]}`.

Field names and status codes are Fly's. Error messages are Fly's where flyctl/fly-go show them
("lease not found", "unauthorized", "Could not find App"); the others (409 lease conflicts, 408
wait timeouts, GraphQL's UNAUTHORIZED answer) are ours, in Fly's ErrorResponse/errors shape.

Simplifications against real Fly:
- time is modelled, not simulated: a Machine's next states are scheduled when it is updated,
  started or stopped and applied whenever it is read (no background thread);
- an update restarts the Machine in place (replacing -> starting -> started after
  start_seconds); an image with "-crash" never gets to started: it stays starting, then exits
  (stopped, exit event with exit_code 1); its restart policy is not replayed;
- checks follow the image, not a probe: warning while starting and for check_seconds after,
  then critical for an image with "-bad", passing otherwise;
- metadata is config.metadata, and writing it does not bump the Machine's version;
- the Machines API never creates releases: GraphQL releases are the seed's (as on Fly, where
  a release is made by `fly deploy`, not by a Machine update).

Control endpoints (not Fly's API, never validated) are under /sandbox/fly/: see CONTROL below.
"""
from __future__ import annotations

import argparse
import collections
import copy
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import graphql

from sandbox import fly_spec

SANDBOX_OWNER = 'ops@hotelbot.example'   # whom the sandbox token belongs to: its leases' owner
DEFAULT_LEASE_TTL = 30
MAX_WAIT_SECONDS = 60
REPLACING_SECONDS = 0.1   # how long an updated Machine shows `replacing` before `starting`
STOPPING_SECONDS = 0.2
NONCE_HEADER = 'fly-machine-lease-nonce'
WAIT_STATES = ('started', 'stopped', 'suspended', 'destroyed', 'failed', 'settled')
SETTLED_STATES = ('started', 'stopped', 'suspended', 'destroyed', 'failed')
REGISTRY = 'registry.fly.io'


class ApiError(Exception):
    """An answer of the Machines API other than success: status and Fly's ErrorResponse."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _iso(ts: float) -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(ts))


_CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'


def new_ulid(now: float | None = None) -> str:
    """A 26-character ULID, as Fly's Machine versions and event ids are."""
    value = (int((now or time.time()) * 1000) << 80) | secrets.randbits(80)
    return ''.join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def image_ref(image: str) -> dict[str, Any]:
    """Fly's image_ref for a config.image: registry, repository, tag, digest."""
    name, _at, digest = image.partition('@')
    first, slash, rest = name.partition('/')
    registry, path = (first, rest) if slash and ('.' in first or ':' in first) else ('docker.io', name)
    repository, _colon, tag = path.rpartition(':') if ':' in path else (path, '', 'latest')
    return {'registry': registry, 'repository': repository, 'tag': tag,
            'digest': digest or 'sha256:' + hashlib.sha256(image.encode()).hexdigest(),
            'labels': {}}


def image_tag(image: str | None) -> str | None:
    return image_ref(image)['tag'] if image else None


# ---------------------------------------------------------------------------- the seed

def _machine_config(app: str, image: str, release: int) -> dict[str, Any]:
    return {
        'image': image,
        'env': {'APP_ENV': 'production' if not app.endswith('-staging') else 'staging',
                'LOG_LEVEL': 'info', 'PORT': '8080', 'PRIMARY_REGION': 'ams'},
        'guest': {'cpu_kind': 'shared', 'cpus': 2, 'memory_mb': 1024},
        'restart': {'policy': 'on-failure', 'max_retries': 10},
        'services': [{
            'protocol': 'tcp', 'internal_port': 8080, 'autostart': True, 'autostop': 'off',
            'min_machines_running': 1,
            'concurrency': {'type': 'requests', 'soft_limit': 200, 'hard_limit': 250},
            'ports': [{'port': 80, 'handlers': ['http'], 'force_https': True},
                      {'port': 443, 'handlers': ['tls', 'http']}],
        }],
        'checks': {'health': {'type': 'http', 'port': 8080, 'method': 'GET',
                              'path': '/api/health', 'interval': '10s', 'timeout': '2s',
                              'grace_period': '5s'}},
        'mounts': [],
        'init': {},
        'stop_config': {'signal': 'SIGTERM', 'timeout': '10s'},
        # What `fly deploy` writes on every Machine it manages.
        'metadata': {'fly_platform_version': 'v2', 'fly_process_group': 'app',
                     'fly_release_id': f'{app}-v{release}', 'fly_release_version': str(release),
                     'fly_flyctl_version': '0.3.200'},
    }


# version, status, image tag, stable, description, hours before the seed time
_SEED_RELEASES = [
    (1, 'complete', '1.0.0', True, 'Release', 720),
    (2, 'complete', '1.1.0', True, 'Release', 480),
    (3, 'complete', '1.2.0', True, 'Release', 240),
    (4, 'failed', '1.3.0-crash', False, 'Release', 30),
    (5, 'complete', '1.3.0-bad', False, 'Release', 6),
]
# app -> [(machine id, name, region, hours before the seed time it was created)]; the first
# is the oldest (the one the Fly release lock leases).
_SEED_MACHINES = {
    'hotel-voice-bot': [('e2865013a3d768', 'quiet-river-2137', 'ams', 700),
                        ('3d8d9e3eb1e938', 'bold-meadow-5521', 'ams', 690),
                        ('9185d1eb2e5e83', 'steep-forest-0418', 'fra', 680)],
    'hotel-voice-bot-staging': [('6e82d4e3b01578', 'calm-harbor-7390', 'ams', 710)],
}
SEEDS = ('default',)


def _seed_machines(count: int | None) -> dict[str, list]:
    """The seed's Machines; with `count` (the benchmark: POST /sandbox/fly/reset {"machines": N}) the
    production app has that many, the seeded three first, the others younger, regions in turn."""
    if not count:
        return _SEED_MACHINES
    seeded = _SEED_MACHINES['hotel-voice-bot'][:count]
    extra = [('%014x' % (0xb3c0de000000 + i), f'bench-machine-{i:03d}', ('ams', 'fra')[i % 2], 600 - i)
             for i in range(len(seeded), count)]
    return {**_SEED_MACHINES, 'hotel-voice-bot': seeded + extra}


class Machine:
    """One Fly Machine: its config, version, state (with what is scheduled next), lease,
    checks and events."""

    def __init__(self, app: str, machine_id: str, name: str, region: str, config: dict,
                 created: float) -> None:
        self.app, self.id, self.name, self.region = app, machine_id, name, region
        self.config = config
        self.created_at = self.updated_at = created
        self.instance_id = new_ulid(created)
        self.private_ip = 'fdaa:0:1:a7b:%x:%s:%s:2' % (len(machine_id), machine_id[:4], machine_id[4:8])
        self.state = 'started'
        self.started_at: float | None = created
        self.schedule: list[tuple[float, str, dict | None]] = []   # (at, state, event)
        self.events: list[dict[str, Any]] = []
        self.lease: dict[str, Any] | None = None
        self.cordoned = False
        self.check_seconds = 0.0
        self.add_event('launch', 'created', 'user', created)
        self.add_event('start', 'started', 'flyd', created)

    @property
    def image(self) -> str:
        return self.config.get('image', '')

    def add_event(self, kind: str, status: str, source: str, at: float,
                  request: dict | None = None) -> None:
        event = {'id': new_ulid(at), 'type': kind, 'status': status, 'source': source,
                 'timestamp': int(at * 1000)}
        if request is not None:
            event['request'] = request
        self.events.append(event)

    def advance(self, now: float) -> None:
        """Apply what was scheduled up to now."""
        while self.schedule and self.schedule[0][0] <= now:
            at, state, event = self.schedule.pop(0)
            self.state = state
            self.started_at = at if state == 'started' else None
            if event:
                self.add_event(event['type'], state, event['source'], at, event.get('request'))

    def boot(self, now: float, start_seconds: float, first: str) -> None:
        """Schedule a start from state `first` (replacing after an update, starting otherwise)."""
        self.state, self.started_at, self.schedule = first, None, []
        begin = now + (REPLACING_SECONDS if first == 'replacing' else 0.0)
        ready = max(begin, now + start_seconds)
        if first == 'replacing':
            self.schedule.append((begin, 'starting', None))
        if '-crash' in self.image:
            exit_event = {'exit_event': {'exit_code': 1, 'guest_exit_code': 1, 'oom_killed': False,
                                         'requested_stop': False, 'restarting': False,
                                         'exited_at': _iso(ready)}}
            exited = {'type': 'exit', 'source': 'flyd', 'request': exit_event}
            self.schedule.append((ready, 'stopped', exited))
        else:
            self.schedule.append((ready, 'started', {'type': 'start', 'source': 'flyd'}))

    def halt(self, now: float) -> None:
        self.state, self.started_at = 'stopping', None
        exit_event = {'exit_event': {'exit_code': 0, 'guest_exit_code': 0, 'oom_killed': False,
                                     'requested_stop': True, 'restarting': False,
                                     'exited_at': _iso(now + STOPPING_SECONDS)}}
        self.schedule = [(now + STOPPING_SECONDS, 'stopped',
                          {'type': 'exit', 'source': 'flyd', 'request': exit_event})]

    def active_lease(self, now: float) -> dict[str, Any] | None:
        if self.lease and self.lease['expires_at'] <= now:
            self.lease = None   # lapsed: as on Fly, an expired lease is simply gone
        return self.lease

    def check_status(self, now: float) -> str:
        if self.state != 'started' or self.started_at is None:
            return 'critical' if self.state in ('stopped', 'stopping', 'failed') else 'warning'
        if now < self.started_at + self.check_seconds:
            return 'warning'
        return 'critical' if '-bad' in self.image else 'passing'

    def checks(self, now: float) -> list[dict[str, Any]]:
        status = self.check_status(now)
        output = {'passing': 'HTTP GET /api/health: 200 OK',
                  'critical': 'HTTP GET /api/health: 503 Service Unavailable',
                  'warning': 'waiting for status'}[status]
        return [{'name': name, 'status': status, 'output': output, 'updated_at': _iso(now)}
                for name in sorted(self.config.get('checks') or {})]

    def to_api(self, now: float) -> dict[str, Any]:
        """The Machine as GET /v1/apps/{app}/machines/{id} shows it."""
        return {
            'id': self.id, 'name': self.name, 'state': self.state, 'region': self.region,
            'instance_id': self.instance_id, 'version': self.instance_id,
            'private_ip': self.private_ip, 'created_at': _iso(self.created_at),
            'updated_at': _iso(self.updated_at), 'config': copy.deepcopy(self.config),
            'image_ref': image_ref(self.image), 'host_status': 'ok', 'cordoned': self.cordoned,
            'events': list(reversed(self.events))[:5], 'checks': self.checks(now),
        }


class FlyState:
    """The double's whole model: apps, Machines, releases, faults, counters, spec findings.
    Every change happens under `lock`."""

    def __init__(self, start_seconds: float = 2.0, seed: str = 'default') -> None:
        if seed not in SEEDS:
            raise ValueError(f'unknown seed {seed!r} (known: {", ".join(SEEDS)})')
        self.lock = threading.RLock()
        self.seed_name = seed
        self.initial_start_seconds = start_seconds
        self.response_hook: Callable[[str, dict, Any], Any] | None = None   # tests only
        self.reset()

    def reset(self, machines: int | None = None) -> None:
        with self.lock:
            self.start_seconds = self.initial_start_seconds
            self.check_seconds = self.start_seconds / 4
            self.faults: dict[str, Any] = {'down': False, 'status_burst': None, 'down_after': None}
            self.calls: collections.Counter[str] = collections.Counter()
            self.spec_errors: list[dict[str, Any]] = []
            self.apps: dict[str, dict[str, Any]] = {}
            self.machines: dict[str, dict[str, Machine]] = {}
            self.releases: dict[str, list[dict[str, Any]]] = {}
            seeded = self.seeded_at = time.time()
            for number, (app, seeded_machines) in enumerate(_seed_machines(machines).items(), start=1):
                self._seed_app(app, number, seeded_machines, seeded)

    def _seed_app(self, app: str, number: int, machines: list, seeded: float) -> None:
        self.apps[app] = {'id': app, 'name': app, 'internal_numeric_id': 4200 + number,
                          'network': 'default', 'status': 'deployed', 'volume_count': 0,
                          'organization': {'name': 'Hotelbot', 'slug': 'hotelbot',
                                           'internal_numeric_id': 4200}}
        self.releases[app] = [{
            'id': f'{app}-v{version}', 'version': version, 'status': status,
            'description': description, 'reason': 'deploy', 'stable': stable,
            'imageRef': f'{REGISTRY}/hotel-voice-bot:{tag}', 'inProgress': False,
            'deploymentStrategy': 'ROLLING', 'revertedTo': None, 'evaluationId': None,
            'createdAt': _iso(seeded - hours * 3600), 'updatedAt': _iso(seeded - hours * 3600),
            'user': {'id': 'u-deploy', 'email': 'deploy@hotelbot.example', 'name': 'Deploy Bot'},
        } for version, status, tag, stable, description, hours in _SEED_RELEASES]
        serving = self.releases[app][-1]
        self.machines[app] = {}
        for machine_id, name, region, hours in machines:
            config = _machine_config(app, serving['imageRef'], serving['version'])
            machine = Machine(app, machine_id, name, region, config, seeded - hours * 3600)
            machine.check_seconds = self.check_seconds
            deployed = seeded - _SEED_RELEASES[-1][-1] * 3600   # when v5 was rolled out
            machine.instance_id, machine.updated_at = new_ulid(deployed), deployed
            machine.add_event('update', 'replacing', 'user', deployed)
            machine.add_event('start', 'started', 'flyd', deployed)
            self.machines[app][machine_id] = machine

    # -- lookups

    def app(self, name: str) -> dict[str, Any]:
        if name not in self.apps:
            raise ApiError(404, 'app not found')
        return self.apps[name]

    def machine(self, app: str, machine_id: str) -> Machine:
        self.app(app)
        found = self.machines[app].get(machine_id)
        if found is None:
            raise ApiError(404, 'machine not found')
        found.advance(time.time())
        return found

    def all_machines(self, app: str) -> list[Machine]:
        self.app(app)
        now = time.time()
        found = sorted(self.machines[app].values(), key=lambda m: m.created_at)
        for machine in found:
            machine.advance(now)
        return found

    # -- leases

    def require_lease(self, machine: Machine, nonce: str | None) -> None:
        """Refuse a change to a Machine someone else has leased (flyd answers 409)."""
        lease = machine.active_lease(time.time())
        if lease and nonce != lease['nonce']:
            raise ApiError(409, 'lease currently held by %s, expires at %s' % (
                lease['owner'], _iso(lease['expires_at'])))

    def take_lease(self, machine: Machine, nonce: str | None, ttl: int, description: str,
                   owner: str = SANDBOX_OWNER) -> dict[str, Any]:
        now = time.time()
        lease = machine.active_lease(now)
        if lease:
            if nonce != lease['nonce']:
                raise ApiError(409, 'lease currently held by %s, expires at %s' % (
                    lease['owner'], _iso(lease['expires_at'])))
            lease['expires_at'] = now + ttl   # a refresh by the holder
            return lease
        if nonce:
            raise ApiError(409, 'lease not found, nonce %s is stale' % nonce)
        machine.lease = {'nonce': secrets.token_hex(6), 'owner': owner,
                         'description': description, 'expires_at': now + ttl,
                         'version': machine.instance_id}
        return machine.lease

    # -- what the sandbox bots and tests read

    def serving(self, app: str) -> dict[str, Any]:
        """What the app's bot serves: the image most started Machines run."""
        machines = self.all_machines(app)
        started = [m for m in machines if m.state == 'started']
        counts = collections.Counter(m.image for m in started)
        image = None
        if counts:
            # a tie goes to the image of the most recently updated Machine
            newest = {m.image: m.updated_at for m in sorted(started, key=lambda m: m.updated_at)}
            image = max(counts, key=lambda i: (counts[i], newest[i]))
        return {'app': app, 'image': image, 'version': image_tag(image),
                'machines': {m.id: m.image for m in machines}, 'started': len(started)}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            now = time.time()
            apps = {}
            for name in self.apps:
                apps[name] = {
                    'machines': {m.id: {
                        'name': m.name, 'region': m.region, 'image': m.image, 'state': m.state,
                        'instance_id': m.instance_id, 'checks': m.check_status(now),
                        'process_group': m.config.get('metadata', {}).get('fly_process_group'),
                        'metadata': dict(m.config.get('metadata') or {}),
                        'lease': _lease_view(m.active_lease(now)), 'cordoned': m.cordoned,
                        'created_at': _iso(m.created_at), 'updated_at': _iso(m.updated_at),
                    } for m in self.all_machines(name)},
                    'releases': copy.deepcopy(self.releases[name]),
                }
            return {'apps': apps, 'faults': copy.deepcopy(self.faults),
                    'settings': {'start_seconds': self.start_seconds,
                                 'check_seconds': self.check_seconds},
                    'spec_errors': list(self.spec_errors), 'calls': dict(self.calls)}


def _lease_view(lease: dict | None) -> dict | None:
    if lease is None:
        return None
    return {'owner': lease['owner'], 'description': lease['description'],
            'expires_at': int(lease['expires_at']), 'version': lease['version']}


def _lease_envelope(lease: dict[str, Any]) -> dict[str, Any]:
    return {'status': 'success', 'data': {
        'nonce': lease['nonce'], 'expires_at': int(lease['expires_at']), 'owner': lease['owner'],
        'description': lease['description'], 'version': lease['version']}}


# ---------------------------------------------------------------------------- Machines API

class Call:
    """One request, as the handlers see it."""

    def __init__(self, method: str, path: str, query: dict[str, list[str]],
                 headers: dict[str, str], body: Any, params: dict[str, str]) -> None:
        self.method, self.path, self.query, self.headers = method, path, query, headers
        self.body, self.params = body, params

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def int_arg(self, name: str, default: int | None) -> int | None:
        value = self.arg(name)
        if value is None or value == '':
            return default
        try:
            return int(value)
        except ValueError:
            raise ApiError(400, f'invalid {name}: {value!r}') from None

    @property
    def nonce(self) -> str | None:
        return self.headers.get(NONCE_HEADER) or None

    def json_body(self) -> dict[str, Any]:
        if not isinstance(self.body, dict):
            raise ApiError(400, 'invalid request body: a JSON object is required')
        return self.body


def list_machines(state: FlyState, call: Call) -> tuple[int, Any]:
    now = time.time()
    region = call.arg('region')
    states = {s for s in (call.arg('state') or '').split(',') if s}
    wanted = {k[len('metadata.'):]: v[0] for k, v in call.query.items() if k.startswith('metadata.')}
    found = []
    for machine in state.all_machines(call.params['app']):
        metadata = machine.config.get('metadata') or {}
        if region and machine.region != region or states and machine.state not in states:
            continue
        if any(metadata.get(k) != v for k, v in wanted.items()):
            continue
        found.append(machine.to_api(now))
    return 200, found


def show_machine(state: FlyState, call: Call) -> tuple[int, Any]:
    return 200, state.machine(call.params['app'], call.params['id']).to_api(time.time())


def update_machine(state: FlyState, call: Call) -> tuple[int, Any]:
    machine = state.machine(call.params['app'], call.params['id'])
    state.require_lease(machine, call.nonce)
    body = call.json_body()
    config = body.get('config')
    if not isinstance(config, dict) or not config.get('image'):
        raise ApiError(400, 'invalid config: image is required')
    if body.get('region') and body['region'] != machine.region:
        raise ApiError(400, 'a Machine cannot change region; create a new one')
    if body.get('current_version') and body['current_version'] != machine.instance_id:
        raise ApiError(412, 'machine version %s is not the current version %s' % (
            body['current_version'], machine.instance_id))
    now = time.time()
    before = machine.image
    machine.config = copy.deepcopy(config)   # an update sends the whole config; it replaces it
    machine.instance_id = new_ulid(now)
    machine.updated_at = now
    machine.check_seconds = state.check_seconds
    request = {'image_from': before, 'image_to': machine.image}
    if body.get('skip_launch') and machine.state in ('stopped', 'suspended'):
        machine.add_event('update', machine.state, 'user', now, request)
    else:
        machine.add_event('update', 'replacing', 'user', now, request)
        machine.boot(now, state.start_seconds, 'replacing')
    return 200, machine.to_api(now)


def start_machine(state: FlyState, call: Call) -> tuple[int, Any]:
    machine = state.machine(call.params['app'], call.params['id'])
    state.require_lease(machine, call.nonce)
    previous = machine.state
    if previous in ('stopped', 'suspended', 'failed'):
        now = time.time()
        machine.add_event('start', 'starting', 'user', now)
        machine.boot(now, state.start_seconds, 'starting')
    return 200, {'message': '', 'status': 'success' if previous != 'started' else 'already started',
                 'previous_state': previous}


def stop_machine(state: FlyState, call: Call) -> tuple[int, Any]:
    machine = state.machine(call.params['app'], call.params['id'])
    state.require_lease(machine, call.nonce)
    if machine.state not in ('stopped', 'stopping', 'destroyed'):
        now = time.time()
        machine.add_event('stop', 'stopping', 'user', now)
        machine.halt(now)
    return 200, {'ok': True}


def cordon_machine(state: FlyState, call: Call) -> tuple[int, Any]:
    machine = state.machine(call.params['app'], call.params['id'])
    state.require_lease(machine, call.nonce)
    machine.cordoned = call.path.endswith('/cordon')
    return 200, {'ok': True}


def list_events(state: FlyState, call: Call) -> tuple[int, Any]:
    machine = state.machine(call.params['app'], call.params['id'])
    limit = max(1, min(50, call.int_arg('limit', 20) or 20))
    return 200, list(reversed(machine.events))[:limit]


def show_lease(state: FlyState, call: Call) -> tuple[int, Any]:
    machine = state.machine(call.params['app'], call.params['id'])
    lease = machine.active_lease(time.time())
    if lease is None:
        raise ApiError(404, 'lease not found')
    return 200, _lease_envelope(lease)


def create_lease(state: FlyState, call: Call) -> tuple[int, Any]:
    machine = state.machine(call.params['app'], call.params['id'])
    body = call.body if isinstance(call.body, dict) else {}
    ttl = body.get('ttl') or call.int_arg('ttl', None) or DEFAULT_LEASE_TTL
    if not isinstance(ttl, int) or ttl < 1:
        raise ApiError(400, 'invalid ttl: %r' % (ttl,))
    lease = state.take_lease(machine, call.nonce, ttl, str(body.get('description') or ''))
    return 201, _lease_envelope(lease)


def release_lease(state: FlyState, call: Call) -> tuple[int, Any]:
    machine = state.machine(call.params['app'], call.params['id'])
    lease = machine.active_lease(time.time())
    if lease is None:
        raise ApiError(404, 'lease not found')
    if call.nonce != lease['nonce']:
        raise ApiError(409, 'lease currently held by %s, expires at %s' % (
            lease['owner'], _iso(lease['expires_at'])))
    machine.lease = None
    return 200, None


def show_metadata(state: FlyState, call: Call) -> tuple[int, Any]:
    machine = state.machine(call.params['app'], call.params['id'])
    return 200, dict(machine.config.get('metadata') or {})


def show_metadata_key(state: FlyState, call: Call) -> tuple[int, Any]:
    machine = state.machine(call.params['app'], call.params['id'])
    metadata = machine.config.get('metadata') or {}
    if call.params['key'] not in metadata:
        raise ApiError(404, 'metadata key not found')
    return 200, {'value': metadata[call.params['key']]}


def upsert_metadata_key(state: FlyState, call: Call) -> tuple[int, Any]:
    machine = state.machine(call.params['app'], call.params['id'])
    state.require_lease(machine, call.nonce)
    value = call.json_body().get('value')
    if not isinstance(value, str):
        raise ApiError(400, 'invalid value: a string is required')
    machine.config.setdefault('metadata', {})[call.params['key']] = value
    return 204, None


def delete_metadata_key(state: FlyState, call: Call) -> tuple[int, Any]:
    machine = state.machine(call.params['app'], call.params['id'])
    state.require_lease(machine, call.nonce)
    (machine.config.get('metadata') or {}).pop(call.params['key'], None)
    return 204, None


def update_metadata(state: FlyState, call: Call) -> tuple[int, Any]:
    machine = state.machine(call.params['app'], call.params['id'])
    state.require_lease(machine, call.nonce)
    body = call.json_body()
    if body.get('machine_version') and body['machine_version'] != machine.instance_id:
        raise ApiError(412, 'machine version %s is not the current version %s' % (
            body['machine_version'], machine.instance_id))
    metadata = machine.config.setdefault('metadata', {})
    for key, value in (body.get('metadata') or {}).items():
        if value in (None, ''):   # the spec: null values and empty strings remove keys
            metadata.pop(key, None)
        else:
            metadata[key] = value
    return 204, None


def wait_machine(state: FlyState, call: Call) -> tuple[int, Any]:
    """Block until the Machine (at `version`/`instance_id`, when given) is in one of `state`."""
    timeout = call.int_arg('timeout', MAX_WAIT_SECONDS)
    if timeout is None or timeout < 1 or timeout > MAX_WAIT_SECONDS:
        raise ApiError(400, f'timeout must be between 1 and {MAX_WAIT_SECONDS} seconds')
    wanted = [s for value in call.query.get('state', ['started']) for s in value.split(',') if s]
    unknown = [s for s in wanted if s not in WAIT_STATES]
    if unknown:
        raise ApiError(400, 'invalid state: %s' % ', '.join(unknown))
    targets = set(wanted) | (set(SETTLED_STATES) if 'settled' in wanted else set())
    version = call.arg('version') or call.arg('instance_id')
    deadline = time.time() + timeout
    while True:
        with state.lock:
            machine = state.machine(call.params['app'], call.params['id'])
            if (version is None or version == machine.instance_id) and machine.state in targets:
                event = machine.events[-1]['id'] if machine.events else ''
                return 200, {'ok': True, 'state': machine.state, 'version': machine.instance_id,
                             'event_id': event}
        if time.time() >= deadline:
            raise ApiError(408, 'deadline_exceeded: machine %s did not reach %s within %ds' % (
                call.params['id'], '/'.join(wanted), timeout))
        time.sleep(0.05)


# The app's secrets (names only: Fly injects them into every Machine's environment at boot). The
# values never leave the double; show_secrets is not honoured.
SEED_SECRETS = ('DATABASE_URL', 'OPENAI_API_KEY', 'WAHA_API_KEY')


def list_secrets(state: FlyState, call: Call) -> tuple[int, Any]:
    app = state.app(call.params['app'])['name']
    seeded = _iso(state.seeded_at)
    return 200, {'secrets': [{'name': name, 'digest': hashlib.sha256(('%s/%s' % (app, name)).encode()).hexdigest()[:16],
                              'created_at': seeded, 'updated_at': seeded} for name in SEED_SECRETS]}


def show_app(state: FlyState, call: Call) -> tuple[int, Any]:
    app = dict(state.app(call.params['app']))
    app['machine_count'] = len(state.machines[app['name']])
    return 200, app


_M = r'/v1/apps/(?P<app>[^/]+)/machines/(?P<id>[^/]+)'
# (method, path pattern, operationId as in the spec, handler). Handlers run under state.lock,
# except wait, which takes it between its polls.
ROUTES: list[tuple[str, re.Pattern, str, Callable[[FlyState, Call], tuple[int, Any]]]] = [
    (method, re.compile('^' + pattern + '$'), operation, handler)
    for method, pattern, operation, handler in [
        ('GET', r'/v1/apps/(?P<app>[^/]+)', 'Apps_show', show_app),
        ('GET', r'/v1/apps/(?P<app>[^/]+)/machines', 'Machines_list', list_machines),
        ('GET', r'/v1/apps/(?P<app>[^/]+)/secrets', 'Secrets_list', list_secrets),
        ('GET', _M, 'Machines_show', show_machine),
        ('POST', _M, 'Machines_update', update_machine),
        ('POST', _M + '/start', 'Machines_start', start_machine),
        ('POST', _M + '/stop', 'Machines_stop', stop_machine),
        ('POST', _M + '/cordon', 'Machines_cordon', cordon_machine),
        ('POST', _M + '/uncordon', 'Machines_uncordon', cordon_machine),
        ('GET', _M + '/events', 'Machines_list_events', list_events),
        ('GET', _M + '/lease', 'Machines_show_lease', show_lease),
        ('POST', _M + '/lease', 'Machines_create_lease', create_lease),
        ('DELETE', _M + '/lease', 'Machines_release_lease', release_lease),
        ('GET', _M + '/wait', 'Machines_wait', wait_machine),
        ('GET', _M + '/metadata', 'Machines_show_metadata', show_metadata),
        ('PUT', _M + '/metadata', 'Machines_update_metadata', update_metadata),
        ('PATCH', _M + '/metadata', 'Machines_patch_metadata', update_metadata),
        ('GET', _M + '/metadata/(?P<key>[^/]+)', 'Machines_get_metadata_key', show_metadata_key),
        ('POST', _M + '/metadata/(?P<key>[^/]+)', 'Machines_upsert_metadata', upsert_metadata_key),
        ('DELETE', _M + '/metadata/(?P<key>[^/]+)', 'Machines_delete_metadata', delete_metadata_key),
    ]
]


def route(method: str, path: str) -> tuple[str, Callable, dict[str, str]] | None:
    for route_method, pattern, operation, handler in ROUTES:
        found = pattern.match(path)
        if found and route_method == method:
            return operation, handler, {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()}
    return None


# ---------------------------------------------------------------------------- GraphQL

class GraphQLAnswer:
    """Resolvers over FlyState for the part of Fly's schema the runbooks read: app(name:) with
    releases, releasesUnprocessed and currentRelease. Everything else resolves from the dicts."""

    def __init__(self, state: FlyState) -> None:
        self.state = state

    def root(self) -> dict[str, Any]:
        return {'app': self.app}

    def app(self, info: graphql.GraphQLResolveInfo, name: str | None = None, **_: Any) -> dict:
        with self.state.lock:
            if name not in self.state.apps:
                raise graphql.GraphQLError('Could not find App', extensions={'code': 'NOT_FOUND'})
            app = dict(self.state.apps[name])
            releases = copy.deepcopy(self.state.releases[name])
        newest_first = sorted(releases, key=lambda r: r['version'], reverse=True)
        app.update({
            'releases': lambda info, **args: _connection(newest_first, **args),
            'releasesUnprocessed': lambda info, **args: _connection(newest_first, **args),
            'currentRelease': next((r for r in newest_first if r['status'] == 'complete'), None),
            'organization': {'id': 'org-hotelbot', 'slug': 'hotelbot', 'name': 'Hotelbot'},
            'machines': None,
        })
        return app


def _connection(releases: list[dict], first: int | None = None, last: int | None = None,
                status: str | None = None, **_: Any) -> dict[str, Any]:
    nodes = [r for r in releases if status is None or r['status'] == status]
    total = len(nodes)
    if first is not None:
        nodes = nodes[:first]
    if last is not None:
        nodes = nodes[-last:] if last else []
    return {'nodes': nodes, 'edges': [{'node': n, 'cursor': n['id']} for n in nodes],
            'totalCount': total,
            'pageInfo': {'hasNextPage': first is not None and total > len(nodes),
                         'hasPreviousPage': False,
                         'startCursor': nodes[0]['id'] if nodes else None,
                         'endCursor': nodes[-1]['id'] if nodes else None}}


def execute_graphql(state: FlyState, payload: Any) -> dict[str, Any]:
    """Fly's answer to one POST /graphql: {"data": ...} and/or {"errors": [...]}."""
    if not isinstance(payload, dict) or not isinstance(payload.get('query'), str):
        return {'errors': [{'message': 'No query string was present'}]}
    result = graphql.graphql_sync(
        fly_spec.graphql_schema(), payload['query'], root_value=GraphQLAnswer(state).root(),
        variable_values=payload.get('variables') or None,
        operation_name=payload.get('operationName'))
    answer: dict[str, Any] = {}
    if result.data is not None or not result.errors:
        answer['data'] = result.data
    if result.errors:
        answer['errors'] = [err.formatted for err in result.errors]
    return answer


def graphql_operation(payload: Any) -> str:
    """A name for the call counter: the operation's name, else its first field."""
    if isinstance(payload, dict) and payload.get('operationName'):
        return 'graphql:' + payload['operationName']
    query = payload.get('query') if isinstance(payload, dict) else None
    found = re.search(r'(?:query|mutation)\s+(\w+)', query or '')
    if found:
        return 'graphql:' + found.group(1)
    found = re.search(r'\{\s*(\w+)', query or '')
    return 'graphql:' + (found.group(1) if found else 'unknown')


# ---------------------------------------------------------------------------- HTTP

def token_matches(header: str | None, token: str) -> bool:
    """The sandbox token `FlyV1 fm2_...` is accepted as `Authorization: FlyV1 fm2_...` and as
    `Authorization: Bearer fm2_...` (flyctl sends the FlyV1 form; a plain token goes as Bearer)."""
    if not header:
        return False
    bare = token[len('FlyV1 '):] if token.startswith('FlyV1 ') else token
    return secrets.compare_digest(header.strip(), 'FlyV1 ' + bare) or \
        secrets.compare_digest(header.strip(), 'Bearer ' + bare) or \
        secrets.compare_digest(header.strip(), 'Bearer FlyV1 ' + bare)


class FaultInjected(Exception):
    """The connection is to be dropped without an answer."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'   # keep-alive, so 'down' also hits pooled connections
    server: 'FlyDouble'

    def log_message(self, format: str, *args: Any) -> None:  # one line per call is noise
        pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        if parts.path.startswith('/sandbox/fly/'):
            status, body = control(self.server, self.command, parts, raw)
            return self._answer(status, body, {})
        try:
            status, body, headers = self.server.api(self.command, self.path, dict(self.headers), raw)
        except FaultInjected:
            return self._drop()
        self._answer(status, body, headers)

    def _answer(self, status: int, body: Any, headers: dict[str, str]) -> None:
        data = b'' if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if data:
            self.send_header('Content-Type', 'application/json; charset=utf-8')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        """A dead API: reset the connection, no answer (clients see 'connection reset')."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        except OSError:
            pass


class FlyDouble(ThreadingHTTPServer):
    """The double's server: Fly's API (Machines + GraphQL) and the control endpoints."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, token: str, state: FlyState, validate: bool) -> None:
        super().__init__((host, port), Handler)
        self.token, self.state, self.validate = token.strip(), state, validate
        fly_spec.graphql_schema()   # built now, not inside the first request
        if validate:
            fly_spec.warm_up()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f'http://{host}:{port}'

    def shutdown(self) -> None:
        super().shutdown()
        self.server_close()

    # -- Fly's API

    def api(self, method: str, target: str, headers: dict[str, str], raw: bytes
            ) -> tuple[int, Any, dict[str, str]]:
        parts = urllib.parse.urlsplit(target)
        payload = _json_or_raw(raw)
        is_graphql = parts.path == '/graphql'
        found = None if is_graphql else route(method, parts.path)
        operation = graphql_operation(payload) if is_graphql else found[0] if found else \
            f'unknown:{method} {parts.path}'
        with self.state.lock:
            self.state.calls[operation] += 1
            burst = self._fault()
        if burst:
            status, retry_after = burst
            message = 'rate limited' if status == 429 else 'service unavailable'
            return self._checked(method, target, status, {'error': message},
                                 {'Retry-After': str(retry_after)}, is_graphql)
        lowered = {k.lower(): v for k, v in headers.items()}
        if is_graphql:
            return self._graphql(lowered, payload)
        if self.validate:
            problems = fly_spec.validate_request(method, target, headers, raw or None)
            if problems:
                return self._spec_error('request', method, target, problems)
        if not token_matches(lowered.get('authorization'), self.token):
            return self._checked(method, target, 401, {'error': 'unauthorized'}, {}, False)
        if found is None:
            return self._checked(method, target, 404, {'error': 'not found'}, {}, False)
        operation, handler, params = found
        call = Call(method, parts.path, urllib.parse.parse_qs(parts.query, keep_blank_values=True),
                    lowered, payload, params)
        try:
            if handler is wait_machine:
                status, body = handler(self.state, call)
            else:
                with self.state.lock:
                    status, body = handler(self.state, call)
        except ApiError as err:
            status, body = err.status, {'error': err.message}
        hook = self.state.response_hook
        if hook is not None:
            body = hook(operation, params, body)
        return self._checked(method, target, status, body, {}, False)

    def _fault(self) -> tuple[int, int] | None:
        """Apply the injected faults to one API request: raise to drop it, or say which error
        status to answer with (a burst), or None."""
        faults = self.state.faults
        if faults['down']:
            raise FaultInjected()
        if faults['down_after'] is not None:
            if faults['down_after'] <= 0:
                faults['down'], faults['down_after'] = True, None
                raise FaultInjected()
            faults['down_after'] -= 1
        burst = faults['status_burst']
        if burst and burst['count'] > 0:
            burst['count'] -= 1
            if burst['count'] == 0:
                faults['status_burst'] = None
            return burst['status'], burst['retry_after']
        return None

    def _graphql(self, headers: dict[str, str], payload: Any) -> tuple[int, Any, dict[str, str]]:
        if not token_matches(headers.get('authorization'), self.token):
            # Fly's GraphQL answers 200 with an UNAUTHORIZED error, not an HTTP 401
            return 200, {'data': None, 'errors': [{
                'message': 'You must be authenticated to view this.',
                'extensions': {'code': 'UNAUTHORIZED'}}]}, {}
        if self.validate and isinstance(payload, dict):
            problems = fly_spec.validate_graphql(str(payload.get('query') or ''),
                                                 payload.get('variables'))
            if problems:
                self._record('graphql', 'POST', '/graphql', problems)
        return 200, execute_graphql(self.state, payload), {}

    def _checked(self, method: str, target: str, status: int, body: Any, headers: dict[str, str],
                 is_graphql: bool) -> tuple[int, Any, dict[str, str]]:
        if self.validate and not is_graphql:
            problems = fly_spec.validate_response(method, target, status, headers,
                                                  None if body is None else json.dumps(body))
            if problems:
                return self._spec_error('response', method, target, problems)
        return status, body, headers

    def _record(self, kind: str, method: str, target: str, problems: list[str]) -> None:
        # one line in the sandbox's fly.log, for whoever wonders where a 500 came from
        print('spec %s: %s' % (kind, '; '.join(problems)), file=sys.stderr, flush=True)
        with self.state.lock:
            self.state.spec_errors.append({'kind': kind, 'method': method,
                                           'path': urllib.parse.urlsplit(target).path,
                                           'problems': problems})

    def _spec_error(self, kind: str, method: str, target: str, problems: list[str]
                    ) -> tuple[int, Any, dict[str, str]]:
        self._record(kind, method, target, problems)
        return 500, {'error': 'spec: %s does not match the spec: %s' % (kind, '; '.join(problems))}, {}


def _json_or_raw(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


# ---------------------------------------------------------------------------- control

CONTROL = """
GET  /sandbox/fly/state                   apps (machines: image, state, instance, lease, metadata;
                                          releases), faults, settings, spec_errors, calls
POST /sandbox/fly/faults                  {"down": bool, "status_burst": {"status": 429|503,
                                          "count": N, "retry_after": s}, "down_after": N}
                                          (they hit Fly's API, Machines and GraphQL, never these
                                          endpoints: "down" closes each connection without an
                                          answer, as a dead API does; the next N answers of a
                                          burst are that status with Retry-After; "down_after"
                                          serves N more requests, then goes down)
POST /sandbox/fly/lease                   {"app", "machine_id", "owner", "description", "ttl"}:
                                          someone else's lease
POST /sandbox/fly/settings                {"start_seconds": s, "check_seconds": s}
GET  /sandbox/fly/serving?app=NAME        {"app", "image", "version", "machines", "started"}
GET  /sandbox/fly/calls                   {operation: count}: every API request received (faulted
                                          ones too), by the spec's operationId (Machines_list,
                                          Machines_update, ...) or graphql:<operation name>
POST /sandbox/fly/reset                   back to the seed; {"machines": N}: N Machines in hotel-voice-bot
"""


def control(server: FlyDouble, method: str, parts: urllib.parse.SplitResult, raw: bytes
            ) -> tuple[int, Any]:
    state = server.state
    name = parts.path[len('/sandbox/fly/'):]
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return 400, {'error': 'a JSON body is required'}
    query = dict(urllib.parse.parse_qsl(parts.query))
    try:
        with state.lock:
            if (method, name) == ('GET', 'state'):
                return 200, state.snapshot()
            if (method, name) == ('GET', 'calls'):
                return 200, dict(state.calls)
            if (method, name) == ('GET', 'serving'):
                return 200, state.serving(query.get('app', 'hotel-voice-bot'))
            if (method, name) == ('POST', 'reset'):
                state.reset(machines=int(body['machines']) if body.get('machines') else None)
                return 200, {'ok': True}
            if (method, name) == ('POST', 'faults'):
                return 200, set_faults(state, body)
            if (method, name) == ('POST', 'settings'):
                if 'start_seconds' in body:
                    state.start_seconds = float(body['start_seconds'])
                    state.check_seconds = state.start_seconds / 4
                if 'check_seconds' in body:
                    state.check_seconds = float(body['check_seconds'])
                return 200, {'start_seconds': state.start_seconds,
                             'check_seconds': state.check_seconds}
            if (method, name) == ('POST', 'lease'):
                machine = state.machine(body['app'], body['machine_id'])
                lease = state.take_lease(machine, None, int(body.get('ttl') or DEFAULT_LEASE_TTL),
                                         str(body.get('description') or ''),
                                         owner=str(body.get('owner') or 'someone@else.example'))
                return 200, _lease_envelope(lease)
    except ApiError as err:
        return err.status, {'error': err.message}
    except (KeyError, TypeError, ValueError) as err:
        return 400, {'error': f'bad control request: {err}'}
    return 404, {'error': f'no control endpoint {method} {parts.path}', 'endpoints': CONTROL}


def set_faults(state: FlyState, body: dict[str, Any]) -> dict[str, Any]:
    faults = state.faults
    if 'down' in body:
        faults['down'] = bool(body['down'])
    if 'down_after' in body:
        faults['down_after'] = None if body['down_after'] is None else int(body['down_after'])
    if 'status_burst' in body:
        burst = body['status_burst']
        if burst:
            if int(burst['status']) not in (429, 503):
                raise ValueError('status_burst.status must be 429 or 503')
            faults['status_burst'] = {'status': int(burst['status']),
                                      'count': int(burst.get('count', 1)),
                                      'retry_after': int(burst.get('retry_after', 1))}
        else:
            faults['status_burst'] = None
    return copy.deepcopy(faults)


# ---------------------------------------------------------------------------- entry points

def serve(host: str = '127.0.0.1', port: int = 0, token: str = '', start_seconds: float = 2.0,
          seed: str = 'default', validate: bool = False) -> FlyDouble:
    """Start the double in a background thread; port 0 picks a free port (see server.url)."""
    if not token:
        raise ValueError('a token is required')
    server = FlyDouble(host, port, token, FlyState(start_seconds, seed), validate)
    threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.1},
                     name='fly-double', daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--token-file', required=True, help='file holding the sandbox API token')
    parser.add_argument('--start-seconds', type=float, default=2.0)
    parser.add_argument('--seed', default='default', choices=SEEDS)
    parser.add_argument('--validate', action='store_true',
                        help='check every request and response against the spec')
    parser.add_argument('--dir', help='sandbox state dir (marks the process as ours)')
    args = parser.parse_args(argv)
    with open(args.token_file, encoding='utf-8') as handle:
        token = handle.read().strip()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    server = serve(args.host, args.port, token, args.start_seconds, args.seed, args.validate)
    print(json.dumps({'url': server.url, 'pid': os.getpid()}), flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
