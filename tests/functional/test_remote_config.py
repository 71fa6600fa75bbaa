import json
from http.server import BaseHTTPRequestHandler

import pytest

from chalicelib.edge.remote_config import (
    BACKOFF_FIRST_SECONDS,
    OVERRIDES_PER_KEY,
    STALE_SECONDS,
    BackendConfig,
    ConfigCache,
)
from tests.conftest import Clock, reset_container_state
from tests.fake_lookout import serve

KEY = "lk_config_key"


class Lookout:
    """Scripted `fetch`: answers with a versioned document unless told to fail."""

    def __init__(self):
        self.version, self.calls, self.failing = 1, [], False

    def __call__(self, raw_key, overrides):
        self.calls.append((raw_key, overrides))
        if self.failing:
            return BackendConfig(None)
        return BackendConfig(200, json.dumps({"version": f"v{self.version}", "overrides": overrides}).encode())


def test_fresh_answers_are_cached_per_key_and_overrides():
    clock, lookout = Clock(), Lookout()
    cache = ConfigCache(lookout, clock)
    assert json.loads(cache.get("h", KEY, "A").body)["version"] == "v1"
    cache.get("h", KEY, "A")
    cache.get("h", KEY, "B")
    assert lookout.calls == [(KEY, "A"), (KEY, "B")]
    clock.now += 61
    lookout.version = 2
    assert json.loads(cache.get("h", KEY, "A").body)["version"] == "v2"
    assert cache.cached_version("h") == "v2"


def test_backend_failure_serves_last_good_then_503_after_a_day():
    clock, lookout = Clock(), Lookout()
    cache = ConfigCache(lookout, clock)
    cache.get("h", KEY, None)
    lookout.failing = True
    clock.now += 3600
    answer = cache.get("h", KEY, None)
    assert (answer.status, answer.stale) == (200, True)
    assert json.loads(answer.body)["version"] == "v1"
    clock.now += STALE_SECONDS
    answer = cache.get("h", KEY, None)
    assert answer.status == 503 and json.loads(answer.body)["error"] == "config_unavailable"


def test_after_lookout_fails_the_last_good_copy_is_served_without_asking_until_the_probe():
    """A stalled Lookout costs one request its call timeout, not every request: while the back-off
    holds, the stale copy (or the 503) is answered without a call; once it is over, one probe."""
    clock, lookout = Clock(), Lookout()
    cache = ConfigCache(lookout, clock)
    cache.get("h", KEY, None)
    cache.get("h2", KEY, None)
    lookout.failing = True
    clock.now += 61
    assert cache.get("h", KEY, None).stale and len(lookout.calls) == 3  # the failed fetch
    during = [cache.get(key_hash, KEY, None) for key_hash in ("h", "h2", "h", "never-seen")]
    assert [(a.status, a.stale) for a in during] == [(200, True), (200, True), (200, True), (503, False)]
    assert len(lookout.calls) == 3  # none of them asked Lookout
    clock.now += BACKOFF_FIRST_SECONDS
    assert cache.get("h", KEY, None).stale and len(lookout.calls) == 4  # the probe, failing: 2 s now
    clock.now += BACKOFF_FIRST_SECONDS
    assert cache.get("h2", KEY, None).stale and len(lookout.calls) == 4
    lookout.failing, lookout.version = False, 2
    clock.now += BACKOFF_FIRST_SECONDS
    answer = cache.get("h2", KEY, None)  # the probe, answered: closed
    assert (answer.status, answer.stale, len(lookout.calls)) == (200, False, 5)
    assert json.loads(cache.get("h", KEY, None).body)["version"] == "v2" and len(lookout.calls) == 6


def test_a_lookout_refusing_a_key_is_not_a_lookout_down():
    """Lookout's 4xx is its word on one key: other keys are still asked."""
    clock = Clock()
    answers = {"bad": BackendConfig(401, b'{"error":"unauthorized"}')}
    calls = []

    def lookout(raw_key, overrides):
        calls.append(raw_key)
        return answers.get(raw_key) or BackendConfig(200, b'{"version":"v1"}')

    cache = ConfigCache(lookout, clock)
    assert cache.get("b", "bad", None).status == 401
    assert cache.get("g", "good", None).status == 200 and calls == ["bad", "good"]


@pytest.mark.parametrize(
    "bad", [BackendConfig(500, b"oops"), BackendConfig(200, b"not json"), BackendConfig(200, b"[1]")]
)
def test_bad_answers_are_not_cached(bad):
    cache = ConfigCache(lambda k, o: bad, Clock())
    assert cache.get("h", KEY, None).status == 503
    assert cache.cached_version("h") is None


def test_a_flood_of_overrides_values_costs_a_bounded_number_of_fetches_and_only_its_own_key():
    """#15 item 7: 5,000 distinct X-Lookout-Env-Overrides values on one key."""
    clock, lookout = Clock(), Lookout()
    cache = ConfigCache(lookout, clock)
    cache.get("other", "other-key", "prod")
    cache.get("h", KEY, "prod")
    lookout.calls.clear()
    answers = [cache.get("h", KEY, f"FLOOD={n}") for n in range(5_000)]
    assert len(lookout.calls) == OVERRIDES_PER_KEY - 1  # "prod" already counted in this window
    assert sum(a.status == 200 for a in answers) == OVERRIDES_PER_KEY - 1
    assert {a.status for a in answers[OVERRIDES_PER_KEY:]} == {503}  # nothing cached for those: as Lookout down

    lookout.failing = True
    clock.now += 3600
    other = cache.get("other", "other-key", "prod")  # another key's last good copy survived the flood
    assert (other.status, other.stale) == (200, True)
    assert json.loads(other.body)["overrides"] == "prod"


def test_a_new_window_lets_new_overrides_values_through_again():
    clock, lookout = Clock(), Lookout()
    cache = ConfigCache(lookout, clock)
    for n in range(OVERRIDES_PER_KEY + 5):
        cache.get("h", KEY, f"V={n}")
    assert len(lookout.calls) == OVERRIDES_PER_KEY
    clock.now += 61
    assert cache.get("h", KEY, "V=late").status == 200
    assert lookout.calls[-1] == (KEY, "V=late")


def test_overrides_values_of_one_key_are_lru_within_that_key():
    clock, lookout = Clock(), Lookout()
    cache = ConfigCache(lookout, clock)
    for n in range(OVERRIDES_PER_KEY):
        cache.get("h", KEY, f"V={n}")
    clock.now += 61  # a new fetch window; every answer is now past its freshness
    cache.get("h", KEY, "V=0")  # refreshed: the most recently used
    cache.get("h", KEY, "V=new")  # the key is full: V=1, its least recently used, goes
    lookout.failing = True
    assert cache.get("h", KEY, "V=0").status == 200
    assert cache.get("h", KEY, "V=2").stale
    assert cache.get("h", KEY, "V=1").status == 503


def test_the_whole_cache_drops_least_recently_used_keys_whole():
    clock, lookout = Clock(), Lookout()
    cache = ConfigCache(lookout, clock, max_entries=4)
    for key_hash in ("a", "b", "c"):
        cache.get(key_hash, KEY, "1")
    cache.get("a", KEY, "2")  # a holds 2 answers and is the most recent key; 4 held in all
    cache.get("d", KEY, "1")  # 5 held: b, the least recently used key, goes
    assert cache.cached_version("b") is None
    assert all(cache.cached_version(k) == "v1" for k in ("a", "c", "d"))


class ConfigServer:
    """A real HTTP backend for /api/config."""

    def __init__(self):
        self.requests, self.status = [], 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, dict(self.headers)))
                body = json.dumps({"version": "cfg-7", "sample_rate": 0.5}).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = serve(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def config_backend(aws, monkeypatch):
    server = ConfigServer()
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", server.url)
    reset_container_state()
    yield server
    server.close()


def test_config_route_proxies_with_key_and_overrides_and_caches(http, put_key, config_backend):
    put_key(KEY)
    headers = {"x-api-key": KEY, "x-lookout-env-overrides": "APP_ENV=staging"}
    first = http.get("/api/config", headers=headers)
    second = http.get("/api/config", headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json_body == {"version": "cfg-7", "sample_rate": 0.5}
    assert len(config_backend.requests) == 1
    path, sent = config_backend.requests[0]
    assert path == "/api/config"
    assert sent["X-Api-Key"] == KEY and sent["X-Lookout-Env-Overrides"] == "APP_ENV=staging"


def test_config_route_unknown_key_is_401_without_asking_lookout(http, put_key, config_backend):
    put_key(KEY)
    response = http.get("/api/config", headers={"x-api-key": "nope"})
    assert response.status_code == 401 and response.json_body["error"] == "invalid_api_key"
    assert config_backend.requests == []


def test_backend_down_with_nothing_cached_is_503(http, put_key, config_backend):
    put_key(KEY)
    config_backend.status = 500
    response = http.get("/api/config", headers={"x-api-key": KEY})
    assert response.status_code == 503 and "Retry-After" in response.headers


def test_202_carries_config_version_once_a_config_is_cached(http, put_key, config_backend):
    put_key(KEY)
    before = http.post("/api/ingest", body=b'{"m": 1}', headers={"x-api-key": KEY, "content-type": "application/json"})
    assert "config_version" not in before.json_body
    assert len(config_backend.requests) == 0  # the ingest path never fetches
    http.get("/api/config", headers={"x-api-key": KEY})
    after = http.post("/api/ingest", body=b'{"m": 2}', headers={"x-api-key": KEY, "content-type": "application/json"})
    assert after.status_code == 202 and after.json_body["config_version"] == "cfg-7"
