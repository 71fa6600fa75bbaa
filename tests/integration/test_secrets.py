"""No raw API key, edge token or database password in any log line, queue message, DLQ attribute or answer.

Logs are captured at DEBUG: every logging record (caplog, root at DEBUG, the project's
Powertools loggers lowered to DEBUG too) and everything written to stdout/stderr
(capsys: Powertools' JSON lines and EMF). botocore/urllib3 wire logging is left out:
at DEBUG it prints raw AWS responses by design (an SSM GetParameter answer holds the
decrypted value), it is off in Lambda, and no project code enables it.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from chalicelib.runtime.config import settings
from chalicelib.runtime.observability import logger
from edgectl.iam_enforce import DEFAULT_ACCOUNT as MOTO_ACCOUNT
from tests.conftest import REGION, drain_queue, reset_container_state
from tests.fake_lookout import FakeLookout, Seen, enqueue, queue_message, sqs_event

KEY = "lk_secret_raw_key_5b1e0c77"
OTHER_KEY = "lk_secret_unknown_key_91d2"
TOKEN = "edge-token-secret-3f9a81"
DB_PASSWORD = "db-password-secret-7c44"
WIRE_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> Iterator[Callable[[], str]]:
    """`logs()` returns everything logged or printed since the test began."""
    caplog.set_level(logging.DEBUG)
    services = [logger(name) for name in ("api", "forwarder", "sync")]
    previous = [service.log_level for service in services]
    for service in services:
        service.setLevel("DEBUG")
    printed: list[str] = []

    def text() -> str:
        captured = capsys.readouterr()
        printed.append(captured.out + captured.err)
        records = [r for r in caplog.records if not r.name.startswith(WIRE_LOGGERS)]
        return "".join(printed) + "\n".join(f"{r.getMessage()} {r.args} {r.exc_text} {vars(r)}" for r in records)

    yield text
    for service, level in zip(services, previous, strict=True):
        service.setLevel(level)


def assert_secret_free(*texts: Any, secrets: tuple[str, ...]) -> None:
    blob = "\n".join(t if isinstance(t, str) else json.dumps(t, default=str) for t in texts)
    for secret in secrets:
        assert secret not in blob, f"{secret[:6]}… leaked"


KEY_PLACES: dict[str, Callable[[str], tuple[dict[str, str], dict[str, Any]]]] = {
    "x-api-key": lambda k: ({"X-Api-Key": k}, {}),
    "x-api-token": lambda k: ({"X-Api-Token": k}, {}),
    "bearer": lambda k: ({"Authorization": f"Bearer {k}"}, {}),
    "basic": lambda k: ({"Authorization": "Basic " + base64.b64encode(f"{k}:".encode()).decode()}, {}),
    "body": lambda k: ({}, {"api_key": k}),
}


@pytest.mark.parametrize("place", KEY_PLACES)
def test_edge_never_logs_queues_or_echoes_the_key(http, put_key, aws, logs, place: str) -> None:
    put_key(KEY)
    put_key("lk_secret_unpaid_key_0aa1", project_id="43", billing_ok=False)
    answers = []
    for key, expected in ((KEY, 202), (OTHER_KEY, 401), ("lk_secret_unpaid_key_0aa1", 402)):
        headers, fields = KEY_PLACES[place](key)
        for path, body in (
            ("/api/ingest", {"message": "m", **fields}),
            ("/api/ingest/event", {"n": 1, **fields}),
        ):
            response = http.post(
                path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json", **headers}
            )
            assert response.status_code == expected, response.body
            answers.append((response.body.decode(), dict(response.headers)))
    basic_forms = [base64.b64encode(f"{k}:".encode()).decode() for k in (KEY, OTHER_KEY)]
    assert_secret_free(
        logs(), answers, drain_queue(aws.queue_url), secrets=(KEY, OTHER_KEY, "lk_secret_unpaid", *basic_forms)
    )


@pytest.fixture
def forwarding(aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLookout]:
    fake = FakeLookout().start()
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", fake.url)
    monkeypatch.setenv("LOOKOUT_EDGE_RETRY_BASE_SECONDS", "1")
    reset_container_state()
    yield fake
    fake.stop()
    reset_container_state()


def echo_token(status: int) -> Callable[[Seen], tuple[int, dict[str, str], Any]]:
    """A careless backend that puts the Authorization header it got into its error text."""
    return lambda seen: (status, {}, {"error": "nope", "message": f"refused {seen.headers['authorization']}"})


@pytest.mark.parametrize("status", [401, 400, 500])
def test_forwarder_never_logs_or_dead_letters_the_token_even_when_the_backend_echoes_it(
    aws, forwarding: FakeLookout, monkeypatch: pytest.MonkeyPatch, logs, status: int
) -> None:
    from app import forward_events

    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN", TOKEN)
    settings.cache_clear()
    forwarding.answer = echo_token(status)
    enqueue(aws.queue_url, [queue_message({"message": "m"}) for _ in range(3)])
    try:
        forward_events(sqs_event(aws.queue_url), None)
    except Exception as exc:  # 401/500: left for retry, the handler raises so Lambda deletes nothing
        assert TOKEN not in str(exc)
    assert forwarding.requests and forwarding.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    dead = boto3.client("sqs", region_name=REGION).receive_message(
        QueueUrl=aws.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )
    if status == 400:  # permanent: dead-lettered, with the backend's (redacted) error as an attribute
        assert len(dead["Messages"]) == 3
        assert "[redacted]" in dead["Messages"][0]["MessageAttributes"]["dlq_error"]["StringValue"]
    assert_secret_free(logs(), dead, secrets=(TOKEN,))


def test_token_from_ssm_is_used_and_never_logged(aws, forwarding: FakeLookout, monkeypatch, logs, iam) -> None:
    from app import forward_events

    boto3.client("ssm", region_name=REGION).put_parameter(Name="/lookout/edge-token", Value=TOKEN, Type="SecureString")
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN_PARAM", "/lookout/edge-token")
    settings.cache_clear()
    forwarding.answer = echo_token(401)
    enqueue(aws.queue_url, [queue_message({"message": "m"})])
    with pytest.raises(Exception, match="left on the queue"):
        forward_events(sqs_event(aws.queue_url), None)
    assert forwarding.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert_secret_free(logs(), secrets=(TOKEN,))
    parameter = f"arn:aws:ssm:{REGION}:{MOTO_ACCOUNT}:parameter/lookout/edge-token"
    assert ("forward_events", "ssm:GetParameter", parameter) in iam.calls


@pytest.mark.parametrize("source", ["env", "ssm"])
def test_key_sync_never_logs_the_database_password(aws, monkeypatch, logs, iam, source: str) -> None:
    from chalicelib.keysync import job as keysync_job
    from chalicelib.runtime.observability import flush
    from edgectl.devstack import free_port

    url = f"mysql://lookout:{DB_PASSWORD}@127.0.0.1:{free_port()}/lookout"
    if source == "env":
        monkeypatch.setenv("LOOKOUT_DB_URL", url)
    else:
        boto3.client("ssm", region_name=REGION).put_parameter(Name="/lookout/db-url", Value=url, Type="SecureString")
        monkeypatch.setenv("LOOKOUT_DB_URL_PARAM", "/lookout/db-url")
    settings.cache_clear()
    result = keysync_job.run()
    flush(keysync_job.SERVICE)
    assert not result.ok and result.error
    assert_secret_free(logs(), result.error, result.summary(), secrets=(DB_PASSWORD,))
    parameter = f"arn:aws:ssm:{REGION}:{MOTO_ACCOUNT}:parameter/lookout/db-url"
    assert (("sync_keys", "ssm:GetParameter", parameter) in iam.calls) == (source == "ssm")


def test_whole_stack_log_holds_no_key_and_no_token(e2e) -> None:
    """The local stack's combined log (edge, forwarder, sync, receiver, AWS) after accepted and refused requests."""
    from tests.integration.test_devstack import send

    key = e2e.keys["main"]
    stored = []
    for place, make in KEY_PLACES.items():
        headers, fields = make(key)
        status, answer, _ = send(
            f"{e2e.edge_url}/api/ingest",
            json.dumps({"message": f"secrets {place}", **fields}).encode(),
            {"Content-Type": "application/json", **headers},
        )
        assert status == 202, answer
        stored.append(e2e.wait_for_event(answer["event_id"]))
        status, answer, _ = send(
            f"{e2e.edge_url}/api/ingest",
            json.dumps({"message": "m", **make("lk_e2e_unknown_secret_key")[1]}).encode(),
            {"Content-Type": "application/json", **make("lk_e2e_unknown_secret_key")[0]},
        )
        assert status == 401
        assert_secret_free(answer, secrets=("lk_e2e_unknown_secret_key",))
    assert_secret_free(
        e2e.log.getvalue(), stored, secrets=(key, "lk_e2e_unknown_secret_key", e2e.stack.token, *e2e.keys.values())
    )
