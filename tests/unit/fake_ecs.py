"""An in-memory stand-in for the boto3 ECS client, for unit tests of module_utils.ecs.

It keeps services, task definitions and tags, pages ListTaskDefinitions, and moves
deployments forward one step per DescribeServices call according to a script. Like
real ECS, a new deployment turns COMPLETED once its tasks run, while the old (ACTIVE)
deployment still runs tasks for a few more looks (drain_steps) before it goes away.
"""
import copy
import datetime
import itertools

import botocore.exceptions

ACCOUNT = '123456789012'
REGION = 'us-east-1'
REGISTER_FIELDS = {'taskRoleArn', 'executionRoleArn', 'networkMode', 'volumes', 'placementConstraints',
                   'requiresCompatibilities', 'cpu', 'memory', 'pidMode', 'ipcMode', 'proxyConfiguration',
                   'inferenceAccelerators', 'ephemeralStorage', 'runtimePlatform'}


def td_arn(family, revision):
    return 'arn:aws:ecs:%s:%s:task-definition/%s:%d' % (REGION, ACCOUNT, family, revision)


def client_error(code, message, operation):
    return botocore.exceptions.ClientError({'Error': {'Code': code, 'Message': message}}, operation)


class FakeEcs:
    page_size = 2

    def __init__(self):
        self.task_defs = {}   # arn -> dict(family, revision, status, containerDefinitions)
        self.tags = {}        # arn -> {key: value}
        self.services = {}    # (cluster, name) -> service dict
        self.clusters = set()
        self.calls = []
        self.ids = itertools.count(1000)
        # What happens to a new deployment: 'complete', 'fail', 'rollback' or 'hang'.
        self.outcome = 'complete'
        self.steps_to_settle = 2
        self.forget_failed = False
        self.drain_steps = 2         # looks at a COMPLETED deployment while the old one still drains
        self.draining_shown = 0      # answers that showed COMPLETED beside an old deployment with tasks
        self.describe_failures = []  # exceptions the next DescribeServices calls raise, one each, first first
        self.failures_after_update = []  # the same, queued once UpdateService was called
        self.answer = None           # replaces DescribeServices' answer (a non-ECS endpoint)

    # ---- setup helpers
    def register(self, family, revision, image, status='ACTIVE', env=None, containers=None, **fields):
        arn = td_arn(family, revision)
        self.task_defs[arn] = dict(
            fields, taskDefinitionArn=arn, family=family, revision=revision, status=status,
            containerDefinitions=containers or [dict(name='bot', image=image, environment=env or [])])
        return arn

    def add_service(self, cluster, name, revision_arn, desired=3, tags=None):
        self.clusters.add(cluster)
        arn = 'arn:aws:ecs:%s:%s:service/%s/%s' % (REGION, ACCOUNT, cluster, name)
        dep = self._deployment(revision_arn, desired, 'COMPLETED', running=desired)
        self.services[(cluster, name)] = dict(
            serviceName=name, serviceArn=arn, status='ACTIVE', taskDefinition=revision_arn,
            desiredCount=desired, runningCount=desired, pendingCount=0, deployments=[dep], events=[])
        self.tags[arn] = dict(tags or {})
        return arn

    def _deployment(self, td, desired, state, running=0):
        now = datetime.datetime.now(datetime.timezone.utc)
        return dict(id='ecs-svc/%d' % next(self.ids), status='PRIMARY', taskDefinition=td,
                    desiredCount=desired, runningCount=running, pendingCount=0, failedTasks=0,
                    rolloutState=state, rolloutStateReason='', createdAt=now, updatedAt=now, steps=0)

    def _service(self, cluster, name):
        if cluster not in self.clusters:
            raise client_error('ClusterNotFoundException', 'Cluster not found.', 'DescribeServices')
        return self.services.get((cluster, name.split('/')[-1]))

    # ---- the boto3 surface used by module_utils.ecs
    def describe_services(self, cluster, services, include=None):
        self.calls.append('DescribeServices')
        if self.describe_failures:
            raise self.describe_failures.pop(0)
        if self.answer is not None:
            return copy.deepcopy(self.answer)
        svc = self._service(cluster, services[0])
        if svc is None:
            return dict(services=[], failures=[dict(arn=services[0], reason='MISSING')])
        self._progress(svc)
        out = dict(svc, deployments=[dict((k, v) for k, v in d.items() if k != 'steps') for d in svc['deployments']])
        if include and 'TAGS' in include:
            out['tags'] = [dict(key=k, value=v) for k, v in self.tags[svc['serviceArn']].items()]
        return dict(services=[out], failures=[])

    def list_task_definitions(self, familyPrefix, status, sort, nextToken=None):
        self.calls.append('ListTaskDefinitions')
        arns = sorted((a for a, td in self.task_defs.items()
                       if td['family'].startswith(familyPrefix) and td['status'] == status),
                      key=lambda a: self.task_defs[a]['revision'], reverse=(sort == 'DESC'))
        start = int(nextToken or 0)
        page = arns[start:start + self.page_size]
        answer = dict(taskDefinitionArns=page)
        if start + self.page_size < len(arns):
            answer['nextToken'] = str(start + self.page_size)
        return answer

    def describe_task_definition(self, taskDefinition, include=None):
        self.calls.append('DescribeTaskDefinition')
        td = self.task_defs.get(taskDefinition)
        if td is None:
            raise client_error('ClientException', 'Unable to describe task definition.', 'DescribeTaskDefinition')
        answer = dict(taskDefinition=copy.deepcopy(td))
        if include and 'TAGS' in include:
            answer['tags'] = [dict(key=k, value=v) for k, v in self.tags.get(taskDefinition, {}).items()]
        return answer

    def register_task_definition(self, family, containerDefinitions, tags=None, **fields):
        """Like ECS: the next revision number of the family (deregistered ones count too)."""
        self.calls.append('RegisterTaskDefinition')
        unknown = set(fields) - REGISTER_FIELDS
        if unknown:
            raise TypeError('RegisterTaskDefinition does not take %s' % ', '.join(sorted(unknown)))
        revision = max([td['revision'] for td in self.task_defs.values() if td['family'] == family] or [0]) + 1
        arn = td_arn(family, revision)
        self.task_defs[arn] = dict(copy.deepcopy(fields), taskDefinitionArn=arn, family=family, revision=revision,
                                   status='ACTIVE', containerDefinitions=copy.deepcopy(containerDefinitions),
                                   compatibilities=['EC2'], registeredBy='arn:aws:iam::%s:user/test' % ACCOUNT)
        self.tags[arn] = dict((t['key'], t['value']) for t in tags or [])
        return dict(taskDefinition=copy.deepcopy(self.task_defs[arn]), tags=tags or [])

    def update_service(self, cluster, service, taskDefinition=None, forceNewDeployment=False, desiredCount=None):
        self.calls.append('UpdateService')
        self.describe_failures.extend(self.failures_after_update)
        self.failures_after_update = []
        svc = self._service(cluster, service)
        if desiredCount is not None:
            svc['desiredCount'] = desiredCount
            for dep in svc['deployments']:
                if dep['status'] == 'PRIMARY':
                    dep['desiredCount'] = desiredCount
        if (taskDefinition and taskDefinition != svc['taskDefinition']) or forceNewDeployment:
            td = taskDefinition or svc['taskDefinition']
            for dep in svc['deployments']:
                dep['status'] = 'ACTIVE'
            svc['deployments'].insert(0, self._deployment(td, svc['desiredCount'], 'IN_PROGRESS'))
            svc['taskDefinition'] = td
        elif desiredCount is not None:
            svc['runningCount'] = svc['runningCount']  # moves in _progress
        return dict(service=dict(svc, deployments=[dict(d) for d in svc['deployments']]))

    def tag_resource(self, resourceArn, tags):
        self.calls.append('TagResource')
        self.tags.setdefault(resourceArn, {}).update((t['key'], t['value']) for t in tags)

    # ---- deployment progression
    def _progress(self, svc):
        deps = svc['deployments']
        primary = deps[0]
        if primary['rolloutState'] == 'IN_PROGRESS':
            primary['steps'] += 1
            if primary['steps'] >= self.steps_to_settle and self.outcome != 'hang':
                if self.outcome == 'complete':
                    primary.update(rolloutState='COMPLETED', runningCount=primary['desiredCount'])
                    self._event(svc, '(service %s) (deployment %s) deployment completed.' % (svc['serviceName'], primary['id']))
                    svc['drain_left'] = self.drain_steps
                else:
                    primary.update(rolloutState='FAILED', rolloutStateReason='ECS deployment circuit breaker: tasks failed to start.')
                    if self.outcome == 'rollback' and len(deps) > 1:
                        old = deps[1]
                        primary['status'] = 'ACTIVE'
                        back = self._deployment(old['taskDefinition'], svc['desiredCount'], 'IN_PROGRESS')
                        svc['deployments'] = [back, primary]
                        svc['events'].insert(0, dict(id=str(next(self.ids)), createdAt=datetime.datetime.now(
                            datetime.timezone.utc), message='(service %s) (deployment %s) deployment failed: '
                            'tasks failed to start.' % (svc['serviceName'], primary['id'])))
                        if self.forget_failed:
                            # ECS drops the failed deployment once the rollback is done; seen too late
                            # by the waiter, only the events still tell why.
                            back['rolloutState'] = 'COMPLETED'
                            svc['deployments'] = [back]
                        svc['taskDefinition'] = old['taskDefinition']
                        self.outcome = 'complete'
        if len(svc['deployments']) > 1 and primary['rolloutState'] == 'COMPLETED':
            self._drain(svc)
        if len(svc['deployments']) == 1 and primary['rolloutState'] == 'COMPLETED':
            # A scale moves one task per look, like ECS starting/stopping tasks over time.
            gap = svc['desiredCount'] - primary['runningCount']
            primary['runningCount'] += (gap > 0) - (gap < 0)
        svc['runningCount'] = sum(d['runningCount'] for d in svc['deployments'])

    def _event(self, svc, message):
        svc['events'].insert(0, dict(id=str(next(self.ids)), createdAt=datetime.datetime.now(datetime.timezone.utc),
                                     message=message))

    def _drain(self, svc):
        """ECS stops the old deployment's tasks after the new ones are healthy: for
        drain_steps looks the old deployment is still listed (ACTIVE), its count falling."""
        old = svc['deployments'][1:]
        left = svc.get('drain_left', 0)
        if left > 0:
            for dep in old:
                dep.setdefault('drain_from', dep['runningCount'])
                dep['runningCount'] = dep['desiredCount'] = -(-dep['drain_from'] * left // (self.drain_steps + 1))
            svc['drain_left'] = left - 1
            if any(d['runningCount'] for d in old):
                self.draining_shown += 1
            return
        stopped = sum(d.get('drain_from', d['runningCount']) for d in old)
        svc['deployments'] = svc['deployments'][:1]
        if stopped:
            self._event(svc, '(service %s) has stopped %d running tasks.' % (svc['serviceName'], stopped))
        self._event(svc, '(service %s) has reached a steady state.' % svc['serviceName'])
