"""ECS deployment behaviour on top of moto's in-memory ECS backend.

moto stores services but never progresses a deployment: UpdateService does not even
create one and jumps runningCount to desiredCount. This module patches the backend
in-process and runs a controller that moves deployments the way real ECS reports them
in DescribeServices (deployments, rolloutState, counts, events, circuit breaker).

Simplifications against real ECS (the fields and messages are the real ones):
- no Task objects are created for services (ListTasks stays empty); task ids in event
  messages are made up;
- counts move linearly over `deploy_seconds`; new tasks start first (as with
  minimumHealthyPercent 100 / maximumPercent 200); once they all run the new deployment
  is COMPLETED, as in ECS, while the old (ACTIVE) deployment is still listed and its
  tasks drain over `drain_seconds` (ECS: load balancer deregistration, then stop); only
  then does it disappear and the service reach a steady state;
- a desiredCount above ECS's 5000 tasks per service is refused (InvalidParameterException;
  the message is ours): the double would otherwise try to start them;
- an image is "broken" when its tag contains "-crash": its tasks never start;
- cluster runningTasksCount/pendingTasksCount are the sums over the services only.
"""
from __future__ import annotations

import math
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from moto.core.utils import utcnow
from moto.ecs import models as ecs_models
from moto.ecs import responses as ecs_responses
from moto.ecs.exceptions import EcsClientException, InvalidParameterException, TaskDefinitionNotFoundException

# One lock around every moto request and every controller tick: moto's models are
# plain Python objects and the controller mutates the same lists the serializer reads.
LOCK = threading.RLock()
TICK_SECONDS = 0.05
CRASH_MARK = "-crash"
MAX_TASKS_PER_SERVICE = 5000  # ECS service quota "Tasks per service"
DEFAULT_DEPLOYMENT_CONFIGURATION = {
    "deploymentCircuitBreaker": {"enable": False, "rollback": False},
    "maximumPercent": 200,
    "minimumHealthyPercent": 100,
}


@dataclass
class Settings:
    deploy_seconds: float = 2.0
    # Short, so every sandbox rollout shows COMPLETED beside a draining old deployment
    # without making the tests slow (ECS: the target group's deregistration delay, 300 s).
    drain_seconds: float = 0.5


SETTINGS = Settings()


@dataclass
class _Deployment:
    """Controller bookkeeping for one deployment (kept out of moto's dict so the
    serializer never sees it)."""

    started: float
    crash: bool
    ramp_from: int = 0  # runningCount when the current ramp began
    ramp_start: float = 0.0
    drain_from: int = 0  # runningCount when a newer deployment replaced this one
    drain_start: float = 0.0
    ticks: int = 0
    announced: bool = False  # "has started N tasks" event emitted for the ramp


@dataclass
class _Service:
    last_completed: tuple[str, str] | None = None  # (task definition arn, deployment id)
    deployments: dict[str, _Deployment] = field(default_factory=dict)


_services: dict[str, _Service] = {}


def _svc_meta(service: Any) -> _Service:
    return _services.setdefault(service.arn, _Service())


def _progress(start: float, now: float, seconds: float | None = None) -> float:
    seconds = SETTINGS.deploy_seconds if seconds is None else seconds
    if seconds <= 0:
        return 1.0
    return min(1.0, max(0.0, (now - start) / seconds))


def _deployment_id() -> str:
    return "ecs-svc/" + "".join(random.choices("0123456789", k=19))


def _task_ids(n: int) -> str:
    return " ".join(f"(task {uuid.uuid4().hex})" for _i in range(n))


def _event(service: Any, message: str) -> None:
    """Prepend: DescribeServices lists events newest first (ECS keeps the last 100)."""
    service.events.insert(0, {"id": str(uuid.uuid4()), "createdAt": utcnow(), "message": message})
    del service.events[100:]


def _image(backend: Any, td_arn: str) -> str:
    td = backend.describe_task_definition(td_arn)
    return td.container_definitions[0]["image"] if td.container_definitions else ""


def _is_crash(backend: Any, td_arn: str) -> bool:
    return CRASH_MARK in _image(backend, td_arn).rsplit(":", 1)[-1]


def _circuit_breaker(service: Any) -> dict[str, Any]:
    config = getattr(service, "deployment_configuration", None) or {}
    return config.get("deploymentCircuitBreaker") or {}


# --------------------------------------------------------------------------- patches


def _start_deployment(backend: Any, service: Any, td_arn: str, now: float) -> dict[str, Any]:
    """New PRIMARY deployment; the previous ones turn ACTIVE and keep their tasks
    until the new one has started its own."""
    meta = _svc_meta(service)
    previous = service.deployments[0] if service.deployments else {}
    for dep in service.deployments:
        dep["status"] = "ACTIVE"
        old = meta.deployments.setdefault(dep["id"], _Deployment(started=now, crash=False))
        old.drain_from, old.drain_start = dep["runningCount"], now
    dep_id = _deployment_id()
    stamp = utcnow()
    deployment = {
        "id": dep_id,
        "status": "PRIMARY",
        "taskDefinition": td_arn,
        "desiredCount": service.desired_count,
        "pendingCount": service.desired_count,
        "runningCount": 0,
        "failedTasks": 0,
        "createdAt": stamp,
        "updatedAt": stamp,
        "launchType": previous.get("launchType", service.launch_type),
        "platformVersion": previous.get("platformVersion", service.platform_version),
        "platformFamily": previous.get("platformFamily"),
        "networkConfiguration": previous.get("networkConfiguration") or service.network_configuration or None,
        "rolloutState": "IN_PROGRESS",
        "rolloutStateReason": f"ECS deployment {dep_id} in progress.",
    }
    service.deployments.insert(0, deployment)
    service.task_definition = td_arn
    meta.deployments[dep_id] = _Deployment(started=now, crash=_is_crash(backend, td_arn), ramp_start=now)
    return deployment


def _create_service(original: Any) -> Any:
    def create_service(self: Any, *args: Any, **kwargs: Any) -> Any:
        with LOCK:
            service = original(self, *args, **kwargs)
            service.deployment_configuration = dict(DEFAULT_DEPLOYMENT_CONFIGURATION)
            if service.deployments:
                # moto makes the first deployment already running (or stuck): start
                # it from zero tasks and let the controller settle it, like ECS does.
                dep = service.deployments[0]
                dep_id = _deployment_id()
                dep.update(
                    id=dep_id,
                    runningCount=0,
                    pendingCount=service.desired_count,
                    failedTasks=0,
                    rolloutState="IN_PROGRESS",
                    rolloutStateReason=f"ECS deployment {dep_id} in progress.",
                )
                now = time.monotonic()
                crash = _is_crash(self, dep["taskDefinition"])
                _svc_meta(service).deployments[dep_id] = _Deployment(started=now, crash=crash, ramp_start=now)
                _sync_counts(service)
            return service

    return create_service


def update_service(self: Any, service_properties: dict[str, Any]) -> Any:
    """Replacement for moto's update_service (see module docstring)."""
    props = dict(service_properties)
    cluster_str = props.pop("cluster", "default")
    service_name = props.pop("service").split("/")[-1]
    td_str = props.pop("task_definition", None)
    desired = props.pop("desired_count", None)
    force = props.pop("force_new_deployment", False)
    if desired is not None and not 0 <= desired <= MAX_TASKS_PER_SERVICE:
        raise InvalidParameterException(f"desiredCount must be between 0 and {MAX_TASKS_PER_SERVICE} (tasks per service).")
    with LOCK:
        service = self._get_service(cluster_str, service_name)
        td_arn = None
        if td_str:
            td = self.describe_task_definition(td_str)
            if td.status == "INACTIVE":
                raise EcsClientException("TaskDefinition is inactive")
            td_arn = td.arn  # always the full ARN, whatever form the caller used
        for name, value in props.items():  # deploymentConfiguration, networkConfiguration...
            if name == "deployment_configuration" and value:
                value = {**(getattr(service, name, None) or DEFAULT_DEPLOYMENT_CONFIGURATION), **value}
            if value is not None:
                setattr(service, name, value)
        now = time.monotonic()
        if desired is not None and desired != service.desired_count:
            service.desired_count = desired
            if service.deployments:
                primary = service.deployments[0]
                primary["desiredCount"] = desired
                meta = _svc_meta(service).deployments.get(primary["id"])
                if meta:
                    meta.ramp_from, meta.ramp_start, meta.announced = primary["runningCount"], now, False
        primary_td = service.deployments[0]["taskDefinition"] if service.deployments else None
        if (td_arn and td_arn != primary_td) or force:
            _start_deployment(self, service, td_arn or service.task_definition, now)
        _sync_counts(service)
        return service


def describe_task_definition(self: Any, task_definition_str: str) -> Any:
    """Like moto's, but a bare family resolves to the latest ACTIVE revision (moto
    takes the latest revision even when it was deregistered)."""
    name = task_definition_str.split("/")[-1]
    if ":" in name:
        return _original_describe_task_definition(self, task_definition_str)
    revisions = self.task_definitions.get(name, {})
    active = [rev for rev, td in revisions.items() if td.status == "ACTIVE"]
    if not active:
        raise TaskDefinitionNotFoundException()
    return revisions[max(active)]


def _delete_service(original: Any) -> Any:
    def delete_service(self: Any, *args: Any, **kwargs: Any) -> Any:
        with LOCK:
            service = original(self, *args, **kwargs)
            _services.pop(service.arn, None)
            return service

    return delete_service


def _response_create_service(original: Any) -> Any:
    """moto's CreateService drops deploymentConfiguration; keep it so DescribeServices
    returns it (the serializer reads service.deployment_configuration)."""

    def create_service(self: Any) -> Any:
        result = original(self)
        config = self._get_param("deploymentConfiguration")
        if config:
            with LOCK:
                service = self.ecs_backend._get_service(self._get_param("cluster", "default"), self._get_param("serviceName"))
                merged = dict(DEFAULT_DEPLOYMENT_CONFIGURATION)
                merged.update(config)
                service.deployment_configuration = merged
        return result

    return create_service


def _response_list_task_definitions(self: Any) -> Any:
    """ListTaskDefinitions with real paging (maxResults/nextToken) and sort order;
    moto returns everything in one unsorted page."""
    family = self._get_param("familyPrefix")  # an exact family name, despite the name
    status = self._get_param("status", "ACTIVE")
    arns = self.ecs_backend.list_task_definitions(family, status)

    def key(arn: str) -> tuple[str, int]:
        fam, rev = arn.rsplit("/", 1)[1].rsplit(":", 1)
        return fam, int(rev)

    arns.sort(key=key, reverse=self._get_param("sort", "ASC") == "DESC")
    start = int(self._get_param("nextToken") or 0)
    size = int(self._get_param("maxResults") or 100)
    result: dict[str, Any] = {"taskDefinitionArns": arns[start : start + size]}
    if start + size < len(arns):
        result["nextToken"] = str(start + size)
    return ecs_responses.ActionResult(result)


_original_describe_task_definition = ecs_models.EC2ContainerServiceBackend.describe_task_definition
_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    backend_cls = ecs_models.EC2ContainerServiceBackend
    backend_cls.create_service = _create_service(backend_cls.create_service)
    backend_cls.update_service = update_service
    backend_cls.delete_service = _delete_service(backend_cls.delete_service)
    backend_cls.describe_task_definition = describe_task_definition
    response_cls = ecs_responses.EC2ContainerServiceResponse
    response_cls.create_service = _response_create_service(response_cls.create_service)
    response_cls.list_task_definitions = _response_list_task_definitions
    _installed = True


# ------------------------------------------------------------------------ controller


def _sync_counts(service: Any) -> None:
    service.running_count = sum(d["runningCount"] for d in service.deployments)
    service.pending_count = sum(d["pendingCount"] for d in service.deployments)


def _set_counts(dep: dict[str, Any], running: int, pending: int) -> None:
    if (dep["runningCount"], dep["pendingCount"]) != (running, pending):
        dep["runningCount"], dep["pendingCount"] = running, pending
        dep["updatedAt"] = utcnow()


def _name(service: Any) -> str:
    return f"(service {service.name})"


def _complete(service: Any, primary: dict[str, Any], meta: _Service, now: float) -> None:
    """The new tasks all run: the deployment is COMPLETED and the old ones start draining."""
    primary["rolloutState"] = "COMPLETED"
    primary["rolloutStateReason"] = f"ECS deployment {primary['id']} completed."
    primary["updatedAt"] = utcnow()
    meta.last_completed = (primary["taskDefinition"], primary["id"])
    _event(service, f"{_name(service)} (deployment {primary['id']}) deployment completed.")
    draining = 0
    for dep in service.deployments[1:]:
        om = meta.deployments.setdefault(dep["id"], _Deployment(started=now, crash=False))
        om.drain_from, om.drain_start = dep["runningCount"], now
        draining += dep["runningCount"]
    if draining:
        _event(service, f"{_name(service)} has begun draining connections on {draining} tasks.")
    _step_drain(service, meta, now)


def _step_drain(service: Any, meta: _Service, now: float) -> None:
    """Old deployments' tasks stop over drain_seconds; then they go and the service is steady."""
    stopped, running = 0, 0
    for old in service.deployments[1:]:
        om = meta.deployments.get(old["id"])
        left = round(om.drain_from * (1 - _progress(om.drain_start, now, SETTINGS.drain_seconds))) if om else 0
        _set_counts(old, left, 0)
        old["desiredCount"] = left
        running += left
        stopped += om.drain_from if om else 0
    if running:
        return
    for dep in service.deployments[1:]:
        meta.deployments.pop(dep["id"], None)
    del service.deployments[1:]
    if stopped:
        _event(service, f"{_name(service)} has stopped {stopped} running tasks: {_task_ids(stopped)}.")
    _event(service, f"{_name(service)} has reached a steady state.")


def _fail(backend: Any, service: Any, primary: dict[str, Any], meta: _Service, now: float) -> None:
    primary["rolloutState"] = "FAILED"
    primary["rolloutStateReason"] = "ECS deployment circuit breaker: tasks failed to start."
    primary["updatedAt"] = utcnow()
    _event(service, f"{_name(service)} (deployment {primary['id']}) deployment failed: tasks failed to start.")
    if _circuit_breaker(service).get("rollback") and meta.last_completed:
        td_arn, dep_id = meta.last_completed
        _event(service, f"{_name(service)} rolling back to deployment {dep_id}.")
        # The FAILED deployment stays listed (ACTIVE, rolloutState FAILED) until the
        # rollback deployment completes and _complete() removes it.
        _start_deployment(backend, service, td_arn, now)


def _step_rollout(service: Any, primary: dict[str, Any], dm: _Deployment, meta: _Service, now: float) -> None:
    target = primary["desiredCount"]
    ramp = _progress(dm.ramp_start, now)
    running = dm.ramp_from + round((target - dm.ramp_from) * ramp)
    if not dm.announced:
        dm.announced = True
        if target > dm.ramp_from:
            _event(service, f"{_name(service)} has started {target - dm.ramp_from} tasks: {_task_ids(target - dm.ramp_from)}.")
    _set_counts(primary, running, max(0, target - running))
    # Old deployments keep their tasks until the new ones all run (maximumPercent 200).
    if ramp >= 1:
        _complete(service, primary, meta, now)


def _step_crash(backend: Any, service: Any, primary: dict[str, Any], dm: _Deployment, meta: _Service, now: float) -> None:
    desired = primary["desiredCount"]
    # ECS circuit breaker threshold: 0.5 x desired count, at least 3, at most 200.
    threshold = min(200, max(3, math.ceil(desired * 0.5)))
    if not dm.announced:
        dm.announced = True
        if desired:
            _event(service, f"{_name(service)} has started {desired} tasks: {_task_ids(desired)}.")
    breaker = _circuit_breaker(service)
    if SETTINGS.deploy_seconds > 0:
        failed = math.ceil(threshold * (now - dm.started) / SETTINGS.deploy_seconds)
    else:
        failed = threshold * dm.ticks
    if breaker.get("enable"):
        failed = min(failed, threshold)
    if failed != primary["failedTasks"]:
        primary["failedTasks"] = failed
        primary["updatedAt"] = utcnow()
    _set_counts(primary, 0, desired)  # tasks keep cycling PENDING -> STOPPED
    # Old deployments keep their tasks: nothing new ever became healthy.
    if breaker.get("enable") and _progress(dm.started, now) >= 1 and dm.ticks >= 2:
        _fail(backend, service, primary, meta, now)


def _step_scale(service: Any, primary: dict[str, Any], dm: _Deployment, now: float) -> None:
    """desiredCount changed on a settled service: no new deployment, tasks start or
    stop toward the new count."""
    target = primary["desiredCount"]
    if primary["runningCount"] == target and dm.announced:
        return
    delta = target - dm.ramp_from
    if not dm.announced:
        dm.announced = True
        if delta > 0:
            _event(service, f"{_name(service)} has started {delta} tasks: {_task_ids(delta)}.")
        elif delta < 0:
            _event(service, f"{_name(service)} has stopped {-delta} running tasks: {_task_ids(-delta)}.")
    running = dm.ramp_from + round(delta * _progress(dm.ramp_start, now))
    _set_counts(primary, running, max(0, target - running))
    if running == target and delta:
        _event(service, f"{_name(service)} has reached a steady state.")


def _step(backend: Any, service: Any, now: float) -> None:
    primary = service.deployments[0]
    meta = _svc_meta(service)
    dm = meta.deployments.get(primary["id"])
    if dm is None:  # a deployment we did not create (e.g. from CloudFormation)
        dm = meta.deployments[primary["id"]] = _Deployment(started=now, crash=False, ramp_start=now, announced=True)
        dm.ramp_from = primary["runningCount"]
    state = primary.get("rolloutState")
    if state == "IN_PROGRESS":
        dm.ticks += 1
        if dm.crash:
            _step_crash(backend, service, primary, dm, meta, now)
        else:
            _step_rollout(service, primary, dm, meta, now)
    elif state == "COMPLETED" and len(service.deployments) > 1:
        _step_drain(service, meta, now)
    elif state == "COMPLETED":
        _step_scale(service, primary, dm, now)
    _sync_counts(service)


def tick(now: float | None = None) -> None:
    now = time.monotonic() if now is None else now
    with LOCK:
        for regions in list(ecs_models.ecs_backends.values()):
            for backend in list(regions.values()):
                for service in list(backend.services.values()):
                    if service.status == "ACTIVE" and service.deployments:
                        _step(backend, service, now)
                for cluster in backend.clusters.values():
                    services = [s for s in backend.services.values() if s.cluster_name == cluster.name]
                    cluster.running_tasks_count = sum(s.running_count for s in services)
                    cluster.pending_tasks_count = sum(s.pending_count for s in services)


def run_controller(stop: threading.Event) -> None:
    while not stop.wait(TICK_SECONDS):
        try:
            tick()
        except Exception:  # keep the controller alive; the error shows in the log
            import traceback

            traceback.print_exc()


def serving(account_id: str, region: str, cluster: str, service_name: str) -> dict[str, Any]:
    """What the load balancer would send traffic to: the deployment with the most
    running tasks (ties go to the PRIMARY one)."""
    with LOCK:
        backend = ecs_models.ecs_backends[account_id][region]
        service = backend._get_service(cluster, service_name)
        deployments = service.deployments
        best = max(deployments, key=lambda d: (d["runningCount"], d["status"] == "PRIMARY"))
        td = backend.describe_task_definition(best["taskDefinition"])
        return {
            "taskDefinition": td.arn,
            "revision": td.revision,
            "image": _image(backend, td.arn),
            "runningCount": service.running_count,
            "desiredCount": service.desired_count,
            "rolloutState": deployments[0].get("rolloutState"),
        }
