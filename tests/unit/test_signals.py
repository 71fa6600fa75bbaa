import pytest

from chalicelib.contract.errors import EdgeError
from chalicelib.contract.signals import NAMED_SIGNALS, SIGNALS, check_event, sdk_route_signal


def check_shape(signal: str, payload) -> None:
    SIGNALS[signal].check(payload)


def test_every_sdk_route_word_resolves_to_its_signal():
    for name in NAMED_SIGNALS:
        assert sdk_route_signal(name) is SIGNALS[name]
    assert len(NAMED_SIGNALS) == 17


@pytest.mark.parametrize("word", ["unknown", "error", "otlp", "otlp_logs", "otlp_metrics", "health", ""])
def test_other_words_are_not_sdk_routes(word):
    """error and otlp have their own paths (/api/ingest, /api/ingest/trace/otlp); /api/ingest/otlp is a 404."""
    assert sdk_route_signal(word) is None


def test_flags_and_assigned_ids():
    assert {name: s.flag for name, s in SIGNALS.items() if s.flag} == {
        "trace": "trace_enabled",
        "otlp": "trace_enabled",
        "rum": "rum_enabled",
    }
    assert {name: s.id_field for name, s in SIGNALS.items() if s.id_field} == {"job": "run_id", "cron": "check_in_id"}


def test_event_over_one_mib_is_413_and_names_where():
    with pytest.raises(EdgeError) as info:
        check_event(SIGNALS["event"], {}, 1024 * 1024 + 1, "line 7")
    assert info.value.status == 413 and info.value.message.startswith("line 7: ")


def test_non_object_bodies_are_400():
    for payload in ([], "text", 3, None, True):
        with pytest.raises(EdgeError) as info:
            check_shape("error", payload)
        assert info.value.status == 400


def test_otlp_needs_resource_spans():
    check_shape("otlp", {"resourceSpans": []})
    with pytest.raises(EdgeError):
        check_shape("otlp", {"spans": []})


def test_log_batches_are_limited_to_200_but_other_batches_are_not():
    check_shape("log", {"entries": [{}] * 200})
    check_shape("log", {"lines": ["x"] * 200, "source": "cli"})
    with pytest.raises(EdgeError) as info:
        check_shape("log", {"entries": [{}] * 201})
    assert info.value.status == 413
    for signal in ("metric", "dump", "model", "gate", "event"):
        check_shape(signal, {"entries": [{}] * 500})


def test_log_body_needs_entries_or_lines():
    with pytest.raises(EdgeError) as info:
        check_shape("log", {"message": "x"})
    assert info.value.status == 400


@pytest.mark.parametrize(("signal", "field"), [("otlp_logs", "resourceLogs"), ("otlp_metrics", "resourceMetrics")])
def test_otlp_logs_and_metrics_need_their_arrays(signal, field):
    check_shape(signal, {field: []})
    with pytest.raises(EdgeError):
        check_shape(signal, {"resourceSpans": []})
