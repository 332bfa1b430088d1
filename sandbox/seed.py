"""Seed the sandbox's AWS through boto3 against the moto endpoint, the way a user
would: network, load balancer, task definitions, the ECS service."""
from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from sandbox import state

IMAGE_REPO = "ghcr.io/hotelbot/hotel-voice-bot"
# revision -> (image tag, plain environment); revision 4 misbehaves when serving,
# revision 5's tasks never start.
REVISIONS: dict[int, tuple[str, dict[str, str]]] = {
    1: ("1.0.0", {"LOG_LEVEL": "info", "FAQ_CACHE_TTL": "300", "FEATURE_FLAGS": "faq-search"}),
    2: ("1.1.0", {"LOG_LEVEL": "info", "FAQ_CACHE_TTL": "300", "FEATURE_FLAGS": "faq-search,multilang"}),
    3: ("1.2.0", {"LOG_LEVEL": "info", "FAQ_CACHE_TTL": "600", "FEATURE_FLAGS": "faq-search,multilang,voice-replies"}),
    4: ("1.3.0-bad", {"LOG_LEVEL": "debug", "FAQ_CACHE_TTL": "60", "FEATURE_FLAGS": "faq-search,multilang,voice-replies,conversation-v2"}),
    5: ("1.3.1-crash", {"LOG_LEVEL": "debug", "FAQ_CACHE_TTL": "60", "FEATURE_FLAGS": "faq-search,multilang,voice-replies,conversation-v2"}),
}
STABLE_REVISION, BAD_REVISION, BROKEN_REVISION = 3, 4, 5
CONTAINER_PORT = 8080
STABLE_TAG = "hotelbot.ops/stable"
LAST_STABLE_TAG = "hotelbot.ops/last-stable"


def client(st: dict[str, Any], service: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        service,
        region_name=st["region"],
        endpoint_url=st["aws"]["endpoint_url"],
        aws_access_key_id=st["aws"]["access_key_id"],
        aws_secret_access_key=state.AWS_SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=10),
    )


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{state.REGION}:{state.ACCOUNT_ID}:{resource}"


def _network(ec2: Any) -> tuple[str, list[str], str]:
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{state.REGION}{zone}")["Subnet"]["SubnetId"]
        for i, zone in ((1, "a"), (2, "b"))
    ]
    group = ec2.create_security_group(GroupName="hotel-voice-bot", Description="hotel voice bot tasks", VpcId=vpc)["GroupId"]
    return vpc, subnets, group


def _load_balancer(elbv2: Any, vpc: str, subnets: list[str], group: str) -> tuple[str, str]:
    lb = elbv2.create_load_balancer(Name="hotel-voice-bot-alb", Subnets=subnets, SecurityGroups=[group],
                                    Scheme="internet-facing", Type="application")["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elbv2.create_target_group(
        Name="hotel-voice-bot-tg", Protocol="HTTP", Port=CONTAINER_PORT, VpcId=vpc, TargetType="ip",
        HealthCheckProtocol="HTTP", HealthCheckPath="/api/health", HealthCheckIntervalSeconds=30,
        HealthCheckTimeoutSeconds=5, HealthyThresholdCount=5, UnhealthyThresholdCount=2, Matcher={"HttpCode": "200"},
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80,
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    return lb, tg


def _container(name: str, image: str, env: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "essential": True,
        "portMappings": [{"containerPort": CONTAINER_PORT, "protocol": "tcp"}],
        "environment": [{"name": k, "value": v} for k, v in env.items()],
        "secrets": [{"name": "WAHA_API_KEY", "valueFrom": _arn("ssm", "parameter/hotelbot/waha-api-key")}],
        "healthCheck": {"command": ["CMD-SHELL", f"curl -f http://localhost:{CONTAINER_PORT}/api/health || exit 1"],
                        "interval": 30, "timeout": 5, "retries": 3},
        "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": f"/ecs/{name}", "awslogs-region": state.REGION, "awslogs-stream-prefix": "ecs"}},
    }


def _register(ecs: Any, family: str, container: dict[str, Any]) -> str:
    return ecs.register_task_definition(
        family=family,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        executionRoleArn=f"arn:aws:iam::{state.ACCOUNT_ID}:role/hotel-voice-bot-execution",
        taskRoleArn=f"arn:aws:iam::{state.ACCOUNT_ID}:role/hotel-voice-bot-task",
        containerDefinitions=[container],
    )["taskDefinition"]["taskDefinitionArn"]


# The release lock's table (hotelbot.ops.release_lock backend=dynamodb), as docs/locking.md creates it.
LOCK_TABLE = "hotelbot_release_locks"


def _lock_table(dynamodb: Any) -> str:
    dynamodb.create_table(TableName=LOCK_TABLE, AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
    return LOCK_TABLE


def seed(st: dict[str, Any], postgres_password: str) -> dict[str, Any]:
    """Create everything; returns the "ecs", "elbv2" and "dynamodb" sections of state.json."""
    ec2, elbv2, ecs = client(st, "ec2"), client(st, "elbv2"), client(st, "ecs")
    lock_table = _lock_table(client(st, "dynamodb"))
    vpc, subnets, group = _network(ec2)
    lb_arn, tg_arn = _load_balancer(elbv2, vpc, subnets, group)

    ecs.create_cluster(clusterName=state.CLUSTER)
    pg = st["postgres"]
    # Secret-looking values in plain environment on purpose: the collection must mask them.
    secret_env = {
        "OPENAI_API_KEY": f"sk-sandbox-{secrets.token_hex(16)}",
        "DATABASE_URL": f"postgresql://{pg['user']}:{postgres_password}@{pg['host']}:{pg['port']}/{pg['database']}",
    }
    images, arns = {}, {}
    for revision, (tag, env) in REVISIONS.items():
        images[str(revision)] = f"{IMAGE_REPO}:{tag}"
        arns[revision] = _register(ecs, state.FAMILY, _container(state.FAMILY, images[str(revision)], {**env, "APP_VERSION": tag, **secret_env}))
        if revision == 2:
            # A family whose name starts with ours: a trap for code using familyPrefix.
            for worker_tag in ("1.0.0", "1.1.0"):
                _register(ecs, f"{state.FAMILY}-worker",
                          _container(f"{state.FAMILY}-worker", f"{IMAGE_REPO}-worker:{worker_tag}", {"LOG_LEVEL": "info"}))
    ecs.deregister_task_definition(taskDefinition=arns[1])
    stable_at = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    ecs.tag_resource(resourceArn=arns[STABLE_REVISION], tags=[{"key": STABLE_TAG, "value": stable_at}])

    # Production and its staging twin (same cluster, same family), both on the stable release.
    for name, count in ((state.SERVICE, 3), (state.STAGING_SERVICE, 1)):
        ecs.create_service(
            cluster=state.CLUSTER,
            serviceName=name,
            taskDefinition=f"{state.FAMILY}:{STABLE_REVISION}",
            desiredCount=count,
            launchType="FARGATE",
            platformVersion="LATEST",
            networkConfiguration={"awsvpcConfiguration": {"subnets": subnets, "securityGroups": [group], "assignPublicIp": "DISABLED"}},
            loadBalancers=[{"targetGroupArn": tg_arn, "containerName": state.FAMILY, "containerPort": CONTAINER_PORT}]
            if name == state.SERVICE else [],
            deploymentConfiguration={
                "deploymentCircuitBreaker": {"enable": True, "rollback": True},
                "maximumPercent": 200,
                "minimumHealthyPercent": 100,
            },
            tags=[{"key": LAST_STABLE_TAG, "value": f"{state.FAMILY}:{STABLE_REVISION}"}],
        )
    return {
        "ecs": {
            "cluster": state.CLUSTER,
            "service": state.SERVICE,
            "staging_service": state.STAGING_SERVICE,
            "family": state.FAMILY,
            "stable_revision": STABLE_REVISION,
            "bad_revision": BAD_REVISION,
            "broken_revision": BROKEN_REVISION,
            "images": images,
        },
        "elbv2": {"target_group_arn": tg_arn, "load_balancer_arn": lb_arn},
        "dynamodb": {"lock_table": lock_table},
    }


def service_settled(st: dict[str, Any]) -> bool:
    """The seeded services' first deployments have completed with all tasks running."""
    found = client(st, "ecs").describe_services(cluster=state.CLUSTER, services=[state.SERVICE, state.STAGING_SERVICE])
    return all(svc["deployments"][0]["rolloutState"] == "COMPLETED" and svc["runningCount"] == svc["desiredCount"]
               for svc in found["services"]) and len(found["services"]) == 2
