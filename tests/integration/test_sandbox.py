"""The sandbox itself: `python -m sandbox up|status|down` and the platform state it
holds (moto + ECS controller, PostgreSQL, bot, Prometheus).

One sandbox per module (in a temp dir); the tests run in file order and the last
one stops it.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sandbox import control, procs, seed, state  # noqa: E402

FAMILY, CLUSTER, SERVICE = state.FAMILY, state.CLUSTER, state.SERVICE


@dataclass
class Sandbox:
    dir: Path
    env: dict[str, str]
    state: dict[str, Any]
    secrets: dict[str, str]
    up_seconds: float

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)

    def client(self, service: str) -> Any:
        return seed.client(self.state, service)

    def describe(self, include_tags: bool = False) -> dict[str, Any]:
        kwargs = {"include": ["TAGS"]} if include_tags else {}
        return self.client("ecs").describe_services(cluster=CLUSTER, services=[SERVICE], **kwargs)["services"][0]

    def bot(self, path: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.state["bot"]["url"] + path, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


def _start(dir: Path) -> Sandbox:
    env = {**os.environ, state.ENV_DIR: str(dir)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "sandbox", "up"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=90, check=False)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((dir / "logs").glob("*.log")))
        pytest.fail(f"sandbox up failed:\n{result.stdout}\n{result.stderr}{logs}")
    return Sandbox(dir, env, state.load(dir), state.load_secrets(dir), elapsed)


def _new_dir() -> Path:
    # Not pytest's tmp_path: its parents are 0700, and PostgreSQL runs as the
    # `postgres` OS user when the tests run as root.
    dir = Path(tempfile.mkdtemp(prefix="hotelbot-sbx-"))
    dir.chmod(0o755)
    return dir


@pytest.fixture(scope="module")
def sb() -> Sandbox:
    dir = _new_dir()
    box = _start(dir)
    control.set_deploy_seconds(0.5, dir=dir)
    yield box
    box.cli("down")
    shutil.rmtree(dir, ignore_errors=True)


def wait_until(check: Callable[[], Any], timeout: float = 10.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        time.sleep(every)


def test_up_is_fast_and_writes_state_without_secrets(sb: Sandbox) -> None:
    assert sb.up_seconds < 15
    state_file, secrets_file = sb.dir / "state.json", sb.dir / "secrets.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o644
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert set(sb.secrets) == {"aws_secret_access_key", "postgres_password", "bot_api_token", "waha_webhook_token",
                               "fly_api_token"}
    text = state_file.read_text()
    for key in ("postgres_password", "bot_api_token", "waha_webhook_token"):
        assert sb.secrets[key] not in text
    st = sb.state
    assert st["dir"] == str(sb.dir) and st["region"] == "us-east-1"
    assert set(st["aws"]) >= {"endpoint_url", "control_url", "access_key_id", "pid"}
    assert st["ecs"]["stable_revision"] == 3 and st["ecs"]["bad_revision"] == 4 and st["ecs"]["broken_revision"] == 5
    assert st["ecs"]["images"]["4"].endswith(":1.3.0-bad")
    assert st["postgres"]["user"] == "hotelbot" and st["postgres"]["database"] == "hotel_voice_bot"
    assert st["prometheus"]["job"] == "hotel-voice-bot"
    assert all((sb.dir / "logs" / f"{name}.log").exists() for name in ("aws", "bot", "postgres", "prometheus"))
    result = sb.cli("up")  # idempotent
    assert result.returncode == 0 and "already up" in result.stdout
    assert sb.cli("status").returncode == 0


def test_seeded_service_and_task_definitions(sb: Sandbox) -> None:
    svc = sb.describe(include_tags=True)
    assert svc["taskDefinition"].endswith(f"task-definition/{FAMILY}:3")
    assert svc["runningCount"] == 3 and svc["desiredCount"] == 3 and svc["pendingCount"] == 0
    [deployment] = svc["deployments"]
    assert deployment["status"] == "PRIMARY" and deployment["rolloutState"] == "COMPLETED"
    assert deployment["id"].startswith("ecs-svc/") and len(deployment["id"]) == len("ecs-svc/") + 19
    config = svc["deploymentConfiguration"]
    assert config["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert config["maximumPercent"] == 200 and config["minimumHealthyPercent"] == 100
    assert {"key": seed.LAST_STABLE_TAG, "value": f"{FAMILY}:3"} in svc["tags"]
    assert svc["loadBalancers"][0]["targetGroupArn"] == sb.state["elbv2"]["target_group_arn"]
    assert svc["launchType"] == "FARGATE"

    ecs = sb.client("ecs")
    active = ecs.list_task_definitions(familyPrefix=FAMILY, status="ACTIVE")["taskDefinitionArns"]
    inactive = ecs.list_task_definitions(familyPrefix=FAMILY, status="INACTIVE")["taskDefinitionArns"]
    assert [a.rsplit(":", 1)[1] for a in active] == ["2", "3", "4", "5"]
    assert [a.rsplit(":", 1)[1] for a in inactive] == ["1"]
    page = ecs.list_task_definitions(familyPrefix=FAMILY, maxResults=2, sort="DESC")
    assert [a.rsplit(":", 1)[1] for a in page["taskDefinitionArns"]] == ["5", "4"] and page["nextToken"]
    assert f"{FAMILY}-worker" in ecs.list_task_definition_families(familyPrefix=FAMILY)["families"]
    td3 = ecs.describe_task_definition(taskDefinition=f"{FAMILY}:3", include=["TAGS"])
    assert any(t["key"] == seed.STABLE_TAG for t in td3["tags"])
    env = {e["name"]: e["value"] for e in td3["taskDefinition"]["containerDefinitions"][0]["environment"]}
    assert env["OPENAI_API_KEY"].startswith("sk-sandbox-") and sb.secrets["postgres_password"] in env["DATABASE_URL"]
    assert td3["taskDefinition"]["containerDefinitions"][0]["secrets"][0]["name"] == "WAHA_API_KEY"

    # Service tags work as a ledger (tag, overwrite, untag).
    arn = svc["serviceArn"]
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "hotelbot.ops/test", "value": "1"}])
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "hotelbot.ops/test", "value": "2"}])
    tags = ecs.list_tags_for_resource(resourceArn=arn)["tags"]
    assert [t["value"] for t in tags if t["key"] == "hotelbot.ops/test"] == ["2"]
    ecs.untag_resource(resourceArn=arn, tagKeys=["hotelbot.ops/test"])
    assert all(t["key"] != "hotelbot.ops/test" for t in ecs.list_tags_for_resource(resourceArn=arn)["tags"])

    assert control.serving(dir=sb.dir)["revision"] == 3


def test_bad_revision_deploys_and_then_misbehaves(sb: Sandbox) -> None:
    before = sb.describe()
    response = sb.client("ecs").update_service(cluster=CLUSTER, service=SERVICE, taskDefinition=f"{FAMILY}:4")["service"]
    new = response["deployments"][0]
    assert new["id"] != before["deployments"][0]["id"]
    assert new["status"] == "PRIMARY" and new["rolloutState"] == "IN_PROGRESS" and new["runningCount"] == 0
    assert new["taskDefinition"].endswith(f"task-definition/{FAMILY}:4")
    assert response["taskDefinition"] == new["taskDefinition"]
    assert [d["status"] for d in response["deployments"]] == ["PRIMARY", "ACTIVE"]

    def completed() -> dict[str, Any] | None:
        svc = sb.describe()
        # ECS lists the old deployment, draining, beside a COMPLETED new one for a while.
        steady = svc["deployments"][0]["rolloutState"] == "COMPLETED" and len(svc["deployments"]) == 1
        return svc if steady else None

    svc = wait_until(completed, timeout=10)
    assert [d["id"] for d in svc["deployments"]] == [new["id"]]
    assert svc["runningCount"] == 3
    messages = [e["message"] for e in svc["events"]]
    assert messages[0] == f"(service {SERVICE}) has reached a steady state."
    assert f"(service {SERVICE}) (deployment {new['id']}) deployment completed." in messages
    assert len(messages) > len(before["events"])

    health = wait_until(lambda: (r := sb.bot("/api/health"))[1].get("version") == "1.3.0-bad" and r, timeout=5)
    assert health[0] == 503 and health[1]["status"] == "unhealthy"
    assert health[1]["taskDefinition"] == f"{FAMILY}:4"
    statuses = [sb.bot("/api/faqs?language=en&limit=5")[0] for _i in range(20)]
    assert statuses.count(500) == 6 and statuses.count(200) == 14


def test_broken_revision_fails_and_ecs_rolls_back_by_itself(sb: Sandbox) -> None:
    ecs = sb.client("ecs")
    control.set_deploy_seconds(0, dir=sb.dir)
    good = ecs.update_service(cluster=CLUSTER, service=SERVICE, taskDefinition=f"{FAMILY}:3")["service"]["deployments"][0]
    wait_until(lambda: sb.describe()["deployments"][0]["rolloutState"] == "COMPLETED")
    wait_until(lambda: sb.bot("/api/health")[0] == 200, timeout=5)
    control.set_deploy_seconds(0.5, dir=sb.dir)

    broken = ecs.update_service(cluster=CLUSTER, service=SERVICE, taskDefinition=f"{FAMILY}:5")["service"]["deployments"][0]
    seen_failed = wait_until(lambda: next((d for d in sb.describe()["deployments"]
                                           if d["id"] == broken["id"] and d["rolloutState"] == "FAILED"), None), timeout=10)
    assert seen_failed["failedTasks"] >= 3 and seen_failed["runningCount"] == 0
    assert seen_failed["rolloutStateReason"] == "ECS deployment circuit breaker: tasks failed to start."
    assert sb.bot("/api/health")[1]["version"] == "1.2.0"  # old tasks kept serving

    svc = wait_until(lambda: (s := sb.describe())["deployments"][0]["rolloutState"] == "COMPLETED"
                     and len(s["deployments"]) == 1 and s, timeout=10)
    assert svc["taskDefinition"].endswith(f"{FAMILY}:3")
    assert svc["deployments"][0]["id"] not in (good["id"], broken["id"])
    messages = [e["message"] for e in svc["events"]]
    assert f"(service {SERVICE}) (deployment {broken['id']}) deployment failed: tasks failed to start." in messages
    assert f"(service {SERVICE}) rolling back to deployment {good['id']}." in messages
    status, body = sb.bot("/api/health")
    assert status == 200 and body["version"] == "1.2.0" and body["database"] == "ok"


def test_scale_to_zero_and_back(sb: Sandbox) -> None:
    ecs = sb.client("ecs")
    primary = sb.describe()["deployments"][0]["id"]
    response = ecs.update_service(cluster=CLUSTER, service=SERVICE, desiredCount=0)["service"]
    assert [d["id"] for d in response["deployments"]] == [primary]  # no new deployment
    assert response["desiredCount"] == 0
    wait_until(lambda: sb.describe()["runningCount"] == 0)
    assert wait_until(lambda: sb.bot("/api/health") == (503, {"error": "no running tasks"}), timeout=5)
    assert sb.bot("/api/faqs")[0] == 503

    ecs.update_service(cluster=CLUSTER, service=SERVICE, desiredCount=3)
    svc = wait_until(lambda: (s := sb.describe())["runningCount"] == 3 and s)
    assert svc["deployments"][0]["id"] == primary and svc["deployments"][0]["rolloutState"] == "COMPLETED"
    wait_until(lambda: sb.bot("/api/health")[0] == 200, timeout=5)


def test_force_new_deployment_and_no_op_update(sb: Sandbox) -> None:
    ecs = sb.client("ecs")
    current = sb.describe()["deployments"][0]
    same = ecs.update_service(cluster=CLUSTER, service=SERVICE, taskDefinition=current["taskDefinition"])["service"]
    assert [d["id"] for d in same["deployments"]] == [current["id"]]  # same revision: nothing to deploy

    forced = ecs.update_service(cluster=CLUSTER, service=SERVICE, forceNewDeployment=True)["service"]["deployments"][0]
    assert forced["id"] != current["id"] and forced["taskDefinition"] == current["taskDefinition"]
    # Steady: the forced deployment COMPLETED and the old one drained away.
    svc = wait_until(lambda: (s := sb.describe())["deployments"][0]["rolloutState"] == "COMPLETED"
                     and len(s["deployments"]) == 1 and s)
    assert [d["id"] for d in svc["deployments"]] == [forced["id"]] and svc["runningCount"] == 3


def test_aws_endpoint_down_and_up_keeps_state(sb: Sandbox) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import EndpointConnectionError

    before = sb.describe()
    port = int(sb.state["aws"]["endpoint_url"].rsplit(":", 1)[1])
    ecs = boto3.session.Session().client(
        "ecs", region_name="us-east-1", endpoint_url=sb.state["aws"]["endpoint_url"], aws_access_key_id="testing",
        aws_secret_access_key="testing", config=Config(retries={"max_attempts": 1}))
    ecs.list_clusters()  # a pooled keep-alive connection must not outlive "down" either
    control.aws_down(dir=sb.dir)
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        with pytest.raises(EndpointConnectionError):
            ecs.describe_services(cluster=CLUSTER, services=[SERVICE])
        assert sb.bot("/api/health")[0] == 200  # the tasks keep serving
    finally:
        control.aws_up(dir=sb.dir)
    after = sb.describe()
    assert after["deployments"][0]["id"] == before["deployments"][0]["id"]
    assert after["taskDefinition"] == before["taskDefinition"]
    assert after["events"] == before["events"]


def test_calls_are_counted(sb: Sandbox) -> None:
    control.reset_calls(dir=sb.dir)
    ecs, elbv2 = sb.client("ecs"), sb.client("elbv2")
    ecs.describe_services(cluster=CLUSTER, services=[SERVICE])
    ecs.describe_services(cluster=CLUSTER, services=[SERVICE])
    ecs.list_task_definitions(familyPrefix=FAMILY)
    elbv2.describe_target_health(TargetGroupArn=sb.state["elbv2"]["target_group_arn"])
    assert control.calls(dir=sb.dir) == {
        "ecs:DescribeServices": 2,
        "ecs:ListTaskDefinitions": 1,
        "elasticloadbalancing:DescribeTargetHealth": 1,
    }
    control.reset_calls(dir=sb.dir)
    assert control.calls(dir=sb.dir) == {}


def test_prometheus_scrapes_the_bot(sb: Sandbox) -> None:
    for _i in range(3):
        sb.bot("/api/health")
    query = urllib.parse.urlencode({"query": 'http_requests_total{job="hotel-voice-bot",path="/api/health"}'})
    url = f"{sb.state['prometheus']['url']}/api/v1/query?{query}"

    def scraped() -> list[dict[str, Any]]:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())["data"]["result"]

    result = wait_until(scraped, timeout=15, every=0.5)
    labels = result[0]["metric"]
    assert labels["job"] == "hotel-voice-bot" and labels["method"] == "GET"
    assert {r["metric"]["status"] for r in result} >= {"200"}
    assert {r["metric"]["version"] for r in result} >= {"1.2.0", "1.3.0-bad"}


def test_postgres_rows_password_auth_and_webhook_insert(sb: Sandbox) -> None:
    import psycopg

    pg = sb.state["postgres"]
    params = dict(host=pg["host"], port=pg["port"], user=pg["user"], dbname=pg["database"], connect_timeout=5)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(password="wrong", **params)
    with psycopg.connect(password=sb.secrets["postgres_password"], **params) as conn:

        def count() -> int:
            return conn.execute("SELECT count(*) FROM public.bot_messages").fetchone()[0]

        assert count() == 1000
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'bot_messages'").fetchone()[0]
        assert owner == "hotelbot"

        token = urllib.parse.quote(sb.secrets["waha_webhook_token"])
        message = {"from": "1234567890", "to": "0987654321", "body": "Test message", "messageId": "test-123", "type": "text"}
        assert sb.bot(f"/api/whatsapp/webhook?token={token}", "POST", message) == (200, {"received": True, "messageId": "test-123"})
        assert count() == 1001
        assert sb.bot(f"/api/whatsapp/webhook?token={token}", "POST", message)[0] == 200  # idempotent
        assert count() == 1001
        assert sb.bot("/api/whatsapp/webhook?token=nope", "POST", message)[0] == 401
        assert sb.bot("/api/whatsapp/webhook", "POST", message)[0] == 401
        assert sb.bot(f"/api/whatsapp/webhook?token={token}", "POST", {"from": "1"})[0] == 400
        row = conn.execute("SELECT direction, body FROM public.bot_messages WHERE payload->>'messageId' = 'test-123'").fetchone()
        assert row == ("inbound", "Test message")


def test_bot_conversations_and_faqs(sb: Sandbox) -> None:
    body = {"phoneNumber": "1234567890", "hotelInfo": {"id": "hotel-123", "name": "Test Hotel", "location": "Test City"}}
    status, created = sb.bot("/api/conversations", "POST", body, {"Authorization": f"Bearer {sb.secrets['bot_api_token']}"})
    assert status == 201 and len(created["conversationId"]) == 36
    assert sb.bot("/api/conversations", "POST", body)[0] == 401
    assert sb.bot("/api/conversations", "POST", body, {"Authorization": "Bearer wrong"})[0] == 401
    status, faqs = sb.bot("/api/faqs?language=en&limit=5")
    assert status == 200 and faqs["language"] == "en" and len(faqs["faqs"]) == 5
    assert set(faqs["faqs"][0]) == {"id", "question", "answer"}
    assert sb.bot("/api/faqs?limit=abc")[0] == 400
    assert sb.bot("/api/faqs?language=xx")[0] == 400


def test_second_sandbox_runs_alongside(sb: Sandbox) -> None:
    other = _start(_new_dir())
    try:
        assert other.state["aws"]["endpoint_url"] != sb.state["aws"]["endpoint_url"]
        assert other.describe()["runningCount"] == 3
        assert sb.cli("status").returncode == 0 and other.cli("status").returncode == 0
        procs.stop([other.state["bot"]["pid"]])
        status = other.cli("status")
        assert status.returncode != 0 and "bot         DOWN" in status.stdout
        assert sb.cli("status").returncode == 0
    finally:
        assert other.cli("down").returncode == 0
        shutil.rmtree(other.dir, ignore_errors=True)


def test_down_leaves_no_process(sb: Sandbox) -> None:
    pg_pid = int((Path(sb.state["postgres"]["data_dir"]) / "postmaster.pid").read_text().split()[0])
    pids = [sb.state["aws"]["pid"], sb.state["bot"]["pid"], sb.state["prometheus"]["pid"], pg_pid]
    assert all(procs.alive(pid) for pid in pids)
    result = sb.cli("down")
    assert result.returncode == 0, result.stderr
    assert not [pid for pid in pids if procs.alive(pid)]
    assert not (sb.dir / "state.json").exists() and not (sb.dir / "secrets.json").exists()
    assert not (sb.dir / "pg").exists() and (sb.dir / "logs").is_dir()
    assert sb.cli("status").returncode != 0
