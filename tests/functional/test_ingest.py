"""The edge through the real Chalice `app`, on moto: every row of CONTRACT §3's status table."""

from __future__ import annotations

import base64
import gzip
import json
import threading

import boto3
import pytest

from chalicelib.contract.signals import SIGNALS
from chalicelib.edge import idempotency
from chalicelib.runtime import aws as aws_clients
from edgectl.lambda_shim import api_gateway_event
from tests.conftest import REGION, drain_queue, reset_container_state

KEY = "lk_live_secret_key_1"
JSON = {"content-type": "application/json"}


def post(http, path, body, **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post(path, body=raw, headers={**JSON, **{k.replace("_", "-"): v for k, v in headers.items()}})


def invoke(event):
    from app import app

    response = app(event, None)
    body = base64.b64decode(response["body"]) if response.get("isBase64Encoded") else response["body"]
    return response["statusCode"], json.loads(body), response["headers"]


def error_of(response):
    body = response.json_body
    assert set(body) == {"error", "message"}, body
    return response.status_code, body["error"]


# --- 202 and what gets queued -------------------------------------------------------------


def test_accepted_event_is_queued_exactly_as_the_contract_says(http, put_key, aws):
    put_key(KEY, project_id="42", organization_id="7")
    response = post(
        http,
        "/api/ingest",
        {"message": "boom", "exception_class": "RuntimeException", "api_key": KEY},
        x_api_key=KEY,
        x_lookout_client_sampled="1",
        x_lookout_ingest_internal="0",
    )
    assert response.status_code == 202
    assert set(response.json_body) == {"event_id", "status"}
    assert response.json_body["status"] == "accepted"
    (message,) = drain_queue(aws.queue_url)
    attributes = message.pop("_attributes")
    assert attributes == {"signal": "error", "project_id": "42"}
    assert message == {
        "v": 1,
        "event_id": response.json_body["event_id"],
        "signal": "error",
        "path": "/api/ingest",
        "project_id": "42",
        "organization_id": "7",
        "key_id": "9",
        "received_at": message["received_at"],
        "client_ip": "127.0.0.1",
        "user_agent": None,
        "idempotency_key": None,
        "headers": {"x-lookout-client-sampled": "1", "x-lookout-ingest-internal": "0"},
        "payload_encoding": "json",
        "payload": {"message": "boom", "exception_class": "RuntimeException"},
    }
    assert message["received_at"].endswith("Z") and len(message["received_at"]) == 24
    assert KEY not in json.dumps(message)


def test_user_agent_is_carried_when_sent(http, put_key, aws):
    put_key(KEY)
    post(http, "/api/ingest/feedback", {"comment": "hi"}, x_api_key=KEY, user_agent="lookout-php/1.4")
    assert drain_queue(aws.queue_url)[0]["user_agent"] == "lookout-php/1.4"


@pytest.mark.parametrize(
    ("path", "signal", "body"),
    [
        ("/api/v1/ingest", "error", {"message": "m"}),
        ("/api/v1/errors", "error", {"message": "m"}),
        ("/api/ingest/trace/otlp", "otlp", {"resourceSpans": []}),
        ("/api/ingest/log", "log", {"entries": [{"message": "a"}] * 200}),
        ("/api/ingest/rum", "rum", {"type": "pageview"}),
        ("/api/ingest/metric", "metric", {"entries": [{"name": "n"}] * 201}),
        ("/api/ingest/dump", "dump", {"entries": [[]] * 150}),
        ("/api/ingest/security", "security", {"finding": "x", "context": []}),
    ],
)
def test_every_route_accepts_its_signal(http, put_key, aws, path, signal, body):
    put_key(KEY)
    response = post(http, path, body, x_api_key=KEY)
    assert response.status_code == 202, response.body
    (message,) = drain_queue(aws.queue_url)
    assert (message["signal"], message["path"], message["payload"]) == (signal, path, body)


def test_ndjson_with_25_lines_lands_as_25_messages(http, put_key, aws):
    put_key(KEY)
    lines = b"\n".join(json.dumps({"n": i, "api_key": KEY}).encode() for i in range(25))
    response = http.post("/api/ingest/event", body=lines, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 202
    ids = response.json_body["event_ids"]
    messages = drain_queue(aws.queue_url)
    assert len(ids) == 25 and len(messages) == 25
    assert sorted(m["payload"]["n"] for m in messages) == list(range(25))
    assert {m["event_id"] for m in messages} == set(ids)
    assert all("api_key" not in m["payload"] for m in messages)


def test_gzip_body_is_accepted(http, put_key, aws):
    put_key(KEY)
    raw = gzip.compress(json.dumps({"message": "zipped"}).encode())
    response = http.post("/api/ingest", body=raw, headers={**JSON, "content-encoding": "gzip", "x-api-key": KEY})
    assert response.status_code == 202
    assert drain_queue(aws.queue_url)[0]["payload"] == {"message": "zipped"}


def test_large_event_is_queued_gzip_base64_and_decodes_back(http, put_key, aws):
    from chalicelib.contract.envelope import decode_payload

    put_key(KEY)
    body = {"message": "big", "lines": [f"frame {i} " + "z" * 80 for i in range(4000)]}
    response = post(http, "/api/ingest", body, x_api_key=KEY)
    assert response.status_code == 202
    (message,) = drain_queue(aws.queue_url)
    assert message["payload_encoding"] == "gzip+base64"
    assert decode_payload(message)["payload"] == body


def test_job_and_cron_ids(http, put_key, aws):
    put_key(KEY)
    started = post(http, "/api/ingest/job", {"job": "nightly", "status": "in_progress"}, x_api_key=KEY).json_body
    assert len(started["run_id"]) == 26
    finished = post(http, "/api/ingest/job", {"run_id": started["run_id"], "status": "ok"}, x_api_key=KEY).json_body
    assert finished["run_id"] == started["run_id"]
    checked = post(http, "/api/ingest/cron", {"monitor": "m", "status": "in_progress"}, x_api_key=KEY).json_body
    assert len(checked["check_in_id"]) == 26
    first, second, third = drain_queue(aws.queue_url)
    assert first["assigned_ids"] == {"run_id": started["run_id"]}
    assert "assigned_ids" not in second
    assert third["assigned_ids"] == {"check_in_id": checked["check_in_id"]}


def test_health_touches_nothing(http):
    response = http.get("/health")
    assert (response.status_code, response.json_body) == (200, {"status": "ok"})


# --- API keys -----------------------------------------------------------------------------


def basic(user):
    return "Basic " + base64.b64encode(f"{user}:".encode()).decode()


@pytest.mark.parametrize(
    "headers",
    [{"x-api-key": KEY}, {"x-api-token": KEY}, {"authorization": f"Bearer {KEY}"}, {"authorization": basic(KEY)}],
)
def test_each_header_key_source_is_accepted(http, put_key, aws, headers):
    put_key(KEY)
    response = http.post("/api/ingest", body=b'{"message": "m"}', headers={**JSON, **headers})
    assert response.status_code == 202


def test_key_only_in_body_is_accepted_and_removed(http, put_key, aws):
    put_key(KEY)
    assert post(http, "/api/ingest/rum", {"api_key": KEY, "page": "/"}).status_code == 202
    assert drain_queue(aws.queue_url)[0]["payload"] == {"page": "/"}


def test_no_key_is_401(http, aws):
    assert error_of(post(http, "/api/ingest", {"message": "m"})) == (401, "missing_api_key")


def test_unknown_key_is_401_and_never_echoed(http, put_key, aws):
    put_key(KEY)
    response = post(http, "/api/ingest", {"message": "m"}, x_api_key="wrong-key-123")
    assert error_of(response) == (401, "invalid_api_key")
    assert b"wrong-key-123" not in response.body
    assert drain_queue(aws.queue_url) == []


def test_billing_not_ok_is_402(http, put_key, aws):
    put_key(KEY, billing_ok=False)
    assert error_of(post(http, "/api/ingest", {"message": "m"}, x_api_key=KEY)) == (402, "billing_required")


@pytest.mark.parametrize(
    ("allowlist", "source_ip", "status"),
    [
        (["203.0.113.0/24"], "203.0.113.9", 202),
        (["198.51.100.0/24"], "203.0.113.9", 403),
        (["2001:db8::/32"], "2001:db8::42", 202),
        (["2001:db8::/32"], "2001:db9::42", 403),
        ([], "2001:db9::42", 202),
    ],
)
def test_ip_allowlist(put_key, aws, allowlist, source_ip, status):
    put_key(KEY, ip_allowlist=allowlist)
    event = api_gateway_event("/api/ingest", b'{"message": "m"}', {**JSON, "x-api-key": KEY}, source_ip=source_ip)
    code, body, _ = invoke(event)
    assert code == status, body
    if status == 403:
        assert body["error"] == "ip_not_allowed"
        assert drain_queue(aws.queue_url) == []
    else:
        assert drain_queue(aws.queue_url)[0]["client_ip"] == source_ip


def test_x_forwarded_for_cannot_spoof_the_allowlist(put_key, aws):
    put_key(KEY, ip_allowlist=["203.0.113.0/24"])
    headers = {**JSON, "x-api-key": KEY, "x-forwarded-for": "203.0.113.9"}
    code, _, _ = invoke(api_gateway_event("/api/ingest", b"{}", headers, source_ip="198.51.100.1"))
    assert code == 403


def test_base64_body_as_api_gateway_delivers_it(put_key, aws):
    put_key(KEY)
    raw = gzip.compress(b'{"message": "binary"}')
    headers = {"content-type": "text/plain", "content-encoding": "gzip", "x-api-key": KEY}
    code, body, _ = invoke(api_gateway_event("/api/ingest", raw, headers, base64_body=True))
    assert code == 202, body
    assert drain_queue(aws.queue_url)[0]["payload"] == {"message": "binary"}


@pytest.mark.parametrize(("path", "flag"), [("/api/ingest/trace", "trace_enabled"), ("/api/ingest/rum", "rum_enabled")])
def test_disabled_signal_is_403_unless_forced(http, put_key, aws, path, flag):
    put_key(KEY, **{flag: False})
    assert error_of(post(http, path, {"a": 1}, x_api_key=KEY)) == (403, "signal_disabled")
    assert post(http, path, {"a": 1}, x_api_key=KEY, x_lookout_env_forced="1").status_code == 202
    assert post(http, "/api/ingest", {"a": 1}, x_api_key=KEY).status_code == 202


def test_otlp_follows_trace_enabled(http, put_key, aws):
    put_key(KEY, trace_enabled=False)
    assert post(http, "/api/ingest/trace/otlp", {"resourceSpans": []}, x_api_key=KEY).status_code == 403


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/ingest/nope", "/api/ingest/log/extra", "/api/ingest/trace/other"])
def test_unknown_ingest_path_is_404_json(http, aws, path):
    assert error_of(post(http, path, {"a": 1}, x_api_key=KEY)) == (404, "not_found")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/json"),
        (b"{oops", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"s"', "text/plain"),
    ],
)
def test_bad_json_is_400(http, put_key, aws, body, content_type):
    put_key(KEY)
    response = http.post("/api/ingest", body=body, headers={"content-type": content_type, "x-api-key": KEY})
    assert error_of(response) == (400, "invalid_body")


def test_unsupported_type_and_encoding_are_415(http, put_key, aws):
    put_key(KEY)
    assert post(http, "/api/ingest", b"<x/>", content_type="application/xml", x_api_key=KEY).status_code == 415
    assert post(http, "/api/ingest", b"{}", content_encoding="br", x_api_key=KEY).status_code == 415


def test_gzip_bomb_is_413(http, put_key, aws):
    put_key(KEY)
    bomb = gzip.compress(b"[" + b" " * (64 * 1024 * 1024) + b"]", 9)
    response = http.post("/api/ingest", body=bomb, headers={**JSON, "content-encoding": "gzip", "x-api-key": KEY})
    assert error_of(response) == (413, "payload_too_large")


def test_log_with_201_entries_is_413(http, put_key, aws):
    put_key(KEY)
    response = post(http, "/api/ingest/log", {"entries": [{}] * 201}, x_api_key=KEY)
    assert error_of(response) == (413, "payload_too_large")


# --- rate limit, idempotency --------------------------------------------------------------


def test_rate_limit_is_429_with_retry_after(http, put_key, aws):
    put_key(KEY, rate_limit_per_minute=2)
    assert [post(http, "/api/ingest", {"n": i}, x_api_key=KEY).status_code for i in range(2)] == [202, 202]
    response = post(http, "/api/ingest", {"n": 3}, x_api_key=KEY)
    assert error_of(response) == (429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert len(drain_queue(aws.queue_url)) == 2


def test_unlimited_projects_write_no_counter(http, put_key, aws):
    put_key(KEY)
    post(http, "/api/ingest", {"n": 1}, x_api_key=KEY)
    scan = boto3.client("dynamodb", region_name=REGION).scan(TableName=aws.idempotency_table)
    assert scan["Items"] == []


def test_idempotent_replay_returns_same_body_and_queues_once(http, put_key, aws):
    put_key(KEY)
    first = post(http, "/api/ingest/job", {"job": "j"}, x_api_key=KEY, idempotency_key="abc-1")
    again = post(http, "/api/ingest/job", {"job": "j"}, x_api_key=KEY, idempotency_key="abc-1")
    assert first.status_code == again.status_code == 202
    assert first.json_body == again.json_body
    (message,) = drain_queue(aws.queue_url)
    assert message["event_id"] == first.json_body["event_id"]
    assert message["idempotency_key"] == "abc-1"


def test_idempotency_keys_are_per_project(http, put_key, aws):
    put_key(KEY, project_id="1")
    put_key("other-key", project_id="2")
    a = post(http, "/api/ingest", {"n": 1}, x_api_key=KEY, idempotency_key="same")
    b = post(http, "/api/ingest", {"n": 1}, x_api_key="other-key", idempotency_key="same")
    assert a.json_body["event_id"] != b.json_body["event_id"]
    assert len(drain_queue(aws.queue_url)) == 2


def test_concurrent_requests_with_one_key_enqueue_once(put_key, aws, monkeypatch):
    """Six containers at once (threads calling the ingest path; Chalice's test client is not thread-safe)."""
    from moto.dynamodb.models import DynamoDBBackend

    from chalicelib.edge.doors import IngestRequest
    from chalicelib.edge.doors.sdk import SdkDoor
    from chalicelib.edge.serve import serve

    # DynamoDB applies a conditional write atomically; moto checks and writes in two steps, so
    # threads can both pass the check. Serialise moto's writes as DynamoDB would.
    atomic = threading.Lock()
    for name in ("put_item", "update_item"):
        unlocked = getattr(DynamoDBBackend, name)

        def locked(self, *args, _write=unlocked, **kwargs):
            with atomic:
                return _write(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, locked)
    put_key(KEY)
    headers = {"content-type": "application/json", "x-api-key": KEY, "idempotency-key": "race"}
    request = IngestRequest(path="/api/ingest", headers=headers, body=b'{"n": 1}', client_ip="203.0.113.9")
    results = []
    error = SIGNALS["error"]
    threads = [threading.Thread(target=lambda: results.append(serve(SdkDoor(request, error)))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in results] == [202] * 6  # the duplicates waited for the first
    assert len({r.body["event_id"] for r in results}) == 1
    assert len(drain_queue(aws.queue_url)) == 1


def fingerprint(path: str, signal: str, *payloads: dict) -> str:
    """The fingerprint the edge keeps for a request to `path` carrying `payloads`."""
    from chalicelib.edge import pipeline
    from chalicelib.edge.doors import Event, IngestRequest

    request = IngestRequest(path=path, headers={}, body=b"", client_ip=None)
    return pipeline.request_fingerprint(request, SIGNALS[signal], [Event(p, 0) for p in payloads])


def test_a_duplicate_still_in_flight_after_the_wait_is_409(put_key, aws, http):
    put_key(KEY, project_id="42")
    same = fingerprint("/api/ingest", "error", {"n": 1})
    idempotency.claim(aws.idempotency_table, "42", "stuck", {"event_id": "A", "status": "accepted"}, same)
    response = post(http, "/api/ingest", {"n": 1}, x_api_key=KEY, idempotency_key="stuck")
    assert error_of(response) == (409, "idempotency_conflict")
    assert response.headers["Retry-After"] == "1"
    assert drain_queue(aws.queue_url) == []


def test_claim_bookkeeping_failing_after_enqueue_still_answers_202(http, put_key, aws, monkeypatch):
    """The events are durably queued: a failed `finish` must not turn that into a 5xx."""
    put_key(KEY)

    def store_down(*_args, **_kwargs):
        raise ConnectionError("dynamodb down")

    monkeypatch.setattr(idempotency, "finish", store_down)
    response = post(http, "/api/ingest", {"n": 1}, x_api_key=KEY, idempotency_key="finish-fails")
    assert response.status_code == 202
    (message,) = drain_queue(aws.queue_url)
    assert message["event_id"] == response.json_body["event_id"]


def test_claim_in_flight_is_busy(aws):
    idempotency.claim(aws.idempotency_table, "42", "k", {"event_id": "A"}, "f1", now=1000)
    with pytest.raises(idempotency.ClaimBusy):
        idempotency.claim(aws.idempotency_table, "42", "k", {"event_id": "B"}, "f1", now=1005)
    with pytest.raises(idempotency.FingerprintMismatch):  # another request: refused at once, never waited for
        idempotency.claim(aws.idempotency_table, "42", "k", {"event_id": "B"}, "f2", now=1005)
    taken = idempotency.claim(aws.idempotency_table, "42", "k", {"event_id": "B"}, "f1", now=1000 + 31)
    assert not taken.done and taken.claimed_at == "1031" and taken.body == {"event_id": "A"}  # taken over


# --- outages ------------------------------------------------------------------------------


class PartlyFailingSQS:
    def __init__(self, real, failing_bodies):
        self.real, self.failing, self.sent = real, failing_bodies, []

    def send_message_batch(self, QueueUrl, Entries):
        ok = [e for e in Entries if json.loads(e["MessageBody"])["payload"]["n"] not in self.failing]
        bad = [{"Id": e["Id"], "Code": "InternalError", "SenderFault": False} for e in Entries if e not in ok]
        response = self.real.send_message_batch(QueueUrl=QueueUrl, Entries=ok) if ok else {}
        self.sent += [json.loads(e["MessageBody"])["payload"]["n"] for e in ok]
        return {"Successful": response.get("Successful", []), "Failed": bad}


def test_partial_enqueue_is_503_and_retry_sends_only_the_rest(http, put_key, aws, monkeypatch):
    put_key(KEY)
    real = aws_clients.client("sqs")
    flaky = PartlyFailingSQS(real, failing_bodies={3})
    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda name, **_: flaky)
    monkeypatch.setattr("chalicelib.runtime.deadline.REQUEST_BUDGET_SECONDS", 1.5)
    lines = b"\n".join(json.dumps({"n": i}).encode() for i in range(5))
    headers = {"content-type": "application/x-ndjson", "x-api-key": KEY, "idempotency-key": "batch-1"}
    first = http.post("/api/ingest/event", body=lines, headers=headers)
    assert first.status_code == 503 and "Retry-After" in first.headers
    assert sorted(flaky.sent) == [0, 1, 2, 4]
    flaky.failing = set()
    second = http.post("/api/ingest/event", body=lines, headers=headers)
    assert second.status_code == 202
    assert sorted(flaky.sent) == [0, 1, 2, 3, 4]
    messages = drain_queue(aws.queue_url)
    assert sorted(m["payload"]["n"] for m in messages) == [0, 1, 2, 3, 4]
    assert {m["event_id"] for m in messages} == set(second.json_body["event_ids"])


def test_queue_unavailable_is_503_never_202(http, put_key, aws, monkeypatch):
    put_key(KEY)
    monkeypatch.setenv("LOOKOUT_EDGE_QUEUE_URL", aws.queue_url + "-gone")
    reset_container_state()
    response = post(http, "/api/ingest", {"message": "m"}, x_api_key=KEY)
    assert error_of(response) == (503, "service_unavailable")
    assert int(response.headers["Retry-After"]) > 0


def test_key_store_down_warm_cache_still_accepts_cold_cache_is_503(http, put_key, aws, monkeypatch):
    monkeypatch.setenv("LOOKOUT_EDGE_KEY_CACHE_TTL", "0")  # every lookup is past its TTL: stale is served
    reset_container_state()
    put_key(KEY)
    assert post(http, "/api/ingest", {"n": 1}, x_api_key=KEY).status_code == 202
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=aws.keys_table)
    assert post(http, "/api/ingest", {"n": 2}, x_api_key=KEY).status_code == 202
    reset_container_state()  # a new container: nothing cached
    response = post(http, "/api/ingest", {"n": 3}, x_api_key=KEY)
    assert error_of(response) == (503, "service_unavailable")
    assert "Retry-After" in response.headers
    assert len(drain_queue(aws.queue_url)) == 2


# --- CORS ---------------------------------------------------------------------------------


def test_preflight_needs_no_key_and_echoes_origin(http):
    response = http.options(
        "/api/ingest/rum",
        headers={
            "origin": "https://shop.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert "content-type" in response.headers["Access-Control-Allow-Headers"].lower()
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert response.headers["Vary"] == "Origin"


@pytest.mark.parametrize("key", [KEY, "bad-key"])
def test_every_answer_with_origin_carries_cors(http, put_key, aws, key):
    put_key(KEY)
    response = post(http, "/api/ingest/rum", {"api_key": key}, origin="https://shop.example")
    assert response.status_code in (202, 401)
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
