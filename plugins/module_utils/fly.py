# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fly.io for hotelbot.ops: the Machines and GraphQL clients, and what a release of an app is.

- FlyMachines: the Machines REST API (api.machines.dev/v1): Machines, leases, the wait endpoint,
  per-Machine metadata; FlyGraphQL: the releases of an app (api.fly.io/graphql). Both send through
  the one transport.Transport (its retry policy: 429/5xx, Retry-After).
- AppView: an app's process group read once (Machines, releases, the ledger kept in Machine metadata)
  and resolve(): `current`, `previous`, `last_stable`, a version or an image, exactly as fly_release
  rolls to it (fly_release_info shows the same resolution).

Fly has no "rollback": a rollback is a deploy of an older release's image. The Machines API creates
no Fly release, so the ledger lives where Fly keeps per-Machine data, the Machine metadata:
`hotelbot.ops/last-stable` (what was verified) and `hotelbot.ops/rolled-back` (written before a roll
to `previous`, so a re-run of `previous` stays where the first one landed).
"""

from __future__ import absolute_import, division, print_function

import json
import os
import urllib.parse

from ansible.module_utils.common.parameters import env_fallback

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, one_line
from ansible_collections.hotelbot.ops.plugins.module_utils.transport import Transport, TransportError

API_URL = 'https://api.machines.dev'
GRAPHQL_URL = 'https://api.fly.io/graphql'
TOKEN_ENV = 'FLY_API_TOKEN'

META_LAST_STABLE = 'hotelbot.ops/last-stable'
META_ROLLED_BACK = 'hotelbot.ops/rolled-back'
META_ROLLOUT = 'hotelbot.ops/rollout'
META_STOPPED_BY_SCALE = 'hotelbot.ops/stopped-by-scale'
# What `fly deploy` writes into every Machine's config.metadata; a Machine without it is in `app`.
PROCESS_GROUP_KEY = 'fly_process_group'
DEFAULT_PROCESS_GROUP = 'app'
SYMBOLIC_TARGETS = ('current', 'previous', 'last_stable')
LEASE_NONCE_HEADER = 'fly-machine-lease-nonce'
GONE_STATES = ('destroyed', 'destroying')

RELEASES_QUERY = '''query($app: String!, $limit: Int!) {
  app(name: $app) {
    name
    releasesUnprocessed(first: $limit) {
      nodes { id version description reason status imageRef stable user { email } createdAt }
    }
  }
}'''


def fly_argument_spec(**extra):
    """The connection options every Fly module (and release_lock backend=fly) takes."""
    spec = dict(
        api_token=dict(type='str', no_log=True, fallback=(env_fallback, [TOKEN_ENV])),
        api_url=dict(type='str', default=API_URL),
        graphql_url=dict(type='str', default=GRAPHQL_URL),
        validate_certs=dict(type='bool', default=True),
    )
    spec.update(extra)
    return spec


def authorization(token):
    """The Authorization header value: a `FlyV1 ...` macaroon goes as it is, any other token (a plain
    one, or one already written `Bearer ...`) as a bearer token."""
    token = token.strip()
    if token.startswith('FlyV1 ') or token.startswith('Bearer '):
        return token
    return 'Bearer %s' % token


def token_of(params, environ=None):
    """api_token, else FLY_API_TOKEN; OpsError when neither is set."""
    environ = os.environ if environ is None else environ
    token = (params.get('api_token') or environ.get(TOKEN_ENV) or '').strip()
    if not token:
        raise OpsError('no Fly API token: set api_token (hotelbot_fly_api_token in the inventory) or %s; '
                       'nothing was requested' % TOKEN_ENV)
    return token


def transport_for(task, tries=4, sleep=None):
    """The Transport of a task's Fly options; the token is hidden (whatever its length) before any use."""
    params = task.params
    token = token_of(params)
    task.hide(token, any_length=True)
    extra = dict(sleep=sleep) if sleep else {}
    return Transport(validate_certs=params.get('validate_certs', True), timeout=75.0, tries=tries,
                     headers={'Authorization': authorization(token)}, hide=task.hide, **extra)


def check_url(value, option):
    parts = urllib.parse.urlsplit(value or '')
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise OpsError('%s must be an http:// or https:// URL with a host, got %r; nothing was requested'
                       % (option, value))
    return value.rstrip('/')


def quoted(value):
    return urllib.parse.quote(str(value), safe='')


def error_text(answer):
    """The `error` of Fly's ErrorResponse body, else the body's first characters."""
    try:
        body = answer.json()
    except ValueError:
        return one_line(answer.text()) or 'no body'
    if isinstance(body, dict) and body.get('error'):
        return one_line(body['error'])
    return one_line(json.dumps(body))


class LeaseHeld(Exception):
    """A Machine's lease is someone else's (HTTP 409)."""

    def __init__(self, machine_id, holder):
        super(LeaseHeld, self).__init__(machine_id)
        self.machine_id = machine_id
        self.holder = holder


# --------------------------------------------------------------------------- clients

class FlyMachines:
    """The Machines API of one app. Errors are OpsError naming what was being done."""

    def __init__(self, transport, api_url, app):
        self.transport = transport
        root = check_url(api_url, 'api_url')
        root = root[:-len('/v1')] if root.endswith('/v1') else root   # the spec's server URL given whole
        self.base = '%s/v1/apps/%s' % (root, quoted(app))
        self.app = app

    def _url(self, path='', query=None):
        url = self.base + path
        return url + ('?' + urllib.parse.urlencode(query) if query else '')

    def _call(self, doing, method, path='', query=None, payload=None, nonce=None, accept=()):
        """The answer (2xx or a status in accept), else OpsError saying what failed."""
        headers = {'Accept': 'application/json'}
        if nonce:
            headers[LEASE_NONCE_HEADER] = nonce
        try:
            return self.transport.request(method, self._url(path, query), payload=payload, headers=headers,
                                          accept=lambda status: 200 <= status <= 299 or status in accept)
        except TransportError as err:
            if err.status == 404 and not path:
                raise OpsError('Fly app %s not found (%s)' % (self.app, err.msg))
            if err.status in (401, 403):
                raise OpsError('Fly refused the API token while %s (HTTP %d): give a deploy token of app %s'
                               % (doing, err.status, self.app))
            raise OpsError('Fly Machines API error while %s: %s' % (doing, err.msg))

    def _json(self, answer):
        try:
            return answer.json() if answer.body else None
        except ValueError:
            return None

    def app_info(self):
        return self._json(self._call('reading app %s' % self.app, 'GET'))

    def machines(self):
        """Every Machine of the app that is not destroyed, oldest first."""
        found = self._json(self._call('listing the Machines of %s' % self.app, 'GET', '/machines')) or []
        alive = [m for m in found if m.get('state') not in GONE_STATES]
        return sorted(alive, key=lambda m: (m.get('created_at') or '', m.get('id') or ''))

    def machine(self, machine_id):
        return self._json(self._call('reading Machine %s' % machine_id, 'GET', '/machines/%s' % quoted(machine_id)))

    def update(self, machine_id, config, nonce):
        """Replace the Machine's config (the whole of it); the new Machine (its new instance_id)."""
        answer = self._call('updating Machine %s' % machine_id, 'POST', '/machines/%s' % quoted(machine_id),
                            payload=dict(config=config), nonce=nonce, accept=(409,))
        if answer.status == 409:
            raise LeaseHeld(machine_id, self.lease(machine_id))
        return self._json(answer)

    def start(self, machine_id, nonce=None):
        self._call('starting Machine %s' % machine_id, 'POST', '/machines/%s/start' % quoted(machine_id), nonce=nonce)

    def stop(self, machine_id, nonce=None):
        self._call('stopping Machine %s' % machine_id, 'POST', '/machines/%s/stop' % quoted(machine_id),
                   payload={}, nonce=nonce)

    def wait(self, machine_id, instance_id, state, timeout):
        """True when the Machine's instance reached state within timeout seconds (at most 60, Fly's
        limit for one call), False on Fly's 408 (not yet)."""
        query = dict(state=state, timeout=int(max(1, min(60, timeout))))
        if instance_id:
            query['instance_id'] = instance_id
        answer = self._call('waiting for Machine %s to be %s' % (machine_id, state), 'GET',
                            '/machines/%s/wait' % quoted(machine_id), query=query, accept=(408,))
        return answer.status != 408

    def secret_names(self):
        """The names of the app's secrets (Fly sets them in every Machine's environment); never their values."""
        body = self._json(self._call('listing the secret names of %s' % self.app, 'GET', '/secrets')) or {}
        return sorted(item.get('name') for item in body.get('secrets') or [] if item.get('name'))

    def events(self, machine_id):
        return self._json(self._call('reading the events of Machine %s' % machine_id, 'GET',
                                     '/machines/%s/events' % quoted(machine_id))) or []

    # ------------------------------------------------------------------ leases
    def lease(self, machine_id):
        """The Machine's lease ({nonce, expires_at, owner, description, version}), None when there is none."""
        answer = self._call('reading the lease of Machine %s' % machine_id, 'GET',
                            '/machines/%s/lease' % quoted(machine_id), accept=(404,))
        if answer.status == 404:
            return None
        return lease_data(self._json(answer))

    def acquire_lease(self, machine_id, ttl, description, nonce=None):
        """A new lease (or ours refreshed, given its nonce); LeaseHeld when another holder has it."""
        answer = self._call('taking the lease of Machine %s' % machine_id, 'POST',
                            '/machines/%s/lease' % quoted(machine_id),
                            payload=dict(ttl=int(ttl), description=description), nonce=nonce, accept=(409,))
        if answer.status == 409:
            raise LeaseHeld(machine_id, self.lease(machine_id))
        return lease_data(self._json(answer))

    def release_lease(self, machine_id, nonce):
        """Give the lease back; False when it is no longer there (lapsed, or cleared by someone)."""
        answer = self._call('releasing the lease of Machine %s' % machine_id, 'DELETE',
                            '/machines/%s/lease' % quoted(machine_id), nonce=nonce, accept=(404, 409))
        return answer.status not in (404, 409)

    # ------------------------------------------------------------------ metadata
    # Our keys hold a `/` (hotelbot.ops/last-stable), which the per-key path /metadata/{key} cannot carry
    # (an encoded slash is a path separator to Fly's router), so they are written with PATCH /metadata.
    def set_metadata(self, machine_id, key, value, nonce=None):
        self._call('writing metadata %s of Machine %s' % (key, machine_id), 'PATCH',
                   '/machines/%s/metadata' % quoted(machine_id), payload=dict(metadata={key: value}), nonce=nonce)

    def delete_metadata(self, machine_id, key, nonce=None):
        """PATCH with an empty value removes the key."""
        self.set_metadata(machine_id, key, '', nonce=nonce)


def lease_data(body):
    """Fly's lease envelope {"status": "success", "data": {...}} (or a bare lease) as the lease."""
    if not isinstance(body, dict):
        return None
    data = body.get('data') if isinstance(body.get('data'), dict) else body
    return data if data.get('nonce') or data.get('owner') else None


class FlyGraphQL:
    """Fly's GraphQL API, for what the Machines API does not have: an app's releases."""

    def __init__(self, transport, graphql_url):
        self.transport = transport
        self.url = check_url(graphql_url, 'graphql_url')

    def query(self, doing, query, variables):
        try:
            body = self.transport.json('POST', self.url, payload=dict(query=query, variables=variables))
        except TransportError as err:
            if err.status in (401, 403):
                raise OpsError('Fly GraphQL refused the API token while %s (HTTP %d)' % (doing, err.status))
            raise OpsError('Fly GraphQL error while %s: %s' % (doing, err.msg))
        errors = body.get('errors') if isinstance(body, dict) else None
        if errors:
            raise OpsError('Fly GraphQL error while %s: %s' % (
                doing, '; '.join(one_line(e.get('message', e) if isinstance(e, dict) else e) for e in errors)))
        return (body or {}).get('data') or {}

    def releases(self, app, limit):
        """The app's releases, newest first; OpsError when Fly knows no such app."""
        data = self.query('listing the releases of %s' % app, RELEASES_QUERY, dict(app=app, limit=int(limit)))
        if not data.get('app'):
            raise OpsError('Fly app %s not found' % app)
        nodes = ((data['app'].get('releasesUnprocessed') or {}).get('nodes')) or []
        releases = [release_entry(node) for node in nodes if node]
        return sorted(releases, key=lambda r: r['version'], reverse=True)


def release_entry(node):
    return dict(version=int(node.get('version')), status=node.get('status'), description=node.get('description'),
                reason=node.get('reason'), image_ref=node.get('imageRef'), created_at=node.get('createdAt'),
                user=(node.get('user') or {}).get('email'), stable=bool(node.get('stable')), id=node.get('id'))


# --------------------------------------------------------------------------- machines

def process_group(machine):
    return ((machine.get('config') or {}).get('metadata') or {}).get(PROCESS_GROUP_KEY) or DEFAULT_PROCESS_GROUP


def image_of(machine):
    """The image a Machine's config runs (what an update changes)."""
    return (machine.get('config') or {}).get('image') or ''


def image_version(image_ref):
    """The tag of an image ref ('' when it has none): the version the bot reports on /api/health."""
    name = (image_ref or '').split('@', 1)[0]
    return name.rsplit(':', 1)[1] if ':' in name.rsplit('/', 1)[-1] else ''


def machine_metadata(machine):
    return dict((machine.get('config') or {}).get('metadata') or {})


def machine_summary(machine):
    return dict(id=machine.get('id'), name=machine.get('name'), region=machine.get('region'),
                state=machine.get('state'), process_group=process_group(machine), image_ref=image_of(machine),
                instance_id=machine.get('instance_id'),
                config_version=machine.get('version') or machine.get('instance_id'),
                checks=[dict(name=c.get('name'), status=c.get('status')) for c in machine.get('checks') or []],
                metadata=machine_metadata(machine))


def images_running(machines):
    """{image: [machine ids]} in the order the images are first seen."""
    found = {}
    for machine in machines:
        found.setdefault(image_of(machine), []).append(machine['id'])
    return found


def mixed_warning(app, running):
    return ('the Machines of %s run different images (a half-finished deploy?): %s'
            % (app, '; '.join('%s on %s' % (image, ', '.join(ids)) for image, ids in running.items())))


def read_json(text):
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def newest_mark(machines, key):
    """The newest (by its `at`) JSON mark written under metadata key on any of the Machines, or None."""
    marks = [read_json(machine_metadata(m).get(key)) for m in machines]
    marks = [m for m in marks if m and (m.get('image') or m.get('to_image'))]
    return max(marks, key=lambda m: str(m.get('at') or '')) if marks else None


# --------------------------------------------------------------------------- resolving

def release_of_image(releases, image):
    """The newest release whose image is image, or None."""
    for entry in releases:
        if entry['image_ref'] and entry['image_ref'] == image:
            return entry
    return None


def current_image(releases, running):
    """The image the app runs: when the Machines disagree, the one of the newest release among them (a
    half-finished deploy counts as that deploy's, so `previous` is what ran before it), else the image
    most Machines run."""
    if not running:
        return None
    for entry in releases:
        if entry['image_ref'] in running:
            return entry['image_ref']
    return max(running, key=lambda image: len(running[image]))


def previous_release(releases, current):
    """The newest `complete` release older than current (a release entry or None) with another image."""
    older_than = current['release'] if current.get('release') is not None else None
    for entry in releases:
        if older_than is not None and entry['version'] >= older_than:
            continue
        if entry['status'] == 'complete' and entry['image_ref'] and entry['image_ref'] != current['image_ref']:
            return entry
    return None


def view(image, releases, entry=None):
    """A release view {id, label, version, images, image_ref, release} of an image."""
    if image is None:
        return None
    entry = entry if entry is not None else release_of_image(releases, image)
    version = entry['version'] if entry else None
    if version is None:
        return dict(id=image, label=image, version=image_version(image), images=[image], image_ref=image, release=None)
    return dict(id=version, label='v%s' % version, version=image_version(image), images=[image], image_ref=image,
                release=version)


def resolve(spec, image, releases, current, ledger, rolled_back):
    """(view of the target, why) for release spec (or an explicit image). Pure: releases newest first,
    current the view of what runs, ledger the last-stable mark ({image, release, at} or None),
    rolled_back the rollback marker ({from_image, to_image, at} or None). OpsError when it cannot be honoured."""
    if image is not None:
        return view(image, releases), 'the image named explicitly'
    spec = 'current' if spec is None else str(spec).strip()
    if spec == 'current':
        return current, 'the release the Machines run now'
    if spec == 'previous':
        return previous_target(releases, current, rolled_back)
    if spec == 'last_stable':
        return last_stable_target(releases, ledger)
    return named_target(spec, releases)


def previous_target(releases, current, rolled_back):
    if rolled_back and rolled_back.get('to_image') == current['image_ref']:
        return current, ('already rolled back from %s to %s; previous does not walk further back (name a '
                         'release to go further)' % (rolled_back.get('from_image'), rolled_back.get('to_image')))
    entry = previous_release(releases, current)
    if entry is None:
        raise OpsError('no complete release older than %s with another image to roll back to (known: %s)'
                       % (current['label'], known(releases)))
    return view(entry['image_ref'], releases, entry), 'the newest complete release older than %s' % current['label']


def last_stable_target(releases, ledger):
    if ledger:
        entry = next((r for r in releases if r['version'] == ledger.get('release')), None)
        return view(ledger['image'], releases, entry), 'the last release marked stable (Machine metadata %s, %s)' % (
            META_LAST_STABLE, ledger.get('at'))
    flagged = next((r for r in releases if r['stable'] and r['image_ref']), None)
    if flagged:
        return view(flagged['image_ref'], releases, flagged), 'the newest release Fly flags stable'
    raise OpsError('no release of this app is marked stable yet; use release: previous or name a version')


def named_target(spec, releases):
    text = spec[1:] if spec[:1] in ('v', 'V') else spec
    if not text.isdigit():
        raise OpsError('release must be current, previous, last_stable or a version number, got %r' % spec)
    entry = next((r for r in releases if r['version'] == int(text)), None)
    if entry is None:
        raise OpsError('release v%s does not exist (known, newest first: %s); nothing was changed'
                       % (text, known(releases)))
    if not entry['image_ref']:
        raise OpsError('release v%d has no image to deploy' % entry['version'])
    reason = 'named explicitly' if entry['status'] == 'complete' else 'named explicitly (its status is %s)' % entry['status']
    return view(entry['image_ref'], releases, entry), reason


def known(releases):
    return ', '.join('v%d %s' % (r['version'], r['status']) for r in releases[:10]) or 'none'


def matches(expected, release_view):
    """Whether an expected_current (an id or a label, as fly_release_info gives them) names release_view."""
    text = str(expected).strip()
    return text in (str(release_view['id']), release_view['label'], release_view['image_ref'])


# --------------------------------------------------------------------------- the app, read once

class AppView:
    """One app's process group, read once: its Machines, releases and ledger, and how a target resolves."""

    def __init__(self, machines_api, graphql, app, group, releases_limit=25):
        self.api = machines_api
        self.app = app
        self.group = group
        self.releases = graphql.releases(app, releases_limit)
        self.machines = [m for m in machines_api.machines() if process_group(m) == group]
        if not self.machines:
            raise OpsError('app %s has no Machines in process group %s; nothing was changed' % (app, group))
        self.running = images_running(self.machines)
        self.mixed = len(self.running) > 1
        self.current = view(current_image(self.releases, self.running), self.releases)
        self.ledger = newest_mark(self.machines, META_LAST_STABLE)
        self.rolled_back = newest_mark(self.machines, META_ROLLED_BACK)

    def resolve(self, spec, image=None):
        return resolve(spec, image, self.releases, self.current, self.ledger, self.rolled_back)

    def last_stable(self):
        try:
            return last_stable_target(self.releases, self.ledger)[0]
        except OpsError:
            return None

    def previous(self):
        entry = previous_release(self.releases, self.current)
        return view(entry['image_ref'], self.releases, entry) if entry else None

    def ledger_text(self):
        return 'Machine metadata %s on every Machine of process group %s of app %s' % (
            META_LAST_STABLE, self.group, self.app)

    def lock_name(self):
        return lock_name(self.app)


def defined_names(app, secret_names):
    """The variables the current release's Machines get: their config env set non-empty, and the app's secrets."""
    names = set(secret_names)
    for machine in app.machines:
        if image_of(machine) == app.current['image_ref']:
            names.update(name for name, value in ((machine.get('config') or {}).get('env') or {}).items() if value)
    return sorted(names)


def lock_name(app):
    return 'fly/%s' % app


def clients_for(task, sleep=None):
    """The Machines and GraphQL clients of a task's options (one transport, one token)."""
    transport = transport_for(task, sleep=sleep)
    params = task.params
    return (FlyMachines(transport, params.get('api_url') or API_URL, params['app']),
            FlyGraphQL(transport, params.get('graphql_url') or GRAPHQL_URL))


# --------------------------------------------------------------------------- fly_release_info

def release_info(task, clients=None):
    """fly_release_info's work (read only). clients: (FlyMachines, FlyGraphQL) stand-ins for tests."""
    params = task.params
    machines_api, graphql = clients or clients_for(task)
    app = AppView(machines_api, graphql, params['app'], params['process_group'], params['releases_limit'])
    target, reason = app.resolve(params['release'], params['image'])
    if app.mixed:
        task.warn(mixed_warning(app.app, app.running))
    try:
        secret_names = machines_api.secret_names()
    except OpsError as err:
        task.warn('the environment lists the Machines\' own variables only: %s' % err.msg)
        secret_names = []
    return dict(
        environment=dict(release=app.current['label'], defined=defined_names(app, secret_names)),
        changed=False, app=app.app, process_group=app.group,
        releases=[dict((k, v) for k, v in r.items() if k != 'id') for r in app.releases],
        machines=[machine_summary(m) for m in app.machines],
        mixed=app.mixed, images_running=app.running,
        current=app.current, previous=app.previous(), last_stable=app.last_stable(), target=target,
        changes=any(image_of(m) != target['image_ref'] for m in app.machines), reason=reason,
        ledger=app.ledger_text(), stable_mark=app.ledger, lock_name=app.lock_name(),
    )
