"""The real `make package` artifact, run as Lambda runs it: python3.13 on arm64.

Each function starts in an aarch64 Debian 13 root under QEMU user emulation (tests/lambda_arm64.py)
through AWS's runtime interface client, with the package read-only in /var/task, the runtime's
boto3 in its own directory, and moto, MariaDB and a stub Lookout on loopback. One event per
function must answer as the x86 tests say it does, from the package's cpython-313 bytecode: a
module compiled at start or a bytecode write is a failure (an audit hook reports both).
Statuses and contents are checked, never durations (emulation is 5-10x slower).

Needs `make package` and `python -m tests.lambda_arm64 prepare` first; `make test` runs both.
"""

from __future__ import annotations

import json
import os
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import lambda_arm64
import pytest
from conftest import REGION, drain_queue, key_item
from fake_lookout import FakeLookout, enqueue, queue_message, sqs_event
from test_otlp_routes import PROTOBUF, spans_request
from test_ship_logs import data_message, subscription_event

from chalicelib.contract.keys_item import hash_key
from edgectl.cmd_render_policies import ROOT
from edgectl.devstack import free_port
from edgectl.lambda_shim import function_url_event
from edgectl.resources import StackNames, create_resources

ARTIFACT = ROOT / "dist" / "prod" / "deployment.zip"
CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())
# Lambda answers long before this; emulation on a loaded 2-core machine can take minutes to start.
SETTLE_SECONDS = 420
# The Lambda deadline handed to each invocation: the function's timeout, stretched as emulation is.
EMULATION_SLOWDOWN = 10
KEY = "lk_arm64_edge_key_0123456789"

pytestmark = pytest.mark.timeout(900)


def _missing(what: str) -> None:
    """CI must run this test; elsewhere it says what to run."""
    message = f"{what}: `make test` builds it (make package; python -m tests.lambda_arm64 prepare)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def lambda_parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(the cached aarch64 root, the unzipped artifact, the runtime's boto3 directory)."""
    if not ARTIFACT.exists():
        _missing(f"no {ARTIFACT.relative_to(ROOT)}")
    if not lambda_arm64.READY.exists():
        _missing(f"no aarch64 root in {lambda_arm64.ROOT}")
    task = tmp_path_factory.mktemp("task")
    with zipfile.ZipFile(ARTIFACT) as archive:
        archive.extractall(task)
    sources = [Path("app.py"), *(p.relative_to(ROOT) for p in (ROOT / "chalicelib").rglob("*.py"))]
    stale = [str(s) for s in sources if not (task / s).is_file() or (task / s).read_bytes() != (ROOT / s).read_bytes()]
    if stale:
        _missing(f"{ARTIFACT.relative_to(ROOT)} is not built from this tree ({', '.join(stale[:3])} differ)")
    return lambda_arm64.ROOT, task, lambda_arm64.sdk_directory()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def stack(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> StackNames:
    """This test's own tables and queues on the moto server, which this process's clients use too."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return create_resources(boto3.Session(region_name=REGION), prefix=f"arm64-{uuid.uuid4().hex[:8]}-")


def secure_parameter(name: str, value: str) -> str:
    boto3.client("ssm", region_name=REGION).put_parameter(Name=name, Value=value, Type="SecureString")
    return name


def function_env(function: str, stack: StackNames, moto_url: str, **extra: str) -> dict[str, str]:
    """What Lambda and the stack give the function (names from .chalice/config.json)."""
    settings = CONFIG["lambda_functions"][function]
    names = {"api_handler": "lookout-edge-prod"}
    return {
        "AWS_LAMBDA_FUNCTION_NAME": names.get(function, f"lookout-edge-prod-{function}"),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(settings["lambda_memory_size"]),
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_ENDPOINT_URL": moto_url,
        **CONFIG["environment_variables"],
        **stack.environment(),
        **extra,
    }


def deadline(function: str) -> float:
    return CONFIG["lambda_functions"][function]["lambda_timeout"] * EMULATION_SLOWDOWN


def assert_ran_on_arm64_from_bytecode(function: lambda_arm64.EmulatedFunction) -> None:
    """Python 3.13 on aarch64, allowed to write bytecode (as Lambda is: its file system stops it),
    yet nothing compiled from source and no .pyc written: the package's own bytecode ran."""
    lines = function.probe_lines()
    assert lines[:2] == ["python 3.13 aarch64 dont_write_bytecode=0", f"compiled {lambda_arm64.PROBE_SELF_CHECK}"]
    assert lines[2:] == [], function.log()[-3000:]


def answer(function: lambda_arm64.EmulatedFunction, event: Any, deadline_s: float) -> Any:
    invocation = function.invoke(event, deadline_s, SETTLE_SECONDS)
    assert invocation.outcome == "response", f"{invocation.body}\n{function.log()[-3000:]}"
    return invocation.body


def test_function_url_ingest_is_202_and_otlp_runs_protobufs_arm64_wheel(
    lambda_parts: tuple[Path, Path, Path], stack: StackNames, moto_url: str, tmp_path: Path
) -> None:
    root, task, sdk = lambda_parts
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=stack.keys_table, Item=key_item(KEY, project_id="42", organization_id="7")
    )
    env = function_env(
        "api_handler",
        stack,
        moto_url,
        # protobuf would fall back to pure Python without a word if its aarch64 upb module did not load.
        PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="upb",
        PYTHONWARNINGS="error::UserWarning:google.protobuf.internal.api_implementation",
    )
    ingest = function_url_event(
        "/api/ingest", b'{"message": "boom", "level": "error"}', {"content-type": "application/json", "x-api-key": KEY}
    )
    otlp = function_url_event(
        "/v1/traces", spans_request().SerializeToString(), {"content-type": PROTOBUF, "x-api-key": KEY}
    )
    with lambda_arm64.run_function(root, task, sdk, "app.app", env, tmp_path) as function:
        accepted = answer(function, ingest, deadline("api_handler"))
        traced = answer(function, otlp, deadline("api_handler"))
        assert_ran_on_arm64_from_bytecode(function)

    assert accepted["statusCode"] == 202, accepted
    body = json.loads(accepted["body"])
    assert body["status"] == "accepted"
    assert (traced["statusCode"], traced["headers"]["Content-Type"]) == (200, PROTOBUF)
    queued = drain_queue(stack.queue_url)
    assert [(m["signal"], m["project_id"], m["path"]) for m in queued] == [
        ("error", "42", "/api/ingest"),
        ("otlp", "42", "/v1/traces"),
    ]
    assert queued[0]["event_id"] == body["event_id"] and queued[0]["payload"]["message"] == "boom"


def test_sqs_batch_reaches_lookout(
    lambda_parts: tuple[Path, Path, Path], stack: StackNames, moto_url: str, tmp_path: Path
) -> None:
    root, task, sdk = lambda_parts
    lookout = FakeLookout().start()
    try:
        token = secure_parameter(f"/lookout-edge/arm64/{uuid.uuid4().hex[:8]}/token", "edge-token-arm64")
        env = function_env(
            "forward_events",
            stack,
            moto_url,
            LOOKOUT_INGEST_EDGE_BACKEND_URL=lookout.url,
            LOOKOUT_INGEST_EDGE_TOKEN_PARAM=token,
        )
        messages = [queue_message({"message": "one"}), queue_message({"message": "two"})]
        enqueue(stack.queue_url, messages)
        event = sqs_event(stack.queue_url)
        with lambda_arm64.run_function(root, task, sdk, "app.forward_events", env, tmp_path) as function:
            result = answer(function, event, deadline("forward_events"))
            assert_ran_on_arm64_from_bytecode(function)
    finally:
        lookout.stop()

    assert result == {"batchItemFailures": []}
    delivered = [e for request in lookout.requests for e in request.body["events"]]
    assert sorted(e["event_id"] for e in delivered) == sorted(m["event_id"] for m in messages)
    assert {r.headers.get("authorization") for r in lookout.requests} == {"Bearer edge-token-arm64"}


def test_scheduled_key_sync_mirrors_mariadb(
    lambda_parts: tuple[Path, Path, Path], stack: StackNames, moto_url: str, lookout_db: Any, tmp_path: Path
) -> None:
    root, task, sdk = lambda_parts
    keys = [lookout_db.insert_key(key_id=1, project_id=1, organization_id=1)]
    keys.append(lookout_db.insert_key(key_id=2, project_id=2, organization_id=1))
    db_url = secure_parameter(f"/lookout-edge/arm64/{uuid.uuid4().hex[:8]}/db-url", lookout_db.url)
    env = function_env("sync_keys", stack, moto_url, LOOKOUT_DB_URL_PARAM=db_url)
    scheduled = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-12-03T18:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:123456789012:rule/lookout-edge-prod-sync_keys"],
        "detail": {},
    }
    with lambda_arm64.run_function(root, task, sdk, "app.sync_keys", env, tmp_path) as function:
        summary = answer(function, scheduled, deadline("sync_keys"))
        assert_ran_on_arm64_from_bytecode(function)

    assert (summary["scanned"], summary["written"], summary["deleted"]) == (2, 2, 0), summary
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=stack.keys_table)["Items"]
    assert sorted(i["key_hash"]["S"] for i in items) == sorted(hash_key(k) for k in keys)


def test_cloudwatch_logs_subscription_is_shipped(
    lambda_parts: tuple[Path, Path, Path], stack: StackNames, moto_url: str, tmp_path: Path
) -> None:
    root, task, sdk = lambda_parts
    tail_key = "lk_arm64_tail_key_0123456789"
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=stack.keys_table, Item=key_item(tail_key, project_id="77", organization_id="8")
    )
    tail_param = secure_parameter(f"/lookout-edge/arm64/{uuid.uuid4().hex[:8]}/tail-key", tail_key)
    env = function_env("ship_logs", stack, moto_url, LOOKOUT_EDGE_TAIL_API_KEY_PARAM=tail_param)
    event = subscription_event(data_message("START RequestId: 1", "order 17 paid", "END RequestId: 1"))
    with lambda_arm64.run_function(root, task, sdk, "app.ship_logs", env, tmp_path) as function:
        shipped = answer(function, event, deadline("ship_logs"))
        assert_ran_on_arm64_from_bytecode(function)

    (queued,) = drain_queue(stack.queue_url)
    assert shipped == {"shipped": 1, "event_ids": [queued["event_id"]]}
    assert (queued["signal"], queued["project_id"], queued["path"]) == ("log", "77", "cloudwatch-logs")
    assert [e["message"] for e in queued["payload"]["entries"]] == [
        "START RequestId: 1",
        "order 17 paid",
        "END RequestId: 1",
    ]
    assert tail_key not in json.dumps(queued)
