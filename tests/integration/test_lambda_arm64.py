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

import contextlib
import json
import os
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.contract.keys_item import hash_key
from chalicelib.runtime.deadline import REQUEST_BUDGET_SECONDS
from edgectl.cmd_render_policies import ROOT
from edgectl.devstack import free_port
from edgectl.lambda_shim import function_url_event
from edgectl.lookout_fixture_db import LOCAL_SERVER_URL, LookoutDatabase, create_database, drop_database
from edgectl.resources import StackNames, create_resources
from tests import lambda_arm64
from tests.conftest import REGION, drain_queue, key_item
from tests.fake_lookout import FakeLookout, enqueue, queue_message, sqs_event
from tests.functional.test_otlp_routes import PROTOBUF, spans_request
from tests.functional.test_ship_logs import data_message, subscription_event

ARTIFACT = ROOT / "dist" / "prod" / "deployment.zip"
CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())
# Lambda answers long before this; emulation on a loaded 2-core machine can take minutes to start.
SETTLE_SECONDS = 420
# The Lambda deadline handed to each invocation: the function's timeout, stretched as emulation is.
EMULATION_SLOWDOWN = 10
KEY = "lk_arm64_edge_key_0123456789"
AWS_CLIENT_ENV = {
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
HANDLERS = {
    "api_handler": "app.app",
    "forward_events": "app.forward_events",
    "sync_keys": "app.sync_keys",
    "ship_logs": "app.ship_logs",
}

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
def endpoint(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """This process's AWS clients (conftest's helpers) on the moto server the functions use."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return moto_url


def secure_parameter(name: str, value: str) -> str:
    boto3.client("ssm", region_name=REGION).put_parameter(Name=name, Value=value, Type="SecureString")
    return name


def function_env(function: str, stack: StackNames, moto_url: str, **extra: str) -> dict[str, str]:
    """What Lambda and the stack give the function (names from .chalice/config.json)."""
    settings = CONFIG["lambda_functions"][function]
    return {
        "AWS_LAMBDA_FUNCTION_NAME": "lookout-edge-prod"
        if function == "api_handler"
        else f"lookout-edge-prod-{function}",
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


@dataclass
class Deployed:
    """A started function and its own tables and queues."""

    name: str
    stack: StackNames
    function: lambda_arm64.EmulatedFunction

    def send(self, event: Any) -> lambda_arm64.Invocation:
        """Queue an invocation with the function's timeout (stretched as emulation is)."""
        return self.function.submit(event, CONFIG["lambda_functions"][self.name]["lambda_timeout"] * EMULATION_SLOWDOWN)

    def answer(self, invocation: lambda_arm64.Invocation) -> Any:
        """Its response, once settled."""
        settled = self.function.settled(invocation, SETTLE_SECONDS)
        assert settled.outcome == "response", f"{settled.body}\n{self.function.log()[-3000:]}"
        return settled.body


@dataclass
class Backends:
    """What the functions reach besides AWS: a stub Lookout and a Lookout database on MariaDB."""

    lookout: FakeLookout
    database: LookoutDatabase
    token: str = "edge-token-arm64"
    tail_key: str = "lk_arm64_tail_key_0123456789"


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    name = f"lookout_arm64_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    database = LookoutDatabase(create_database(LOCAL_SERVER_URL, name))
    lookout = FakeLookout().start()
    try:
        yield Backends(lookout, database)
    finally:
        lookout.stop()
        database.close()
        drop_database(LOCAL_SERVER_URL, name)


@pytest.fixture(scope="module")
def deployed(
    lambda_parts: tuple[Path, Path, Path], moto_url: str, backends: Backends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Deployed]]:
    """Every function started at once, so their emulated cold starts overlap; each on its own stack."""
    root, task, sdk = lambda_parts
    run = uuid.uuid4().hex[:8]
    with pytest.MonkeyPatch.context() as env, contextlib.ExitStack() as running:
        for name, value in {**AWS_CLIENT_ENV, "AWS_ENDPOINT_URL": moto_url}.items():
            env.setenv(name, value)
        stacks = {f: create_resources(boto3.Session(region_name=REGION), prefix=f"{f[:4]}-{run}-") for f in HANDLERS}
        parameters = f"/lookout-edge/arm64-{run}"
        extra = {
            "api_handler": {
                # protobuf would fall back to pure Python without a word if its aarch64 upb module did not load.
                "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "upb",
                "PYTHONWARNINGS": "error::UserWarning:google.protobuf.internal.api_implementation",
                # The request budget as slow as the emulation: a cold request imports inside it.
                "LOOKOUT_EDGE_REQUEST_BUDGET_SECONDS": str(REQUEST_BUDGET_SECONDS * EMULATION_SLOWDOWN),
            },
            "forward_events": {
                "LOOKOUT_INGEST_EDGE_BACKEND_URL": backends.lookout.url,
                "LOOKOUT_INGEST_EDGE_TOKEN_PARAM": secure_parameter(f"{parameters}/token", backends.token),
            },
            "sync_keys": {"LOOKOUT_DB_URL_PARAM": secure_parameter(f"{parameters}/db-url", backends.database.url)},
            "ship_logs": {"LOOKOUT_EDGE_TAIL_API_KEY_PARAM": secure_parameter(f"{parameters}/tail", backends.tail_key)},
        }
        deployed = {}
        for name, handler in HANDLERS.items():
            variables = function_env(name, stacks[name], moto_url, **extra[name])
            workdir = tmp_path_factory.mktemp(name)
            function = running.enter_context(lambda_arm64.run_function(root, task, sdk, handler, variables, workdir))
            deployed[name] = Deployed(name, stacks[name], function)
        env.undo()
        yield deployed


def assert_ran_on_arm64_from_bytecode(function: lambda_arm64.EmulatedFunction) -> None:
    """Python 3.13 on aarch64, allowed to write bytecode (as Lambda is: its file system stops it),
    yet nothing compiled from source and no .pyc written: the package's own bytecode ran."""
    lines = function.probe_lines()
    assert lines[:2] == ["python 3.13 aarch64 dont_write_bytecode=0", f"compiled {lambda_arm64.PROBE_SELF_CHECK}"]
    assert lines[2:] == [], function.log()[-3000:]


@dataclass
class Sent:
    """What each function was handed, sent to all four before any answer is awaited: their first
    invocations (where the lazy imports run) overlap too."""

    edge: tuple[lambda_arm64.Invocation, lambda_arm64.Invocation]
    forward: lambda_arm64.Invocation
    forwarded: list[dict[str, Any]]
    sync: lambda_arm64.Invocation
    synced_keys: list[str]
    ship: lambda_arm64.Invocation


@pytest.fixture(scope="module")
def sent(deployed: dict[str, Deployed], backends: Backends, moto_url: str) -> Sent:
    with pytest.MonkeyPatch.context() as env:
        for name, value in {**AWS_CLIENT_ENV, "AWS_ENDPOINT_URL": moto_url}.items():
            env.setenv(name, value)
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        edge, forwarder, sync, shipper = (deployed[n] for n in HANDLERS)

        dynamodb.put_item(TableName=edge.stack.keys_table, Item=key_item(KEY, project_id="42", organization_id="7"))
        ingest = function_url_event(
            "/api/ingest",
            b'{"message": "boom", "level": "error"}',
            {"content-type": "application/json", "x-api-key": KEY},
        )
        otlp = function_url_event(
            "/v1/traces", spans_request().SerializeToString(), {"content-type": PROTOBUF, "x-api-key": KEY}
        )

        forwarded = [queue_message({"message": "one"}), queue_message({"message": "two"})]
        enqueue(forwarder.stack.queue_url, forwarded)

        synced_keys = [backends.database.insert_key(key_id=1, project_id=1, organization_id=1)]
        synced_keys.append(backends.database.insert_key(key_id=2, project_id=2, organization_id=1))
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

        tail = key_item(backends.tail_key, project_id="77", organization_id="8")
        dynamodb.put_item(TableName=shipper.stack.keys_table, Item=tail)
        logs = subscription_event(data_message("START RequestId: 1", "order 17 paid", "END RequestId: 1"))

        return Sent(
            edge=(edge.send(ingest), edge.send(otlp)),
            forward=forwarder.send(sqs_event(forwarder.stack.queue_url)),
            forwarded=forwarded,
            sync=sync.send(scheduled),
            synced_keys=synced_keys,
            ship=shipper.send(logs),
        )


def test_function_url_ingest_is_202_and_otlp_runs_protobufs_arm64_wheel(
    deployed: dict[str, Deployed], sent: Sent, endpoint: str
) -> None:
    edge = deployed["api_handler"]
    accepted, traced = (edge.answer(invocation) for invocation in sent.edge)
    assert_ran_on_arm64_from_bytecode(edge.function)

    assert accepted["statusCode"] == 202, accepted
    body = json.loads(accepted["body"])
    assert body["status"] == "accepted"
    assert (traced["statusCode"], traced["headers"]["Content-Type"]) == (200, PROTOBUF)
    queued = drain_queue(edge.stack.queue_url)
    assert [(m["signal"], m["project_id"], m["path"]) for m in queued] == [
        ("error", "42", "/api/ingest"),
        ("otlp", "42", "/v1/traces"),
    ]
    assert queued[0]["event_id"] == body["event_id"] and queued[0]["payload"]["message"] == "boom"


def test_sqs_batch_reaches_lookout(deployed: dict[str, Deployed], sent: Sent, backends: Backends) -> None:
    forwarder = deployed["forward_events"]
    result = forwarder.answer(sent.forward)
    assert_ran_on_arm64_from_bytecode(forwarder.function)

    assert result == {"batchItemFailures": []}
    requests = backends.lookout.requests
    delivered = [e for request in requests for e in request.body["events"]]
    assert sorted(e["event_id"] for e in delivered) == sorted(m["event_id"] for m in sent.forwarded)
    assert {r.headers.get("authorization") for r in requests} == {f"Bearer {backends.token}"}


def test_scheduled_key_sync_mirrors_mariadb(deployed: dict[str, Deployed], sent: Sent, endpoint: str) -> None:
    sync = deployed["sync_keys"]
    summary = sync.answer(sent.sync)
    assert_ran_on_arm64_from_bytecode(sync.function)

    assert (summary["scanned"], summary["written"], summary["deleted"]) == (2, 2, 0), summary
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=sync.stack.keys_table)["Items"]
    assert sorted(i["key_hash"]["S"] for i in items) == sorted(hash_key(k) for k in sent.synced_keys)


def test_cloudwatch_logs_subscription_is_shipped(
    deployed: dict[str, Deployed], sent: Sent, backends: Backends, endpoint: str
) -> None:
    shipper = deployed["ship_logs"]
    shipped = shipper.answer(sent.ship)
    assert_ran_on_arm64_from_bytecode(shipper.function)

    (queued,) = drain_queue(shipper.stack.queue_url)
    assert shipped == {"shipped": 1, "event_ids": [queued["event_id"]]}
    assert (queued["signal"], queued["project_id"], queued["path"]) == ("log", "77", "cloudwatch-logs")
    assert [e["message"] for e in queued["payload"]["entries"]] == [
        "START RequestId: 1",
        "order 17 paid",
        "END RequestId: 1",
    ]
    assert backends.tail_key not in json.dumps(queued)
