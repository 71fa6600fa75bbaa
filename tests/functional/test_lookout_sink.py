"""The HTTP client towards Lookout and the edge token (plain variable or SSM, rotated)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import pytest

from chalicelib.forward.sinks import lookout as lookout_sink
from chalicelib.runtime import container
from chalicelib.runtime.config import ConfigError, settings
from edgectl.resources import StackNames
from tests.fake_lookout import REGION, FakeLookout

PARAM = "/lookout/edge/token"


@pytest.fixture
def lookout(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLookout]:
    fake = FakeLookout().start()
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", fake.url + "/")
    settings.cache_clear()
    container.reset()
    yield fake
    fake.stop()
    container.reset()


@pytest.fixture
def ssm_token(aws: StackNames, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name=PARAM, Value="first-token", Type="SecureString")
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN_PARAM", PARAM)
    monkeypatch.setenv("LOOKOUT_EDGE_TOKEN_CACHE_SECONDS", "1")
    settings.cache_clear()
    container.reset()
    yield ssm
    container.reset()


def test_posts_json_with_bearer_token_over_one_kept_alive_connection(lookout: FakeLookout) -> None:
    body = b'{"events":[{"event_id":"e1"}]}'
    first, elapsed_ms = lookout_sink.post_events(body, "tok")
    second, _ = lookout_sink.post_events(body, "tok")

    assert (first.status, second.status) == (200, 200)
    assert first.body == b'{"results": [{"event_id": "e1", "status": "accepted"}]}'
    assert elapsed_ms > 0
    assert [r.path for r in lookout.requests] == ["/api/ingest/edge"] * 2  # trailing slash of the base dropped
    assert lookout.requests[0].headers["authorization"] == "Bearer tok"
    assert lookout.requests[0].headers["content-type"] == "application/json"
    # Same client port: the second batch reused the first connection.
    assert lookout.requests[0].client_port == lookout.requests[1].client_port


def test_retry_after_header_is_returned(lookout: FakeLookout) -> None:
    lookout.answer = lambda r: (429, {"Retry-After": "17"}, {"error": "slow down"})
    answer, _ = lookout_sink.post_events(b'{"events":[]}', "tok")
    assert (answer.status, answer.retry_after) == (429, "17")


def test_read_timeout_is_reported_not_raised(lookout: FakeLookout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKOUT_EDGE_FORWARD_READ_TIMEOUT", "0.2")
    settings.cache_clear()
    lookout.delay = 1.0  # without the read timeout the answer would be the backend's 200
    answer, _ = lookout_sink.post_events(b'{"events":[]}', "tok")
    assert (answer.status, answer.error) == (None, "timeout")


def test_connection_refused_is_reported(lookout: FakeLookout) -> None:
    lookout.stop()
    answer, _ = lookout_sink.post_events(b'{"events":[]}', "tok")
    assert (answer.status, answer.error) == (None, "connection")


def test_plain_token_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN", "plain")
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN_PARAM", PARAM)
    assert lookout_sink.edge_token() == "plain"


def test_no_token_configured_names_both_variables() -> None:
    with pytest.raises(ConfigError, match="LOOKOUT_INGEST_EDGE_TOKEN or LOOKOUT_INGEST_EDGE_TOKEN_PARAM"):
        lookout_sink.edge_token()


def test_ssm_token_is_cached_then_rotation_is_picked_up(ssm_token) -> None:
    assert lookout_sink.edge_token() == "first-token"
    ssm_token.put_parameter(Name=PARAM, Value="second-token", Type="SecureString", Overwrite=True)
    assert lookout_sink.edge_token() == "first-token"  # cached: no SSM call per batch
    time.sleep(1.1)
    assert lookout_sink.edge_token() == "second-token"


def test_refused_token_is_read_again_at_once(ssm_token, lookout: FakeLookout) -> None:
    lookout.answer = lambda r: (401, {}, {"error": "unauthorized"})
    assert lookout_sink.edge_token() == "first-token"
    ssm_token.put_parameter(Name=PARAM, Value="second-token", Type="SecureString", Overwrite=True)
    lookout_sink.post_events(b'{"events":[]}', "first-token")
    assert lookout_sink.edge_token() == "second-token"


def test_missing_parameter_is_unavailable_without_values(ssm_token, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN_PARAM", "/lookout/absent")
    settings.cache_clear()
    with pytest.raises(lookout_sink.TokenUnavailable, match="/lookout/absent"):
        lookout_sink.edge_token()
