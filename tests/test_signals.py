import pytest

from chalicelib.contract.errors import EdgeError
from chalicelib.contract.signals import NAMED_SIGNALS, check_shape, signal_for_path


@pytest.mark.parametrize("path", ["/api/ingest", "/api/v1/ingest", "/api/v1/errors"])
def test_error_paths(path):
    assert signal_for_path(path) == "error"


def test_named_signals_and_otlp():
    assert signal_for_path("/api/ingest/trace/otlp") == "otlp"
    for name in NAMED_SIGNALS:
        assert signal_for_path(f"/api/ingest/{name}") == name
    assert len(NAMED_SIGNALS) == 17


@pytest.mark.parametrize(
    "path", ["/api/ingest/unknown", "/api/ingest/log/extra", "/api/ingest/trace/otlp/x", "/health"]
)
def test_other_paths_are_not_ingest_routes(path):
    assert signal_for_path(path) is None


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
