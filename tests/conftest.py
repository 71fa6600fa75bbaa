"""Shared fixtures: a clean environment per test, moto AWS with the stack's resources, keys."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.contract.keys_item import hash_key
from chalicelib.runtime import container
from chalicelib.runtime.config import ENV_NAMES, settings
from edgectl.iam_enforce import Enforcer, enforce_on_container_session
from edgectl.moto_linear_sqs import install as install_linear_sqs
from edgectl.resources import StackNames, create_resources

if TYPE_CHECKING:
    from tests.fake_lookout import FakeLookout

REGION = "us-east-1"


class Clock:
    """A hand-moved clock for caches that take one: set or advance `now`."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def reset_container_state() -> None:
    """What a new Lambda container would start from: no per-container values, and the functions'
    `logging` loggers unconfigured. Powertools configures a service's logger once per process, with
    a handler on the sys.stdout of that moment: a test's captured stream, closed after that test,
    so a later test's log line failed with a traceback on stderr (test_fuzz.py run alone)."""
    container.reset()
    for name, log in list(logging.root.manager.loggerDict.items()):
        if name.startswith("lookout-edge-") and isinstance(log, logging.Logger):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            for mark in [attribute for attribute in vars(log) if attribute.startswith("powertools_")]:
                delattr(log, mark)  # Powertools' handler and buffer, kept on the logger
            log.__dict__.pop("init", None)  # Powertools' "configured" mark (LOGGER_ATTRIBUTE_PRECONFIGURED)


@pytest.fixture(scope="session", autouse=True)
def one_botocore_loader() -> Iterator[None]:
    """Every botocore session of this process reads AWS's service models through one loader.

    A Lambda container parses them once (its session lives as long as it does); a test starts a new
    container, and the moto setup a new boto3 session, so each parsed the same JSON again: about
    half of `make test-fast`'s CPU time. The loader caches what it parsed and holds no other state
    (boto3 appends its data folder to the search path once per session; kept to one entry here)."""
    import botocore.loaders
    import botocore.session

    original = botocore.session.create_loader
    loaders: dict[str | None, botocore.loaders.Loader] = {}

    def shared_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
        loader = loaders.get(search_path_string)
        if loader is None:
            loader = loaders[search_path_string] = original(search_path_string)
        paths = loader.search_paths
        paths[:] = list(dict.fromkeys(paths))
        return loader

    botocore.session.create_loader = shared_loader
    yield
    botocore.session.create_loader = original


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("LOOKOUT_", "AWS_")) or name in ENV_NAMES.values():
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "LookoutEdge")
    reset_container_state()
    yield
    reset_container_state()


# (function, IAM action) -> calls judged in this process over the session, for the summary below.
JUDGED: Counter[tuple[str, str]] = Counter()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker (`make test-fast`) hands its counts to the controller, which prints them."""
    handed = getattr(session.config, "workeroutput", None)
    if handed is not None:
        handed["iam_judged"] = [[function, action, n] for (function, action), n in JUDGED.items()]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist's controller: add up what a finished worker judged."""
    for function, action, n in getattr(node, "workeroutput", {}).get("iam_judged", []):
        JUDGED[(function, action)] += n


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per function: which of its calls the tests judged against its policy."""
    functions = sorted({function for function, _ in JUDGED})
    for function in functions:
        actions = ", ".join(f"{a} {n}" for (f, a), n in sorted(JUDGED.items()) if f == function)
        terminalreporter.write_line(f"IAM judged ({function}): {actions}")


@pytest.fixture(autouse=True)
def iam(clean_environment: None) -> Iterator[Enforcer]:
    """Every test is an IAM test: each function's AWS calls are judged against its rendered policy
    (both deploy paths) and a denied one is answered AccessDenied, as AWS would (edgectl.iam_enforce):
    in this process, and in the local stacks' pieces, which judge their own and print what they refused.
    A test that provokes a denial on purpose takes it out of `iam.denials`."""
    from edgectl.devstack import LIVE_STACKS

    enforcer = Enforcer(os.environ)
    undo = enforce_on_container_session(enforcer)
    seen = {stack: len(stack.iam_denials) for stack in LIVE_STACKS}
    yield enforcer
    undo()
    JUDGED.update((function, action) for function, action, _ in enforcer.calls)
    denied = [str(denial) for denial in enforcer.denials]
    denied += [line for stack in LIVE_STACKS for line in stack.iam_denials[seen.get(stack, 0) :]]
    assert not denied, "denied as AWS would deny it:\n" + "\n".join(denied)


@cache
def resource_session() -> boto3.Session:
    """One boto3 session for the tests' own AWS calls (each test's tables and queues, its keys and
    drained messages): a new one per test parsed its configuration again."""
    return boto3.Session(region_name=REGION)


def aws_client(service: str, region: str = REGION) -> Any:
    """A boto3 client for the tests' own calls, made once per service, region and endpoint
    (AWS_ENDPOINT_URL): moto serves any client whenever it was made, and a new client per call
    (put_key, drain_queue in each of a fuzz test's examples) cost more CPU than the call."""
    return _aws_client(service, region, os.environ.get("AWS_ENDPOINT_URL"))


@cache
def _aws_client(service: str, region: str, endpoint: str | None) -> Any:
    return resource_session().client(service, region_name=region, endpoint_url=endpoint)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[StackNames]:
    """moto in-process with the tables and queues of infra/resources.json, env pointed at them."""
    # moto's SQS without its quadratic costs (edgectl/moto_linear_sqs.py, the local stack's too):
    # a send recounts the whole queue, a receive and a delete scan it, so 1,000 messages took minutes.
    install_linear_sqs()
    with mock_aws():
        names = create_resources(resource_session())
        for key, value in names.environment().items():
            monkeypatch.setenv(key, value)
        reset_container_state()
        yield names


def key_item(raw_key: str, project_id: str = "42", organization_id: str = "7", **attributes: Any) -> dict:
    """A keys-table item in low-level form; extra keyword attributes are typed by value."""
    item: dict[str, Any] = {
        "key_hash": {"S": hash_key(raw_key)},
        "key_id": {"S": "9"},
        "project_id": {"S": project_id},
        "organization_id": {"S": organization_id},
        "billing_ok": {"BOOL": True},
    }
    for name, value in attributes.items():
        if isinstance(value, bool):
            item[name] = {"BOOL": value}
        elif isinstance(value, (int, float)):
            item[name] = {"N": str(value)}
        elif isinstance(value, (list, tuple)):
            item[name] = {"L": [{"S": v} for v in value]}
        elif value is None:
            item.pop(name, None)
        else:
            item[name] = {"S": str(value)}
    return item


@pytest.fixture
def put_key(aws: StackNames, monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict]:
    """Write a key item: put_key("raw", billing_ok=False, ip_allowlist=["10.0.0.0/8"])."""

    def put(raw_key: str, **attributes: Any) -> dict:
        if attributes.get("rate_limit_per_minute"):
            start_the_edge_clock_in_a_new_window(monkeypatch)
        item = key_item(raw_key, **attributes)
        aws_client("dynamodb").put_item(TableName=aws.keys_table, Item=item)
        return item

    return put


class ShiftedTime:
    """The `time` module with `time()` moved by `offset` seconds; everything else (monotonic, sleep) as is."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


# The edge modules that cut the wall clock into windows: the rate counter's minute
# (pipeline._enforce_rate_limit, ratelimit.over_limit) and the retry ids' 5 minutes (pipeline.retry_ids).
WINDOWED_CLOCK_MODULES = ("chalicelib.edge.pipeline", "chalicelib.edge.ratelimit")


def start_the_edge_clock_in_a_new_window(monkeypatch: pytest.MonkeyPatch) -> ShiftedTime:
    """Move the edge's wall clock to 1 s into a retry window (so into a minute too), for this test.

    A rate-limited test's requests must share one counter minute, and a retry its first attempt's
    window: from here they have 59 s and 299 s, however loaded the machine, with no waiting for
    the real clock. The clock still runs, so the limiter's settle interval still passes."""
    from chalicelib.edge.pipeline import RETRY_WINDOW_SECONDS

    now = time.time()
    clock = ShiftedTime(offset=1.0 - now % RETRY_WINDOW_SECONDS)
    for module in WINDOWED_CLOCK_MODULES:
        monkeypatch.setattr(f"{module}.time", clock)
    return clock


def drain_queue(queue_url: str, wait: int = 0, region: str = REGION) -> list[dict[str, Any]]:
    """Every message on a queue (body parsed), deleting as it reads."""
    sqs = aws_client("sqs", region)
    messages = []
    while True:
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=wait
        ).get("Messages", [])
        if not got:
            return messages
        for message in got:
            body = json.loads(message["Body"])
            body["_attributes"] = {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}
            messages.append(body)
        entries = [{"Id": str(i), "ReceiptHandle": message["ReceiptHandle"]} for i, message in enumerate(got)]
        assert not sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")


# What a StalledServer does with one request: (seconds before the answer or None for never,
# HTTP status, JSON body).
Respond = Callable[[bytes], tuple[float | None, int, bytes]]


def never_answer(_request: bytes) -> tuple[float | None, int, bytes]:
    return None, 0, b""


class StalledServer:
    """An HTTP server on 127.0.0.1 that accepts connections and answers each request as `respond`
    says: late, or never (the default). `received` holds every request (raw), as it arrived.

    For the deadline tests: AWS or Lookout that accepts and never answers, or answers slowly, or
    answers some calls (by the request's bytes: `X-Amz-Target`, the region it was signed for) and
    stalls others. A test sets `respond` to change what it does next."""

    def __init__(self, respond: Respond = never_answer) -> None:
        import socket
        import threading

        self.respond = respond
        self.received: list[bytes] = []
        self._closed = threading.Event()
        self._held: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: Any) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(rest) < length:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    rest += chunk
                request, buffer = head + b"\r\n\r\n" + rest[:length], rest[length:]
                self.received.append(request)
                delay, status, body = self.respond(request)
                if delay is None or self._closed.wait(delay):
                    self._closed.wait()
                    return
                connection.sendall(
                    b"HTTP/1.1 %d Answer\r\nContent-Type: application/x-amz-json-1.0\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body)
                )
        except OSError:
            return

    def calls(self, operation: str) -> int:
        """How many requests named `operation` (an X-Amz-Target's or a query's action) arrived."""
        return sum(operation.encode() in request for request in self.received)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for connection in self._held:
            connection.close()


@pytest.fixture
def silent_aws(aws: StackNames, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """AWS_ENDPOINT_URL at a server that accepts connections and never answers; what it received.

    For the deadline tests: a stalled AWS call must end with its client's timeouts."""
    server = StalledServer()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    container.reset()
    try:
        yield server.received
    finally:
        server.close()
        container.reset()


@pytest.fixture
def stall_service(aws: StackNames, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., StalledServer]]:
    """`stall_service("dynamodb", respond=never_answer)`: from now on the container's clients of that
    service (AWS_ENDPOINT_URL_<SERVICE>) talk to a StalledServer; its caches (keys, config) stay warm.
    The test's own boto3 clients made after this go there too: write what the test needs first."""
    from chalicelib.runtime import aws as aws_clients

    servers: list[StalledServer] = []

    def stall(service: str, respond: Respond = never_answer) -> StalledServer:
        server = StalledServer(respond)
        servers.append(server)
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service.upper()}", server.url)
        aws_clients._client.cache_clear()  # a new container would build its clients afresh, nothing else
        return server

    yield stall
    for server in servers:
        server.close()


# A stage that .chalice/config.json does not define: Chalice's test client applies a stage's
# environment during every call, and the deploy stages' values would replace the moto ones.
TEST_STAGE = "unit-test"


def chalice_client() -> Any:
    """Chalice's test client for the real `app`, with no deployment stage environment."""
    from chalice.test import Client

    from app import app

    return Client(app, stage_name=TEST_STAGE)


@pytest.fixture
def http(aws: StackNames) -> Iterator[Any]:
    """Chalice's test client for the real `app`, on moto."""
    with chalice_client() as client:
        yield client.http


@pytest.fixture
def lookout_db() -> Iterator[Any]:
    """A fresh, uniquely named MariaDB database (127.0.0.1:3306) with the CONTRACT §7 schema.

    Yields an edgectl.lookout_fixture_db.LookoutDatabase: `.url` (mysql://root:@127.0.0.1:3306/<db>),
    `.execute(sql, params)`, `.executemany`, `.query`, `.insert_key(...)` → raw key.
    The database is dropped afterwards.
    """
    import uuid

    from edgectl.lookout_fixture_db import LOCAL_SERVER_URL, LookoutDatabase, create_database, drop_database

    name = f"lookout_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = create_database(LOCAL_SERVER_URL, name)
    try:
        database = LookoutDatabase(url)
        yield database
        database.close()
    finally:
        drop_database(LOCAL_SERVER_URL, name)


class EndToEnd:
    """The whole local stack on free ports, with a Lookout database on MariaDB to sync keys from.

    Keys made in `start()` are known to the receiver's /api/config too. Edge key
    caches live 1 s, remote configs 3 s, and the sync runs every second, so changes
    show within seconds.
    """

    PROJECTS = {"main": ("101", "11"), "other": ("102", "11"), "late": ("103", "12")}
    # The edge's remote-config cache (60 s in production): long enough to observe it on a loaded CI machine.
    CONFIG_FRESH_SECONDS = 6.0

    def __init__(self) -> None:
        import uuid

        from edgectl.lookout_fixture_db import LOCAL_SERVER_URL, LookoutDatabase, create_database

        suffix = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.lookout_name, self.receiver_name = f"lookout_e2e_{suffix}", f"receiver_e2e_{suffix}"
        self.lookout = LookoutDatabase(create_database(LOCAL_SERVER_URL, self.lookout_name))
        self.receiver_url = f"{LOCAL_SERVER_URL.rstrip('/')}/{self.receiver_name}"
        self.keys: dict[str, str] = {}
        for key_id, (name, (project_id, org_id)) in enumerate(self.PROJECTS.items(), start=1):
            if name != "late":
                self.keys[name] = self.lookout.insert_key(
                    key_id=key_id, project_id=int(project_id), organization_id=int(org_id)
                )
        self.stack: Any = None
        self.store: Any = None

    def start(self) -> EndToEnd:
        import io

        from edgectl.devstack import DevStack, StackOptions, free_port
        from edgectl.receiver.store import MySQLStore

        projects = {key: self.PROJECTS[name][0] for name, key in self.keys.items()}
        options = StackOptions(
            edge_port=free_port(),
            receiver_port=free_port(),
            aws_port=free_port(),
            lookout_db_url=self.lookout.url,
            receiver_db_url=self.receiver_url,
            sync_every=1.0,
            receiver_projects=projects,
            extra_env={
                "LOOKOUT_EDGE_KEY_CACHE_TTL": "1",
                "LOOKOUT_EDGE_KEY_NEGATIVE_TTL": "0.5",
                "LOOKOUT_EDGE_CONFIG_FRESH_SECONDS": str(self.CONFIG_FRESH_SECONDS),
            },
        )
        self.log = io.StringIO()
        self.stack = DevStack(options, out=self.log).start()
        self.store = MySQLStore(self.receiver_url)
        for key in self.keys.values():
            self.wait_for_key(key)
        return self

    def stop(self) -> None:
        from edgectl.lookout_fixture_db import LOCAL_SERVER_URL, drop_database

        if self.stack is not None:
            self.stack.stop()
        if self.store is not None:
            self.store.close()
        self.lookout.close()
        drop_database(LOCAL_SERVER_URL, self.lookout_name)
        drop_database(LOCAL_SERVER_URL, self.receiver_name)

    @property
    def edge_url(self) -> str:
        return self.stack.edge_url

    def key_item(self, raw_key: str) -> dict | None:
        return (
            self.stack.client("dynamodb")
            .get_item(TableName=self.stack.names.keys_table, Key={"key_hash": {"S": hash_key(raw_key)}})
            .get("Item")
        )

    def wait_for_key(self, raw_key: str, present: bool = True, timeout: float = 30.0) -> None:
        """Until the scheduled sync wrote (or removed) the key, plus the edge's cache TTL."""
        import time

        deadline = time.monotonic() + timeout
        while (self.key_item(raw_key) is not None) != present:
            if time.monotonic() > deadline:
                raise AssertionError(f"key sync did not {'add' if present else 'remove'} the key in {timeout}s")
            time.sleep(0.2)
        time.sleep(1.2)

    def wait_for_event(self, event_id: str, timeout: float = 30.0) -> dict:
        """The event as the receiver stored it, once the forwarder delivered it."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            stored = self.store.event(event_id)
            if stored is not None:
                return stored
            if time.monotonic() > deadline:
                raise AssertionError(f"event {event_id} not stored within {timeout}s\n{self.log.getvalue()[-3000:]}")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def e2e() -> Iterator[EndToEnd]:
    """One local stack for every end-to-end test of the session (real HTTP, moto server, MariaDB)."""
    stack = EndToEnd()
    try:
        yield stack.start()
    finally:
        stack.stop()


EDGE_TOKEN = "edge-token-s3cr3t-value"


@pytest.fixture
def lookout(aws: StackNames, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLookout]:
    """The forwarder's world: moto, a real HTTP server as Lookout, the edge token, a new container."""
    from tests.fake_lookout import FakeLookout

    fake = FakeLookout().start()
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", fake.url)
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN", EDGE_TOKEN)
    monkeypatch.setenv("LOOKOUT_EDGE_RETRY_BASE_SECONDS", "1")
    settings.cache_clear()
    container.reset()
    yield fake
    fake.stop()
    container.reset()
