# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ECS release logic: inspect a service's releases, roll it to a revision, wait.

The modules' work functions, release(task) and release_info(task), build a botocore ECS client
from the task's options; everything below them takes an EcsService over a client (or a stub
with the same methods), so it can be unit tested without Ansible or AWS.

The release ledger lives in tags on the *service* (not the family): staging and
production services often share one task-definition family, and a revision that is
stable in staging is not thereby stable in production.
  hotelbot.ops/last-stable        family:revision last marked stable after verification
  hotelbot.ops/rollback           "family:A->family:B": the last `previous` rollback we did,
                                  so re-running `previous` does not walk further back
  hotelbot.ops/desired-count-before-scale
                                  the desired count before our last scale, for restore
The task definition itself also gets hotelbot.ops/stable=<timestamp> for people
browsing the console.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import datetime
import re
import time

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, Timer
from ansible_collections.hotelbot.ops.plugins.module_utils.duration import format_duration
# MASK and is_secret_name are re-exported: callers of ecs.py show and test environments with them.
from ansible_collections.hotelbot.ops.plugins.module_utils.masking import (  # pylint: disable=unused-import
    MASK, is_secret_name, mask_value, secret_parts)
from ansible_collections.hotelbot.ops.plugins.module_utils.option_specs import aws_argument_spec
from ansible_collections.hotelbot.ops.plugins.module_utils.aws import (
    AwsError,
    aws_error,
    aws_errors,
    client,
    endpoint_of,
    endpoint_secrets,
    error_code,
    not_aws_message,
)
from ansible_collections.hotelbot.ops.plugins.module_utils.poll import ROLLOUT, PollTimeout, poll

TAG_LAST_STABLE = 'hotelbot.ops/last-stable'
TAG_ROLLBACK = 'hotelbot.ops/rollback'
TAG_DESIRED_BEFORE = 'hotelbot.ops/desired-count-before-scale'
TAG_STABLE_ON_REVISION = 'hotelbot.ops/stable'

TD_ARN = re.compile(r'^arn:aws[a-z-]*:ecs:[^:]*:[0-9]*:task-definition/(?P<family>[^:]+):(?P<revision>[0-9]+)$')
SYMBOLIC_TARGETS = ('current', 'previous', 'last_stable')
# ECS's quota of tasks per service (Amazon ECS service quotas, "Tasks per service"); a count
# above it is a typo, and the sandbox's double would try to start that many tasks.
MAX_DESIRED_COUNT = 5000
# How long DescribeServices may keep failing transiently (5xx, throttling, connection
# errors, timeouts) during a wait before the wait gives up, by default. ECS's own API
# blips last seconds; an endpoint still down after two minutes needs a person.
DEFAULT_WAIT_OUTAGE_GRACE = 120
# What RegisterTaskDefinition accepts of a described task definition (tags come from
# DescribeTaskDefinition's include=['TAGS']); the rest (arn, revision, status,
# requiresAttributes, compatibilities, registered*/deregisteredAt) is read only.
REGISTER_FIELDS = ('family', 'taskRoleArn', 'executionRoleArn', 'networkMode', 'containerDefinitions', 'volumes',
                   'placementConstraints', 'requiresCompatibilities', 'cpu', 'memory', 'pidMode', 'ipcMode',
                   'proxyConfiguration', 'inferenceAccelerators', 'ephemeralStorage', 'runtimePlatform')


# --------------------------------------------------------------------------- naming

def parse_task_definition(ref):
    """(family, revision) from an ARN or 'family:revision'; revision None if absent."""
    match = TD_ARN.match(ref)
    if match:
        return match.group('family'), int(match.group('revision'))
    family, sep, revision = ref.rpartition(':')
    if sep and revision.isdigit():
        return family, int(revision)
    return ref, None


def revision_name(family, revision):
    return '%s:%d' % (family, revision)


def iso(value):
    """JSON-safe timestamp."""
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------- reading

def service_argument_spec(**extra):
    """The AWS options plus cluster and service, and a module's own options."""
    spec = aws_argument_spec()
    spec.update(cluster=dict(type='str', required=True), service=dict(type='str', required=True))
    spec.update(extra)
    return spec


class EcsService:
    """One ECS service and its task-definition family, read through a client."""

    def __init__(self, client, cluster, service):
        self.client = client
        self.cluster = cluster
        self.service = service
        self.endpoint = endpoint_of(client)

    def _call(self, doing, method, expect=(), **kwargs):
        """The answer of one ECS call; expect: keys of which an ECS answer has at least one.

        An answer without them (an HTML page answered 200, an empty body) did not come
        from ECS: saying "not found" about it would send the operator the wrong way.
        """
        try:
            answer = getattr(self.client, method)(**kwargs)
        except aws_errors() as err:
            code = error_code(err)
            if code == 'ClusterNotFoundException':
                raise OpsError('ECS cluster %r not found' % self.cluster)
            if code == 'ServiceNotFoundException':
                raise OpsError('ECS service %r not found in cluster %r' % (self.service, self.cluster))
            raise aws_error(err, doing, endpoint=self.endpoint)
        if expect and not (isinstance(answer, dict) and any(key in answer for key in expect)):
            raise AwsError(not_aws_message(self.endpoint, 'ECS', doing, 'the answer has no %s'
                                           % ' or '.join(expect)))
        return answer

    def describe(self):
        """The service (with tags). Fails clearly when it does not exist or is gone."""
        answer = self._call('DescribeServices for %s' % self.service, 'describe_services', expect=('services', 'failures'),
                            cluster=self.cluster, services=[self.service], include=['TAGS'])
        services = answer.get('services') or []
        if not services:
            reasons = ', '.join(f.get('reason', '?') for f in answer.get('failures') or [])
            raise OpsError('ECS service %r not found in cluster %r (%s)'
                           % (self.service, self.cluster, reasons or 'MISSING'))
        svc = services[0]
        if svc.get('status') != 'ACTIVE':
            raise OpsError('ECS service %r in cluster %r is %s, not ACTIVE'
                           % (self.service, self.cluster, svc.get('status')))
        return svc

    def revisions(self, family, statuses=('ACTIVE', 'INACTIVE')):
        """Revisions of exactly this family in the given statuses, newest first.

        ListTaskDefinitions documents familyPrefix as the full family name; ARNs are
        still filtered on the exact family in case an implementation prefix-matches.
        """
        found = {}
        for status in statuses:
            token = None
            while True:
                kwargs = dict(familyPrefix=family, status=status, sort='DESC')
                if token:
                    kwargs['nextToken'] = token
                page = self._call('ListTaskDefinitions for %s' % family, 'list_task_definitions',
                                  expect=('taskDefinitionArns',), **kwargs)
                for arn in page.get('taskDefinitionArns', []):
                    fam, rev = parse_task_definition(arn)
                    if fam == family and rev is not None:
                        found[rev] = dict(revision=rev, arn=arn, name=revision_name(fam, rev), status=status)
                token = page.get('nextToken')
                if not token:
                    break
        return [found[rev] for rev in sorted(found, reverse=True)]

    def task_definition(self, arn):
        answer = self._call('DescribeTaskDefinition %s' % arn, 'describe_task_definition', expect=('taskDefinition',),
                            taskDefinition=arn)
        return answer['taskDefinition']

    def task_definition_and_tags(self, arn):
        """(task definition, its tags as [{key, value}])."""
        answer = self._call('DescribeTaskDefinition %s' % arn, 'describe_task_definition', expect=('taskDefinition',),
                            taskDefinition=arn, include=['TAGS'])
        return answer['taskDefinition'], answer.get('tags') or []

    def register(self, request):
        answer = self._call('RegisterTaskDefinition for %s' % request.get('family'), 'register_task_definition',
                            expect=('taskDefinition',), **request)
        return answer['taskDefinition']

    def update(self, **kwargs):
        answer = self._call('UpdateService %s' % self.service, 'update_service', expect=('service',),
                            cluster=self.cluster, service=self.service, **kwargs)
        return answer['service']

    def tag(self, arn, tags):
        self._call('TagResource %s' % arn, 'tag_resource',
                   resourceArn=arn, tags=[dict(key=k, value=v) for k, v in tags.items()])


def tags_of(svc):
    return dict((t['key'], t['value']) for t in svc.get('tags') or [])


def primary_deployment(svc):
    for deployment in svc.get('deployments') or []:
        if deployment.get('status') == 'PRIMARY':
            return deployment
    return None


def summarize_deployment(deployment):
    return dict(
        id=deployment.get('id'),
        status=deployment.get('status'),
        task_definition=parse_and_name(deployment.get('taskDefinition')),
        rollout_state=deployment.get('rolloutState'),
        rollout_state_reason=deployment.get('rolloutStateReason'),
        desired_count=deployment.get('desiredCount'),
        running_count=deployment.get('runningCount'),
        pending_count=deployment.get('pendingCount'),
        failed_tasks=deployment.get('failedTasks'),
        created_at=iso(deployment.get('createdAt')),
        updated_at=iso(deployment.get('updatedAt')),
    )


def parse_and_name(ref):
    if not ref:
        return ref
    family, revision = parse_task_definition(ref)
    return revision_name(family, revision) if revision is not None else ref


def summarize_event(event):
    return dict(id=event.get('id'), created_at=iso(event.get('createdAt')), message=event.get('message'))


# --------------------------------------------------------------------------- resolving

def find_revision(revisions, revision):
    for entry in revisions:
        if entry['revision'] == revision:
            return entry
    return None


def previous_revision(revisions, current):
    """Newest ACTIVE revision older than current, or None."""
    for entry in revisions:
        if entry['revision'] < current and entry['status'] == 'ACTIVE':
            return entry
    return None


def last_stable_revision(family, revisions, tags):
    """The revision the ledger marks stable, or None if there is none (or it is gone)."""
    value = tags.get(TAG_LAST_STABLE)
    if not value:
        return None
    fam, rev = parse_task_definition(value)
    if fam != family or rev is None:
        return None
    return find_revision(revisions, rev)


def resolve_target(spec, family, current, revisions, tags):
    """Turn a revision spec into a revision entry plus why it was chosen.

    spec: 'current' | 'previous' | 'last_stable' | an integer | 'family:N' | an ARN.
    Raises OpsError with a plain message when the spec cannot be honoured.
    """
    spec = str(spec).strip()
    if spec == 'current':
        entry = find_revision(revisions, current) or dict(
            revision=current, name=revision_name(family, current), arn=None, status='UNKNOWN')
        return dict(entry, reason='the revision the service runs now')
    if spec == 'previous':
        return _previous_target(family, current, revisions, tags)
    if spec == 'last_stable':
        return _last_stable_target(family, revisions, tags)
    return _named_target(spec, family, revisions)


def _known(revisions):
    """The newest revisions, for a message saying what exists."""
    return ', '.join('%d%s' % (r['revision'], '' if r['status'] == 'ACTIVE' else ' (INACTIVE)')
                     for r in revisions[:10]) or 'none'


def _previous_target(family, current, revisions, tags):
    """The newest ACTIVE revision older than current, unless current is where our last rollback
    landed: re-running `previous` then stays (it does not walk back once more)."""
    origin, arrow, landed = tags.get(TAG_ROLLBACK, '').partition('->')
    if arrow and parse_task_definition(landed) == (family, current):
        entry = find_revision(revisions, current)
        if entry:
            return dict(entry, reason='already rolled back from %s to %s; previous does not walk '
                                      'further back (name a revision to go further)' % (origin, landed))
    entry = previous_revision(revisions, current)
    if entry is None:
        raise OpsError('no ACTIVE revision of %s older than %s to roll back to (known: %s)'
                       % (family, revision_name(family, current), _known(revisions)))
    return dict(entry, reason='the newest ACTIVE revision older than %s' % revision_name(family, current))


def _last_stable_target(family, revisions, tags):
    entry = last_stable_revision(family, revisions, tags)
    if entry is not None:
        return dict(_check_deployable(entry, family), reason='the last revision marked stable')
    marked = tags.get(TAG_LAST_STABLE)
    if marked:
        raise OpsError('the service marks %s as last stable, but that is not a revision of family %s'
                       % (marked, family))
    raise OpsError('no revision of %s is marked stable for this service yet; '
                   'use revision: previous or name a revision' % family)


def _named_target(spec, family, revisions):
    """A revision named by number, family:number or ARN; it must be of the service's family."""
    if spec.isdigit():
        rev = int(spec)
    else:
        fam, rev = parse_task_definition(spec)
        if rev is None:
            raise OpsError('revision must be current, previous, last_stable, a number, family:number '
                           'or a task definition ARN; got %r' % spec)
        if fam != family:
            raise OpsError('revision %s belongs to family %s, but the service runs family %s'
                           % (spec, fam, family))
    entry = find_revision(revisions, rev)
    if entry is None:
        raise OpsError('revision %d of family %s does not exist (known, newest first: %s)'
                       % (rev, family, _known(revisions)))
    return dict(_check_deployable(entry, family), reason='named explicitly')


def _check_deployable(entry, family):
    if entry['status'] != 'ACTIVE':
        raise OpsError('%s is %s (deregistered): ECS cannot deploy it; register it again or pick another'
                       % (entry['name'], entry['status']))
    return entry


# --------------------------------------------------------------------------- environment

def secret_values(task_definition):
    """Values that must never be printed, to register as no_log: secret-named environment values
    and the secrets inside any value (URL passwords, secret-named parameters; see masking.py)."""
    found = []
    for container in task_definition.get('containerDefinitions', []):
        for item in container.get('environment') or []:
            found.extend(secret_parts(item.get('name'), item.get('value')))
    return found


def environment(task_definition):
    """{container: {'environment': {NAME: masked}, 'secrets': {NAME: valueFrom}}}."""
    result = {}
    for container in task_definition.get('containerDefinitions', []):
        result[container.get('name')] = dict(
            image=container.get('image'),
            environment=dict((e['name'], mask_value(e['name'], e.get('value')))
                             for e in container.get('environment') or []),
            # valueFrom is a reference (SSM/Secrets Manager ARN), not the secret itself.
            secrets=dict((s['name'], s.get('valueFrom')) for s in container.get('secrets') or []),
        )
    return result


def environment_diff(old_td, new_td):
    """Per container: added / removed / changed variables, values masked."""
    def raw(td):
        return dict((c.get('name'), dict((e['name'], e.get('value')) for e in c.get('environment') or []))
                    for c in td.get('containerDefinitions', []))
    old, new = raw(old_td), raw(new_td)
    diff = {}
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name, {}), new.get(name, {})
        entry = dict(
            added=dict((k, mask_value(k, after[k])) for k in sorted(set(after) - set(before))),
            removed=dict((k, mask_value(k, before[k])) for k in sorted(set(before) - set(after))),
            changed=dict((k, {'from': mask_value(k, before[k]), 'to': mask_value(k, after[k])})
                         for k in sorted(set(before) & set(after)) if before[k] != after[k]),
        )
        if any(entry.values()):
            diff[name] = entry
    return diff


def images(task_definition):
    return [c.get('image') for c in task_definition.get('containerDefinitions', [])]


def image_version(image_refs):
    """The tag of the first image ('' when it has none): the version the bot reports."""
    first = (image_refs or [''])[0] or ''
    return first.rsplit(':', 1)[1] if ':' in first.rsplit('/', 1)[-1] else ''


def images_by_container(task_definition):
    return dict((c.get('name'), c.get('image')) for c in task_definition.get('containerDefinitions', []))


# --------------------------------------------------------------------------- new image

def _empty(value):
    return value is None or (isinstance(value, (list, dict, str)) and len(value) == 0)


def normalized(value):
    """A comparable form: empty values dropped, lists of named items (containers,
    environment, secrets) in name order."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = normalized(item)
            if not _empty(item):
                out[key] = item
        return out
    if isinstance(value, list):
        items = [normalized(item) for item in value]
        if items and all(isinstance(item, dict) and 'name' in item for item in items):
            items.sort(key=lambda item: str(item['name']))
        return items
    return value


def registration(task_definition, tags=None):
    """The RegisterTaskDefinition request that registers task_definition again.

    Read-only fields are dropped. Tags are copied except the stable mark (a new
    revision is not stable until verified) and AWS-reserved ones.
    """
    request = dict((key, copy.deepcopy(task_definition[key])) for key in REGISTER_FIELDS
                   if not _empty(task_definition.get(key)))
    kept = [dict(key=t['key'], value=t.get('value', '')) for t in tags or []
            if t.get('key') != TAG_STABLE_ON_REVISION and not str(t.get('key', '')).startswith('aws:')]
    if kept:
        request['tags'] = kept
    return request


def comparable(request_or_td):
    """What must be equal for two task definitions to be the same release (tags aside)."""
    return normalized(dict((key, request_or_td.get(key)) for key in REGISTER_FIELDS))


def pick_container(task_definition, container, name):
    """The container to put the image in: the named one, or the only one."""
    names = [c.get('name') for c in task_definition.get('containerDefinitions', [])]
    if container is not None:
        if container not in names:
            raise OpsError('%s has no container %r (containers: %s)' % (name, container, ', '.join(names) or 'none'))
        return container
    if len(names) == 1:
        return names[0]
    raise OpsError('%s has %d containers (%s): set container to the one that gets the image'
                   % (name, len(names), ', '.join(names) or 'none'))


def image_plan(ecs, svc, family, current, base, revisions, image, container=None, hide=lambda *values: None):
    """Decide how to run base with image in container.

    Returns dict(action='running'|'reuse'|'register', entry (None for register),
    request (the RegisterTaskDefinition request), base, container, image, images).
    A revision identical to the wanted one (the running one, else the newest ACTIVE one)
    is used instead of registering a duplicate: a re-run after a timeout registers nothing.
    """
    base_arn = base['arn'] or svc['taskDefinition']
    base_td, base_tags = ecs.task_definition_and_tags(base_arn)
    hide(*secret_values(base_td))
    name = pick_container(base_td, container, base['name'])
    request = registration(base_td, base_tags)
    for definition in request.get('containerDefinitions', []):
        if definition.get('name') == name:
            definition['image'] = image
    plan = dict(action='register', entry=None, request=request, base=base['name'], container=name, image=image,
                images=images(request))
    wanted = comparable(request)
    known = {base_arn: base_td}

    def described(arn):
        if arn not in known:
            known[arn] = ecs.task_definition(arn)
            hide(*secret_values(known[arn]))
        return known[arn]

    plan['current_td'] = described(svc['taskDefinition'])
    if comparable(plan['current_td']) == wanted:
        entry = find_revision(revisions, current) or dict(
            revision=current, name=revision_name(family, current), arn=svc['taskDefinition'], status='UNKNOWN')
        reason = '%s already runs %s (%s with that image)' % (ecs.service, image, base['name'])
        plan.update(action='running', entry=dict(entry, reason=reason))
        return plan
    newest = next((r for r in revisions if r['status'] == 'ACTIVE'), None)
    if newest is not None and comparable(described(newest['arn'])) == wanted:
        plan.update(action='reuse', entry=dict(newest, reason='%s is already %s with image %s; reused, not registered '
                                                              'again' % (newest['name'], base['name'], image)))
    return plan


# --------------------------------------------------------------------------- info

def release_info(task, service=None):
    """ecs_release_info's work: everything an operator needs before touching the service (read
    only). service stands in for ECS in tests."""
    params = task.params
    view = ServiceView(service or service_for(task), task.hide)
    result = view.overview(params['events_limit'])
    if params['target'] is not None:
        result['target'] = view.target(params['target'])
    if params['environment_of'] is not None:
        result['environment'] = view.environment_of(params['environment_of'])
    if params['diff_from'] is not None or params['diff_to'] is not None:
        result['environment_diff'] = view.environment_diff(params['diff_from'] or 'current',
                                                           params['diff_to'] or 'current')
    return result


class ServiceView:
    """A service, its family's revisions and its ledger, read once; each task definition is
    described once and its secrets hidden before anything of it can be shown."""

    def __init__(self, ecs, hide):
        self.ecs = ecs
        self.svc = ecs.describe()
        self.family, self.current = parse_task_definition(self.svc['taskDefinition'])
        self.revisions = ecs.revisions(self.family)
        self.tags = tags_of(self.svc)
        self._hide = hide
        self._definitions = {}

    def resolve(self, spec):
        return resolve_target(spec, self.family, self.current, self.revisions, self.tags)

    def definition(self, entry=None):
        """The task definition of a resolved entry (None: the one the service runs)."""
        arn = self.svc['taskDefinition'] if entry is None or entry['revision'] == self.current else entry['arn']
        if arn not in self._definitions:
            self._definitions[arn] = self.ecs.task_definition(arn)
            self._hide(*secret_values(self._definitions[arn]))
        return self._definitions[arn]

    def overview(self, events_limit):
        svc, family, current = self.svc, self.family, self.current
        return dict(
            changed=False,
            cluster=self.ecs.cluster,
            service=dict(
                name=svc.get('serviceName'), arn=svc.get('serviceArn'), status=svc.get('status'),
                desired_count=svc.get('desiredCount'), running_count=svc.get('runningCount'),
                pending_count=svc.get('pendingCount'),
            ),
            family=family,
            current=with_version(dict(revision=current, name=revision_name(family, current),
                                      arn=svc['taskDefinition'], images=images(self.definition()))),
            revisions=self.revisions,
            previous=previous_revision(self.revisions, current),
            last_stable=last_stable_revision(family, self.revisions, self.tags),
            ledger=dict((k, v) for k, v in self.tags.items() if k.startswith('hotelbot.ops/')),
            deployments=[summarize_deployment(d) for d in svc.get('deployments') or []],
            events=[summarize_event(e) for e in (svc.get('events') or [])[:events_limit]],
        )

    def target(self, spec):
        entry = self.resolve(spec)
        return with_version(dict(entry, images=images(self.definition(entry)), changes=entry['revision'] != self.current))

    def environment_of(self, spec):
        entry = self.resolve(spec)
        containers = environment(self.definition(entry))
        return dict(revision=entry['name'], containers=containers, defined=defined_names(containers))

    def environment_diff(self, from_spec, to_spec):
        old, new = self.resolve(from_spec), self.resolve(to_spec)
        return dict(from_revision=old['name'], to_revision=new['name'],
                    containers=environment_diff(self.definition(old), self.definition(new)))


def with_version(revision):
    revision['version'] = image_version(revision['images'])
    return revision


def defined_names(containers):
    """The variables a revision sets, over its containers: a non-empty value, or a secret reference."""
    names = []
    for container in containers.values():
        names.extend(name for name, value in container['environment'].items() if value)
        names.extend(container['secrets'])
    return names


# --------------------------------------------------------------------------- release

def service_for(task):
    """The EcsService the task's cluster and service options name, through a client of its AWS options."""
    params = task.params
    task.hide(*endpoint_secrets(params['endpoint_url']))
    return EcsService(client(params, 'ecs'), params['cluster'], params['service'])


def release(task, service=None, sleep=time.sleep, clock=time.monotonic):
    """ecs_release's work: roll the service to the revision option, scale it, wait for it, mark it
    stable; returns the result dict. service, sleep and clock stand in for ECS and time in tests."""
    check_image_options(task.params)
    return Release(task, service or service_for(task), sleep, clock).run()


def check_image_options(params):
    """What the spec cannot say about image: not blank, and not with force_new_deployment: true
    (false may be given with it; playbooks pass the flag always)."""
    if params['image'] is None:
        return
    if not params['image'].strip():
        raise OpsError('image must not be empty')
    if params['force_new_deployment']:
        raise OpsError('image and force_new_deployment are mutually exclusive: image already deploys a new '
                       'revision (force_new_deployment only redeploys the same one)')


def check_desired_count(count, what):
    """Refuse a count ECS would refuse (or, in the sandbox, try to start); for counts the spec
    does not see, like the one remembered in the ledger."""
    if not 0 <= count <= MAX_DESIRED_COUNT:
        raise OpsError('%s must be between 0 and %d (ECS runs at most %d tasks per service), got %d'
                       % (what, MAX_DESIRED_COUNT, MAX_DESIRED_COUNT, count))


class Release:
    """One run of ecs_release. run() lists the steps in order; each is a method below it and leaves
    on self what the later ones need."""

    def __init__(self, task, ecs, sleep, clock):
        self.task = task
        self.params = task.params
        self.ecs = ecs
        self.sleep = sleep
        self.clock = clock
        self.image = None if self.params['image'] is None else self.params['image'].strip()
        # Service events older than this run are not reported as the run's.
        self.started_at = datetime.datetime.now(datetime.timezone.utc)

    def run(self):
        self.read_service()
        self.guard_expected_current()
        self.resolve_target()
        self.plan_image()
        self.plan_changes()
        self.guard_mark_stable()
        self.register_image()
        self.settle_target()
        result = self.planned_result()
        if self.task.check_mode:
            return dict(result, deployment_started=self.deploy, marked_stable=self.mark)
        self.apply(result)
        self.wait(result)
        self.mark_stable(result)
        return result

    def read_service(self):
        self.svc = self.ecs.describe()
        self.family, self.current = parse_task_definition(self.svc['taskDefinition'])
        self.tags = tags_of(self.svc)

    def guard_expected_current(self):
        expected = self.params['expected_current']
        if expected is not None and self.current != expected:
            raise OpsError('%s runs %s, not the expected %s: nothing changed (did someone else move it?)' % (
                self.ecs.service, revision_name(self.family, self.current), revision_name(self.family, expected)))

    def resolve_target(self):
        """Only ACTIVE revisions can be deployed; INACTIVE ones are listed (one more call) only to
        say precisely why a named target was refused."""
        try:
            self.revisions = self.ecs.revisions(self.family, statuses=('ACTIVE',))
            self.target = self._resolve()
        except OpsError:
            self.revisions = self.ecs.revisions(self.family)
            self.target = self._resolve()

    def _resolve(self):
        return resolve_target(self.params['revision'], self.family, self.current, self.revisions, self.tags)

    def plan_image(self):
        """With image, the target so far is the base: the revision to run is one of the family with
        image in it, an existing one when there is one, else one to register."""
        self.plan = None
        if self.image is None:
            return
        self.plan = image_plan(self.ecs, self.svc, self.family, self.current, self.target, self.revisions,
                               self.image, container=self.params['container'], hide=self.task.hide)
        would = 'would register a new revision of %s from %s with image %s' % (self.family, self.plan['base'], self.image)
        self.target = self.plan['entry'] or dict(revision=None, arn=None, name=None, status=None, reason=would)

    def plan_changes(self):
        self.desired_before = self.svc.get('desiredCount')
        self.desired_after = self._desired_count()
        self.scale = self.desired_after != self.desired_before
        self.deploy = self.target['revision'] != self.current or self.params['force_new_deployment']

    def _desired_count(self):
        if self.params['restore_desired_count']:
            return self._remembered_count()
        if self.params['desired_count'] is not None:
            return self.params['desired_count']
        return self.desired_before

    def _remembered_count(self):
        remembered = self.tags.get(TAG_DESIRED_BEFORE)
        if remembered is None or not str(remembered).isdigit():
            raise OpsError('restore_desired_count: no remembered desired count on service %s '
                           '(it is set when this module scales the service)' % self.ecs.service)
        check_desired_count(int(remembered), 'restore_desired_count: the count remembered in tag %s on service %s'
                            % (TAG_DESIRED_BEFORE, self.ecs.service))
        return int(remembered)

    def guard_mark_stable(self):
        if self.params['mark_stable'] and not self.params['wait'] and (self.deploy or self.scale):
            raise OpsError('mark_stable needs wait: true when a deployment is started '
                           '(a revision is only stable once it has rolled out)')

    def register_image(self):
        """Register the planned revision (not in check mode: there the target has no number yet)."""
        self.registered = None
        if self.plan is None or self.plan['entry'] is not None or self.task.check_mode:
            return
        new_td = self.ecs.register(self.plan['request'])
        self.task.hide(*secret_values(new_td))
        family, revision = parse_task_definition(new_td['taskDefinitionArn'])
        self.registered = revision_name(family, revision)
        self.target = dict(revision=revision, arn=new_td['taskDefinitionArn'], name=self.registered, status='ACTIVE',
                           reason='registered from %s with image %s' % (self.plan['base'], self.image))

    def settle_target(self):
        """The target's ARN, its name in the ledger, and whether a deployment of it already rolls."""
        target, svc = self.target, self.svc
        self.target_arn = target['arn'] or (svc['taskDefinition'] if target['revision'] is not None else None)
        if target['revision'] is None:
            self.stable_mark = '(new revision of %s)' % self.family   # check mode: not registered yet
        else:
            self.stable_mark = revision_name(self.family, target['revision'])
        self.mark = self.params['mark_stable'] and self.tags.get(TAG_LAST_STABLE) != self.stable_mark
        # A deployment of the target that is already rolling (e.g. the run that started it
        # lost contact with ECS) is waited on, not started again.
        self.primary = primary_deployment(svc) or {}
        self.in_flight = (self.target_arn is not None and self.primary.get('taskDefinition') == self.target_arn
                          and self.primary.get('rolloutState') == 'IN_PROGRESS')

    def planned_result(self):
        """The result before anything is sent; apply and wait fill in the deployment."""
        target, force = self.target, self.params['force_new_deployment']
        result = dict(
            changed=bool(self.deploy or self.scale or self.mark), cluster=self.ecs.cluster, service=self.ecs.service,
            from_revision=dict(name=revision_name(self.family, self.current), revision=self.current,
                               arn=self.svc['taskDefinition']),
            to_revision=dict(name=target['name'] if target['revision'] is None else self.stable_mark,
                             revision=target['revision'], arn=self.target_arn, reason=target['reason'],
                             images=self._target_images()),
            registered=self.registered,
            desired_count=dict(before=self.desired_before, after=self.desired_after),
            previous_desired_count=self.desired_before,
            deployment_id=self.primary.get('id') if self.in_flight and not force else None,
            rollout_state=self.primary.get('rolloutState'),
            deployment_started=False, marked_stable=False, events=[], waited_s=0.0,
            diff=self._diff(),
        )
        if self.plan is not None:
            result['msg'] = target['reason']
        return result

    def _target_images(self):
        if self.plan is not None:
            return self.plan['images']
        if self.target['revision'] == self.current:
            return images(self.ecs.task_definition(self.svc['taskDefinition']))
        return images(self.ecs.task_definition(self.target_arn))

    def _diff(self):
        before = dict(revision=revision_name(self.family, self.current), desired_count=self.desired_before,
                      last_stable=self.tags.get(TAG_LAST_STABLE))
        after = dict(before, revision=self.stable_mark, desired_count=self.desired_after,
                     last_stable=self.stable_mark if self.params['mark_stable'] else before['last_stable'])
        if self.plan is not None:
            # Images only: container definitions carry the environment (secrets).
            before['images'] = images_by_container(self.plan['current_td'])
            after['images'] = images_by_container(self.plan['request'])
        return dict(before=before, after=after)

    def apply(self, result):
        """Write the ledger, then send UpdateService."""
        if not (self.deploy or self.scale):
            return
        try:
            ledger = self._ledger()
            if ledger:
                self.ecs.tag(self.svc['serviceArn'], ledger)
            updated = self.ecs.update(**self._update_request())
        except OpsError as err:
            if self.registered is None:
                raise
            raise _failure('%s (%s was registered; a re-run deploys it without registering another)'
                           % (err.msg, self.registered), dict(result, changed=True))
        if self.deploy:
            # A scale alone starts no deployment: the PRIMARY one just changes its count.
            started = primary_deployment(updated) or {}
            result.update(deployment_id=started.get('id'), rollout_state=started.get('rolloutState'))
        result['deployment_started'] = self.deploy

    def _ledger(self):
        """Tags to write before the update. A rollback is recorded first: if we die after the update,
        a re-run of `previous` still knows it happened and does not walk back a second revision."""
        ledger = {}
        if self.target['revision'] < self.current:
            ledger[TAG_ROLLBACK] = '%s->%s' % (revision_name(self.family, self.current), self.stable_mark)
        if self.scale and not self.params['restore_desired_count']:
            ledger[TAG_DESIRED_BEFORE] = str(self.desired_before)
        return ledger

    def _update_request(self):
        request = {}
        if self.deploy:
            request.update(taskDefinition=self.target_arn, forceNewDeployment=bool(self.params['force_new_deployment']))
        if self.scale:
            request['desiredCount'] = self.desired_after
        return request

    def wait(self, result):
        if not self.params['wait'] or not (self.deploy or self.scale or self.in_flight):
            return
        watch = RolloutWatch(self.ecs, result, self.target_arn, self.started_at, self.params['wait_outage_grace'],
                             self.clock)
        timer = Timer(self.clock)
        try:
            watch.wait(self.params['wait_timeout'], self.sleep, self.task.progress)
        except OpsError as err:
            err.result['waited_s'] = timer.elapsed()   # a failed wait says how long it waited, too
            raise
        result['waited_s'] = timer.elapsed()

    def mark_stable(self, result):
        if not self.mark:
            return
        self.ecs.tag(self.svc['serviceArn'], {TAG_LAST_STABLE: self.stable_mark})
        self.ecs.tag(self.target_arn, {TAG_STABLE_ON_REVISION: now_iso()})
        result['marked_stable'] = True


# --------------------------------------------------------------------------- the wait

class RolloutWatch:
    """The wait for the deployment of a release result (or, when it has none, its scale) to settle.

    Polls DescribeServices on poll.ROLLOUT; ECS's ServicesStable waiter is not used, it reports a
    circuit-breaker rollback as success. One DescribeServices is already retried by botocore; a
    transient failure left after that (AwsError.transient: 5xx, throttling, connection errors,
    timeouts) does not end the wait: polling goes on until the deadline, or until ECS has failed
    for outage_grace seconds without one good answer. Any other error ends the wait at once.
    """

    def __init__(self, ecs, result, target_arn, started_at, outage_grace, clock):
        self.ecs = ecs
        self.result = result
        self.deployment_id = result['deployment_id']
        self.target_arn = target_arn
        self.started_at = started_at
        self.outage_grace = outage_grace
        self.clock = clock
        self.seen = set()     # ids of the events already in the result
        self.svc = None       # the last answer
        self.error = None     # the failure of the last poll, when it failed
        self.outage = None    # a Timer since the first failed poll of a run of them

    def wait(self, timeout, sleep, progress):
        try:
            poll(self.probe, timeout, backoff=ROLLOUT, sleep=lambda pause: sleep(self._pause(pause)),
                 progress=lambda waited: progress(self.progress_line(waited)), clock=self.clock)
        except PollTimeout:
            raise self.timed_out(timeout)

    def _pause(self, pause):
        """A pause ends when the outage grace does, so that a lost contact is called on time."""
        if self.outage is None:
            return pause
        return max(0.0, min(pause, self.outage.remaining(self.outage_grace)))

    def probe(self, deadline):
        """'done' once settled, None while not; raises when the wait has to end otherwise."""
        del deadline  # the deadline is poll's to keep
        try:
            svc = self.ecs.describe()
        except OpsError as err:
            return self._failed_poll(err)
        self.svc, self.error, self.outage = svc, None, None
        self.result['events'].extend(_new_events(svc, self.seen, self.started_at))
        return self._outcome(svc)

    def _failed_poll(self, err):
        if not getattr(err, 'transient', False):
            raise _failure('cannot follow %s: %s; the update was sent, re-run to converge once that is fixed'
                           % (self.waiting_for(), err.msg), self.result)
        self.error = err
        self.outage = self.outage or Timer(self.clock)
        if self.outage.remaining(self.outage_grace) <= 0:
            raise _failure('lost contact with ECS for %.0fs (longer than wait_outage_grace, %ss) while waiting for '
                           '%s (%s); the update was sent, re-run to converge'
                           % (self.outage.elapsed(), self.outage_grace, self.waiting_for(), err.msg), self.result)
        return None

    def _outcome(self, svc):
        if not self.deployment_id:
            # Scale only: done when the tasks have settled on the desired count.
            return 'done' if _settled(svc) else None
        outcome, detail = deployment_outcome(svc, self.deployment_id, self.target_arn)
        self.result['rollout_state'] = (detail or {}).get('rolloutState')
        if outcome == 'done':
            return outcome if _settled(svc) else None
        if outcome is None:
            return None
        raise self._deployment_failed(outcome, detail, svc)

    def _deployment_failed(self, outcome, detail, svc):
        deployment, target = self.deployment_id, parse_and_name(self.target_arn)
        if outcome == 'failed':
            return _failure('deployment %s of %s FAILED: %s' % (deployment, target, detail.get('rolloutStateReason')),
                            self.result)
        if outcome == 'rolled_back':
            back_to = parse_and_name((primary_deployment(svc) or {}).get('taskDefinition'))
            return _failure('deployment %s of %s failed and ECS rolled the service back to %s by itself '
                            '(circuit breaker): %s' % (deployment, target, back_to,
                                                       failure_reason(detail, self.result['events'], deployment)),
                            self.result, rolled_back_to=back_to)
        return _failure('deployment %s was superseded by deployment %s (someone else updated %s)'
                        % (deployment, detail.get('id'), self.ecs.service), self.result)

    def waiting_for(self):
        if self.deployment_id:
            return 'deployment %s of %s on %s' % (self.deployment_id, parse_and_name(self.target_arn), self.ecs.service)
        return '%s to run %s tasks' % (self.ecs.service, self.result['desired_count']['after'])

    def timed_out(self, timeout):
        if self.error is not None:
            return _failure('timed out after %ss waiting for %s: ECS has not answered for the last %.0fs (%s); '
                            'the update was sent, re-run to converge'
                            % (timeout, self.waiting_for(), self.outage.elapsed(), self.error.msg), self.result)
        svc = self.svc or {}
        primary = primary_deployment(svc) or {}
        return _failure('timed out after %ss waiting for %s: deployment %s is %s, %s of %s tasks running'
                        % (timeout, self.ecs.service, primary.get('id'), primary.get('rolloutState'),
                           svc.get('runningCount'), svc.get('desiredCount')), self.result)

    def progress_line(self, waited):
        """What the wait is at, for a line every ~10 s on the controller."""
        waited = format_duration(waited)
        if self.error is not None:
            return '%s: no answer from ECS for %s (%s), waited %s' % (
                self.waiting_for(), format_duration(self.outage.elapsed()), self.error.msg, waited)
        svc = self.svc or {}
        if not self.deployment_id:
            return '%s: %s of %s tasks running, waited %s' % (
                self.ecs.service, svc.get('runningCount'), svc.get('desiredCount'), waited)
        deployments = svc.get('deployments') or []
        mine = next((d for d in deployments if d.get('id') == self.deployment_id), {})
        draining = sum(d.get('runningCount') or 0 for d in deployments if d.get('id') != self.deployment_id)
        return 'deployment %s %s: %s of %s tasks running%s, waited %s' % (
            self.deployment_id, mine.get('rolloutState'), mine.get('runningCount'), mine.get('desiredCount'),
            ' (%d old still running)' % draining if draining else '', waited)


def _settled(svc):
    """One deployment left, running what is desired (ECS keeps an old deployment listed while its
    tasks drain, after the new one COMPLETED)."""
    return len(svc.get('deployments') or []) == 1 and svc.get('runningCount') == svc.get('desiredCount')


def _new_events(svc, seen, since):
    fresh = []
    for event in svc.get('events') or []:
        created = event.get('createdAt')
        if event.get('id') in seen:
            continue
        if isinstance(created, datetime.datetime) and since and created < since:
            continue
        seen.add(event.get('id'))
        fresh.append(summarize_event(event))
    return fresh


def deployment_outcome(svc, deployment_id, target_arn):
    """('done'|'failed'|'rolled_back'|'superseded'|None, detail) for one deployment.

    None means still in progress. Deployments without rolloutState (older ECS or
    external controllers) count as done when they are alone and fully running.
    """
    deployments = svc.get('deployments') or []
    mine = next((d for d in deployments if d.get('id') == deployment_id), None)
    primary = primary_deployment(svc) or {}
    if mine is None:
        if primary.get('taskDefinition') != target_arn:
            return 'rolled_back', None
        return 'superseded', primary
    state = mine.get('rolloutState')
    if state == 'FAILED':
        if primary.get('id') != deployment_id and primary.get('taskDefinition') != target_arn:
            return 'rolled_back', mine
        return 'failed', mine
    if state == 'COMPLETED':
        return 'done', mine
    if state is None and len(deployments) == 1 and mine.get('runningCount') == mine.get('desiredCount'):
        return 'done', mine
    return None, mine


def failure_reason(deployment, events, deployment_id):
    """Why a deployment failed: its own reason, else the event that said so.

    A rollback that completed quickly removes the failed deployment from the service,
    so the reason may survive only in the events.
    """
    if deployment and deployment.get('rolloutStateReason'):
        return deployment['rolloutStateReason']
    for event in reversed(events):
        message = event.get('message') or ''
        if deployment_id in message and 'fail' in message:
            return message
    return 'the deployment is no longer listed'


def _failure(msg, result, **extra):
    """An OpsError that carries what was done so far (result) to the user."""
    fields = dict(result, **extra)
    changed = fields.pop('changed')
    fields.pop('msg', None)
    return OpsError(msg, changed=changed, **fields)
