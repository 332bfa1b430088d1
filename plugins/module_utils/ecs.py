# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ECS release logic: inspect a service's releases, roll it to a revision, wait.

Everything here takes a botocore ECS client (or a stub with the same methods), so it
can be unit tested without Ansible or AWS.

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
# MASK and is_secret_name are re-exported: callers of ecs.py show and test environments with them.
from ansible_collections.hotelbot.ops.plugins.module_utils.masking import (  # pylint: disable=unused-import
    MASK, is_secret_name, mask_value, secret_parts)
from ansible_collections.hotelbot.ops.plugins.module_utils.aws import (
    AwsError,
    aws_argument_spec,
    aws_error,
    aws_errors,
    client,
    endpoint_of,
    error_code,
    not_aws_message,
)

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


def service_of(module):
    """The EcsService a module's cluster/service options name."""
    return EcsService(client(module, 'ecs'), module.params['cluster'], module.params['service'])


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
    known = ', '.join('%d%s' % (r['revision'], '' if r['status'] == 'ACTIVE' else ' (INACTIVE)')
                      for r in revisions[:10]) or 'none'
    if spec == 'current':
        entry = find_revision(revisions, current) or dict(
            revision=current, name=revision_name(family, current), arn=None, status='UNKNOWN')
        return dict(entry, reason='the revision the service runs now')
    if spec == 'previous':
        rollback = tags.get(TAG_ROLLBACK, '')
        origin, arrow, landed = rollback.partition('->')
        if arrow and parse_task_definition(landed) == (family, current):
            entry = find_revision(revisions, current)
            if entry:
                return dict(entry, reason='already rolled back from %s to %s; previous does not walk '
                                          'further back (name a revision to go further)' % (origin, landed))
        entry = previous_revision(revisions, current)
        if entry is None:
            raise OpsError('no ACTIVE revision of %s older than %s to roll back to (known: %s)'
                           % (family, revision_name(family, current), known))
        return dict(entry, reason='the newest ACTIVE revision older than %s' % revision_name(family, current))
    if spec == 'last_stable':
        entry = last_stable_revision(family, revisions, tags)
        if entry is None:
            marked = tags.get(TAG_LAST_STABLE)
            if marked:
                raise OpsError('the service marks %s as last stable, but that is not a revision of family %s'
                               % (marked, family))
            raise OpsError('no revision of %s is marked stable for this service yet; '
                           'use revision: previous or name a revision' % family)
        return dict(_check_deployable(entry, family), reason='the last revision marked stable')
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
        raise OpsError('revision %d of family %s does not exist (known, newest first: %s)' % (rev, family, known))
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

def release_info(ecs, target=None, environment_of=None, diff_from=None, diff_to=None,
                 events_limit=10, hide=lambda *values: None):
    """Everything an operator needs before touching the service (read only)."""
    if events_limit < 0:
        raise OpsError('events_limit must be 0 or more, got %d' % events_limit)
    svc = ecs.describe()
    family, current = parse_task_definition(svc['taskDefinition'])
    revisions = ecs.revisions(family)
    tags = tags_of(svc)
    current_td = ecs.task_definition(svc['taskDefinition'])
    hide(*secret_values(current_td))
    previous = previous_revision(revisions, current)
    result = dict(
        changed=False,
        cluster=ecs.cluster,
        service=dict(
            name=svc.get('serviceName'), arn=svc.get('serviceArn'), status=svc.get('status'),
            desired_count=svc.get('desiredCount'), running_count=svc.get('runningCount'),
            pending_count=svc.get('pendingCount'),
        ),
        family=family,
        current=dict(revision=current, name=revision_name(family, current),
                     arn=svc['taskDefinition'], images=images(current_td)),
        revisions=revisions,
        previous=previous,
        last_stable=last_stable_revision(family, revisions, tags),
        ledger=dict((k, v) for k, v in tags.items() if k.startswith('hotelbot.ops/')),
        deployments=[summarize_deployment(d) for d in svc.get('deployments') or []],
        events=[summarize_event(e) for e in (svc.get('events') or [])[:events_limit]],
    )
    if target is not None:
        entry = resolve_target(target, family, current, revisions, tags)
        target_td = current_td if entry['revision'] == current else ecs.task_definition(entry['arn'])
        hide(*secret_values(target_td))
        result['target'] = dict(entry, images=images(target_td), changes=entry['revision'] != current)
    if environment_of is not None:
        entry = resolve_target(environment_of, family, current, revisions, tags)
        td = current_td if entry['revision'] == current else ecs.task_definition(entry['arn'])
        hide(*secret_values(td))
        result['environment'] = dict(revision=entry['name'], containers=environment(td))
    if diff_from is not None or diff_to is not None:
        old = resolve_target(diff_from or 'current', family, current, revisions, tags)
        new = resolve_target(diff_to or 'current', family, current, revisions, tags)
        old_td, new_td = ecs.task_definition(old['arn']), ecs.task_definition(new['arn'])
        hide(*(secret_values(old_td) + secret_values(new_td)))
        result['environment_diff'] = dict(
            from_revision=old['name'], to_revision=new['name'], containers=environment_diff(old_td, new_td))
    return result


# --------------------------------------------------------------------------- release

class Waiter:
    """Polls DescribeServices with backoff (fast first, gentle later) until a deadline.

    One DescribeServices is already retried by botocore; a transient failure left after
    that (AwsError.transient: 5xx, throttling, connection errors, timeouts) does not end
    the wait: polling goes on with the same backoff, until the deadline or until the
    endpoint has failed for outage_grace seconds without one good answer. Any other error
    (access denied, the service gone) ends the wait at once.
    """

    def __init__(self, ecs, timeout, first_delay=0.25, max_delay=5.0, sleep=time.sleep, clock=time.monotonic,
                 outage_grace=DEFAULT_WAIT_OUTAGE_GRACE):
        self.ecs = ecs
        self.timeout = timeout
        self.outage_grace = outage_grace
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.clock = clock

    def _poll(self, done, describe_failed, timed_out):
        """Call done(svc) until it returns a result; it may raise OpsError to stop.

        describe_failed(err, outage_s) builds the error when DescribeServices fails for
        good (outage_s None: at once, not transient); timed_out(svc, err, outage_s) when the
        deadline passes (svc: the last answer, or None; err: the failure of the last poll).
        """
        timer = Timer(self.clock)
        delay = self.first_delay
        svc, outage = None, None   # outage: a Timer since the first failed poll of a run of them
        while True:
            try:
                svc = self.ecs.describe()
            except OpsError as err:
                if not getattr(err, 'transient', False):
                    raise describe_failed(err, None)
                outage = outage or Timer(self.clock)
                if outage.remaining(self.outage_grace) <= 0:
                    raise describe_failed(err, outage.elapsed())
                if timer.remaining(self.timeout) <= 0:
                    raise timed_out(svc, err, outage.elapsed())
                pause = min(delay, timer.remaining(self.timeout), outage.remaining(self.outage_grace))
            else:
                outage = None
                outcome = done(svc)
                if outcome is not None:
                    return outcome
                if timer.remaining(self.timeout) <= 0:
                    raise timed_out(svc, None, None)
                pause = min(delay, timer.remaining(self.timeout))
            self.sleep(max(pause, 0))
            delay = min(delay * 1.6, self.max_delay)


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


def check_desired_count(count, what):
    """Refuse a count ECS would refuse (or, in the sandbox, try to start)."""
    if not 0 <= count <= MAX_DESIRED_COUNT:
        raise OpsError('%s must be between 0 and %d (ECS runs at most %d tasks per service), got %d'
                       % (what, MAX_DESIRED_COUNT, MAX_DESIRED_COUNT, count))


def check_wait(wait_timeout, wait_outage_grace):
    if wait_timeout < 1:
        raise OpsError('wait_timeout must be at least 1 second, got %s' % wait_timeout)
    if wait_outage_grace < 0:
        raise OpsError('wait_outage_grace must be 0 or more seconds, got %s' % wait_outage_grace)


def release(ecs, spec, force_new_deployment=False, desired_count=None, restore_desired_count=False,
            mark_stable=False, wait=True, wait_timeout=600, check_mode=False, expected_current=None,
            hide=lambda *values: None, waiter=None, clock=time.time, image=None, container=None,
            wait_outage_grace=DEFAULT_WAIT_OUTAGE_GRACE):
    """Roll the service to spec, scale it, wait for it, mark it stable. Returns the result dict.

    With image, spec names the base: a revision of the family with image in container
    is registered (unless an identical one runs or is the newest) and rolled out.
    """
    started_at = datetime.datetime.fromtimestamp(clock(), datetime.timezone.utc)
    check_wait(wait_timeout, wait_outage_grace)
    if desired_count is not None:
        check_desired_count(desired_count, 'desired_count')
    if image is not None:
        image = str(image).strip()
        if not image:
            raise OpsError('image must not be empty')
        if force_new_deployment:
            raise OpsError('image and force_new_deployment are mutually exclusive: image already deploys a new '
                           'revision (force_new_deployment only redeploys the same one)')
    elif container is not None:
        raise OpsError('container only applies with image (it names the container that gets the image)')
    svc = ecs.describe()
    family, current = parse_task_definition(svc['taskDefinition'])
    if expected_current is not None and current != int(expected_current):
        raise OpsError('%s runs %s, not the expected %s: nothing changed (did someone else move it?)'
                       % (ecs.service, revision_name(family, current), revision_name(family, int(expected_current))))
    tags = tags_of(svc)
    # Only ACTIVE revisions can be deployed; INACTIVE ones are listed (one more call)
    # only to say precisely why a named target was refused.
    try:
        revisions = ecs.revisions(family, statuses=('ACTIVE',))
        target = resolve_target(spec, family, current, revisions, tags)
    except OpsError:
        revisions = ecs.revisions(family)
        target = resolve_target(spec, family, current, revisions, tags)
    plan = None
    if image is not None:
        plan = image_plan(ecs, svc, family, current, target, revisions, image, container=container, hide=hide)
        if plan['entry'] is not None:
            target = plan['entry']
        else:
            target = dict(revision=None, arn=None, name=None, status=None,
                          reason='would register a new revision of %s from %s with image %s'
                                 % (family, plan['base'], image))
    before = dict(revision=revision_name(family, current), desired_count=svc.get('desiredCount'),
                  last_stable=tags.get(TAG_LAST_STABLE))

    # What the desired count should become.
    new_desired = svc.get('desiredCount')
    if restore_desired_count:
        remembered = tags.get(TAG_DESIRED_BEFORE)
        if remembered is None or not str(remembered).isdigit():
            raise OpsError('restore_desired_count: no remembered desired count on service %s '
                           '(it is set when this module scales the service)' % ecs.service)
        new_desired = int(remembered)
        check_desired_count(new_desired, 'restore_desired_count: the count remembered in tag %s on service %s'
                            % (TAG_DESIRED_BEFORE, ecs.service))
    elif desired_count is not None:
        new_desired = desired_count
    scale = new_desired != svc.get('desiredCount')

    deploy = target['revision'] != current or force_new_deployment
    if mark_stable and not wait and (deploy or scale):
        raise OpsError('mark_stable needs wait: true when a deployment is started '
                       '(a revision is only stable once it has rolled out)')
    registered = None
    if plan is not None and plan['entry'] is None and not check_mode:
        new_td = ecs.register(plan['request'])
        hide(*secret_values(new_td))
        fam, rev = parse_task_definition(new_td['taskDefinitionArn'])
        registered = revision_name(fam, rev)
        target = dict(revision=rev, arn=new_td['taskDefinitionArn'], name=registered, status='ACTIVE',
                      reason='registered from %s with image %s' % (plan['base'], image))
    target_arn = target['arn'] or (svc['taskDefinition'] if target['revision'] is not None else None)
    if plan is not None:
        target_images = plan['images']
    elif target['revision'] == current:
        target_images = images(ecs.task_definition(svc['taskDefinition']))
    else:
        target_images = images(ecs.task_definition(target_arn))

    # A deployment of the target that is already rolling (e.g. the run that started it
    # lost contact with ECS) is waited on, not started again.
    primary = primary_deployment(svc) or {}
    in_flight = (target_arn is not None and primary.get('taskDefinition') == target_arn
                 and primary.get('rolloutState') == 'IN_PROGRESS')
    if target['revision'] is None:
        stable_mark = '(new revision of %s)' % family   # check mode: not registered, so no number yet
    else:
        stable_mark = revision_name(family, target['revision'])
    mark = mark_stable and tags.get(TAG_LAST_STABLE) != stable_mark

    after = dict(before, revision=stable_mark, desired_count=new_desired,
                 last_stable=stable_mark if mark_stable else before['last_stable'])
    if plan is not None:
        # Images only: container definitions carry the environment (secrets).
        before['images'] = images_by_container(plan['current_td'])
        after['images'] = dict((c.get('name'), c.get('image')) for c in plan['request'].get('containerDefinitions', []))
    changed = deploy or scale or mark
    result = dict(
        changed=changed, cluster=ecs.cluster, service=ecs.service,
        from_revision=dict(name=before['revision'], revision=current, arn=svc['taskDefinition']),
        to_revision=dict(name=target['name'] if target['revision'] is None else stable_mark,
                         revision=target['revision'], arn=target_arn, reason=target['reason'], images=target_images),
        registered=registered,
        desired_count=dict(before=svc.get('desiredCount'), after=new_desired),
        previous_desired_count=svc.get('desiredCount'),
        deployment_id=primary.get('id') if in_flight and not force_new_deployment else None,
        rollout_state=primary.get('rolloutState'),
        deployment_started=False, marked_stable=False, events=[], waited_s=0.0,
        diff=dict(before=before, after=after),
    )
    if plan is not None:
        result['msg'] = target['reason']
    if check_mode:
        result['deployment_started'] = deploy
        result['marked_stable'] = mark
        return result

    if deploy or scale:
        ledger = {}
        if target['revision'] < current:
            # Any rollback is recorded, before the update: if we die after it, a re-run
            # of `previous` still knows it happened and does not walk back a second revision.
            ledger[TAG_ROLLBACK] = '%s->%s' % (before['revision'], stable_mark)
        if scale and not restore_desired_count:
            ledger[TAG_DESIRED_BEFORE] = str(svc.get('desiredCount'))
        kwargs = {}
        if deploy:
            kwargs['taskDefinition'] = target_arn
            kwargs['forceNewDeployment'] = bool(force_new_deployment)
        if scale:
            kwargs['desiredCount'] = new_desired
        try:
            if ledger:
                ecs.tag(svc['serviceArn'], ledger)
            updated = ecs.update(**kwargs)
        except OpsError as err:
            if registered is None:
                raise
            raise _failure('%s (%s was registered; a re-run deploys it without registering another)'
                           % (err.msg, registered), dict(result, changed=True))
        if deploy:
            # A scale alone starts no deployment: the PRIMARY one just changes its count.
            new_primary = primary_deployment(updated) or {}
            result['deployment_id'] = new_primary.get('id')
            result['rollout_state'] = new_primary.get('rolloutState')
        result['deployment_started'] = deploy
    elif in_flight and not wait:
        result['deployment_id'] = primary.get('id')

    if wait and (deploy or scale or in_flight):
        waiter = waiter or Waiter(ecs, wait_timeout, outage_grace=wait_outage_grace)
        wait_timer = Timer(waiter.clock)
        try:
            _wait(ecs, waiter, result, target_arn, started_at)
        except OpsError as err:
            err.result['waited_s'] = wait_timer.elapsed()   # a failed wait says how long it waited, too
            raise
        result['waited_s'] = wait_timer.elapsed()

    if mark:
        ecs.tag(svc['serviceArn'], {TAG_LAST_STABLE: stable_mark})
        ecs.tag(target_arn, {TAG_STABLE_ON_REVISION: now_iso()})
        result['marked_stable'] = True
    return result


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


def _wait(ecs, waiter, result, target_arn, started_at):
    """Wait for the deployment in result (or the scale) to settle; update result."""
    seen = set()
    deployment_id = result['deployment_id']

    def settled(svc):
        return len(svc.get('deployments') or []) == 1 and svc.get('runningCount') == svc.get('desiredCount')

    def done(svc):
        result['events'].extend(_new_events(svc, seen, started_at))
        if deployment_id:
            outcome, detail = deployment_outcome(svc, deployment_id, target_arn)
            result['rollout_state'] = (detail or {}).get('rolloutState')
            if outcome == 'done':
                return outcome if settled(svc) else None
            if outcome == 'failed':
                raise _failure('deployment %s of %s FAILED: %s' % (
                    deployment_id, parse_and_name(target_arn), detail.get('rolloutStateReason')), result)
            if outcome == 'rolled_back':
                primary = primary_deployment(svc) or {}
                raise _failure(
                    'deployment %s of %s failed and ECS rolled the service back to %s by itself '
                    '(circuit breaker): %s' % (deployment_id, parse_and_name(target_arn),
                                               parse_and_name(primary.get('taskDefinition')),
                                               failure_reason(detail, result['events'], deployment_id)),
                    result, rolled_back_to=parse_and_name(primary.get('taskDefinition')))
            if outcome == 'superseded':
                raise _failure('deployment %s was superseded by deployment %s (someone else updated %s)'
                               % (deployment_id, detail.get('id'), ecs.service), result)
            return None
        # Scale only: done when the tasks have settled on the desired count.
        return 'done' if settled(svc) else None

    if deployment_id:
        waiting_for = 'deployment %s of %s on %s' % (deployment_id, parse_and_name(target_arn), ecs.service)
    else:
        waiting_for = '%s to run %s tasks' % (ecs.service, result['desired_count']['after'])

    def describe_failed(err, outage_s):
        if outage_s is None:
            return _failure('cannot follow %s: %s; the update was sent, re-run to converge once that is fixed'
                            % (waiting_for, err.msg), result)
        return _failure('lost contact with ECS for %.0fs (longer than wait_outage_grace, %ss) while waiting for %s '
                        '(%s); the update was sent, re-run to converge'
                        % (outage_s, waiter.outage_grace, waiting_for, err.msg), result)

    def timed_out(svc, err, outage_s):
        if svc is None or err is not None:
            return _failure('timed out after %ss waiting for %s: ECS has not answered for the last %.0fs (%s); '
                            'the update was sent, re-run to converge' % (waiter.timeout, waiting_for, outage_s, err.msg),
                            result)
        primary = primary_deployment(svc) or {}
        return _failure('timed out after %ss waiting for %s: deployment %s is %s, %s of %s tasks running'
                        % (waiter.timeout, ecs.service, primary.get('id'), primary.get('rolloutState'),
                           svc.get('runningCount'), svc.get('desiredCount')), result)

    waiter._poll(done, describe_failed, timed_out)
