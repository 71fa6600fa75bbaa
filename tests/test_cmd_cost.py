"""`cost`: the pure math against dollars worked out by hand, and the command's output."""

from __future__ import annotations

import json

import pytest

from edgectl.cli import main
from edgectl.cmd_cost import (
    AWS_SQS_SEND_MS,
    PRICES,
    CostInputs,
    estimate,
    latest_bench,
    load_prices,
    measured_durations,
    measured_inputs,
    sqs_billed_requests,
)

PRICES_NOW = load_prices()
FIXED = {
    "edge_ms": 20.0,
    "forwarder_ms": 100.0,
    "architecture": "x86_64",
    "edge_log_bytes": 700,
    "forwarder_log_bytes": 600,
}


def test_one_million_1kb_events_through_rest_api_by_hand():
    result = estimate(CostInputs(event_bytes=1024, front_door="rest", **FIXED), PRICES_NOW)
    # REST: 1M requests x $3.50/M.
    assert result.aws["API Gateway REST"] == pytest.approx(3.50)
    # Edge Lambda: 1M x $0.20/M + 1M x 0.5 GB x 0.020 s = 10,000 GB-s x $0.0000166667.
    assert result.aws["Lambda edge"] == pytest.approx(0.20 + 10_000 * 0.0000166667)
    # SQS: 1M sends + 100k receives (10 x 1,424 B fits one 64 KB chunk) + 100k batch deletes.
    assert result.aws["SQS send/receive/delete"] == pytest.approx(1_200_000 * 0.40 / 1e6)
    # DynamoDB: 5 % cache misses x 0.5 RRU x $0.125/M; no writes.
    assert result.aws["DynamoDB"] == pytest.approx(50_000 * 0.5 * 0.125 / 1e6)
    # Forwarder: 100k x $0.20/M + 100k x 0.25 GB x 0.1 s = 2,500 GB-s.
    assert result.aws["Lambda forwarder"] == pytest.approx(100_000 * 0.20 / 1e6 + 2_500 * 0.0000166667)
    # Logs: 1M x 700 B + 100k x 600 B = 0.76 GB x $0.50.
    assert result.aws["CloudWatch Logs"] == pytest.approx(0.38)
    assert result.aws_total == pytest.approx(3.5 + 0.366667 + 0.48 + 0.003125 + 0.0616667 + 0.38, abs=1e-5)


def test_cloudflare_side_by_side_by_hand():
    result = estimate(CostInputs(event_bytes=1024, **FIXED), PRICES_NOW)
    assert result.cloudflare == pytest.approx(
        {
            "Workers requests": 1_100_000 * 0.30 / 1e6,  # ingest requests + consumer batches
            "Workers CPU": (1_000_000 * 1.0 + 100_000 * 2.0) * 0.02 / 1e6,
            "KV reads": 0.50,
            "Queues": 3_000_000 * 0.40 / 1e6,  # write + read + delete per message under 64 KB
        }
    )
    assert result.cloudflare_total == pytest.approx(0.33 + 0.024 + 0.5 + 1.2)


def test_http_api_meters_512kb_units_and_sqs_bills_64kb_chunks():
    # 10 NDJSON events of 60 KB per request: 600 KB is two HTTP API units; the SendMessageBatch
    # carries 10 x 61,840 B = 618,400 B, ten 64 KB chunks.
    inputs = CostInputs(event_bytes=60 * 1024, events_per_request=10, front_door="http", **FIXED)
    result = estimate(inputs, PRICES_NOW)
    assert result.aws["API Gateway HTTP API"] == pytest.approx(100_000 * 2 * 1.00 / 1e6)
    receives = 100_000 * 10  # each forwarder batch of ten 61,840 B messages: ten chunks too
    assert result.aws["SQS send/receive/delete"] == pytest.approx((100_000 * 10 + receives + 100_000) * 0.40 / 1e6)


def test_sqs_billing_counts_chunks_per_call():
    assert sqs_billed_requests(1, 1_000, 65_536) == 1
    assert sqs_billed_requests(1, 70_000, 65_536) == 2
    assert sqs_billed_requests(25, 1_000, 65_536) == 3  # calls of 10, 10 and 5
    assert sqs_billed_requests(10, 61_840, 65_536) == 10


def test_function_url_has_no_front_door_charge_and_dynamodb_writes_when_used():
    inputs = CostInputs(front_door="url", cache_hit_ratio=1.0, idempotency_share=1.0, rate_limited_share=0.5, **FIXED)
    result = estimate(inputs, PRICES_NOW)
    assert result.aws["Lambda function URL"] == 0
    # claim + finish per idempotent request (2M WRU) and one counter update for half (0.5M WRU).
    assert result.aws["DynamoDB"] == pytest.approx(2_500_000 * 0.625 / 1e6)


def test_arm64_and_per_millisecond_rounding():
    result = estimate(CostInputs(edge_ms=10.2, forwarder_ms=100), PRICES_NOW)  # arm64: the default, as deployed
    # 10.2 ms bills as 11 ms: 1M x 0.5 GB x 0.011 s = 5,500 GB-s at the arm64 price.
    assert result.aws["Lambda edge"] == pytest.approx(0.20 + 5_500 * 0.0000133334)


def test_unknown_front_door_is_refused():
    with pytest.raises(ValueError, match="front door"):
        estimate(CostInputs(front_door="alb"), PRICES_NOW)


def test_prices_file_is_dated_and_sourced():
    prices = json.loads(PRICES.read_text())
    assert prices["as_of"] and prices["region"] == "us-east-1"
    for name, section in prices.items():
        if isinstance(section, dict):
            assert section["source"].startswith("https://"), name


def test_durations_come_from_a_bench_result(tmp_path):
    (tmp_path / "bench-20260101T000000Z.json").write_text(json.dumps({"sections": {"edge": {"error": "x"}}}))
    forwarder = {"batch_ms_median": 57.0, "log_bytes_per_batch": 6.5}
    result = {"sections": {"edge": {"edge_ms_median": 8.5}, "forwarder": forwarder}}
    (tmp_path / "bench-20260102T000000Z.json").write_text(json.dumps(result))
    path, newest = latest_bench(tmp_path)
    assert path.name == "bench-20260102T000000Z.json"
    assert measured_durations(newest) == {"edge_ms": 8.5, "forwarder_ms": 57.0, "forwarder_log_bytes": 6.5}
    assert measured_durations({"sections": {"edge": {"error": "x"}}}) == {}
    assert latest_bench(tmp_path / "none") is None


def test_command_prints_aws_beside_cloudflare(capsys):
    fixed = ["--edge-ms", "20", "--forwarder-ms", "100", "--arch", "x86_64", "--edge-log-bytes", "700"]
    fixed += ["--forwarder-log-bytes", "350"]
    code = main(["cost", "--front-door", "rest", *fixed])
    out = capsys.readouterr().out
    assert code == 0
    assert "API Gateway REST" in out and "total Cloudflare" in out
    # forwarder log: 350 B per batch (600 B when this total was worked out): 100k x 250 B x $0.50/GB less
    assert f"{4.791458 - 0.0125:.4f}" in out.split("total AWS")[1].splitlines()[0]


def test_measurements_come_from_the_newest_result_that_has_each(tmp_path):
    """A `BENCH_ONLY=cold` run has only the log bytes: the durations come from an older full run.
    The edge's billed time is its own work measured on moto plus SQS's latency, not moto's."""
    full = {
        "sections": {
            "edge": {"edge_ms_median": 26.4, "bare_send_ms_median": 25.4},
            "forwarder": {"batch_ms_median": 58.5},
            "cold": {"lambda_like": {"log_bytes_per_event": 3.0}},
        }
    }
    (tmp_path / "bench-20260101T000000Z.json").write_text(json.dumps(full))
    cold_only = {"sections": {"cold": {"lambda_like": {"log_bytes_per_event": 0.9}}}}
    (tmp_path / "bench-20260102T000000Z.json").write_text(json.dumps(cold_only))
    assert measured_inputs(tmp_path) == pytest.approx(
        {"edge_ms": 1.0 + AWS_SQS_SEND_MS, "forwarder_ms": 58.5, "edge_log_bytes": 0.9}
    )


def test_the_log_bill_follows_the_measured_bytes():
    quiet = estimate(CostInputs(front_door="url", edge_log_bytes=1.0, forwarder_log_bytes=0), PRICES_NOW)
    loud = estimate(CostInputs(front_door="url", edge_log_bytes=573.0, forwarder_log_bytes=0), PRICES_NOW)
    assert quiet.aws["CloudWatch Logs"] == pytest.approx(1e6 * 1.0 / 1e9 * 0.50)
    assert loud.aws["CloudWatch Logs"] == pytest.approx(0.2865)


def test_measured_cpu_is_stretched_to_lambdas_share_of_a_core():
    """At 512 MB a function has 512/1,769 of a vCPU: 2 ms of CPU here are ~6.9 ms there. SQS's
    8 ms as a client sees it already hold the SDK's own 0.8 ms at full speed. The forwarder's
    CPU at 256 MB comes after the backend's answer."""
    edge = {"edge_ms_median": 30.0, "bare_send_ms_median": 28.0, "edge_cpu_ms_median": 2.0}
    result = {
        "sections": {
            "edge": {**edge, "bare_send_cpu_ms_median": 0.8},
            "forwarder": {"batch_ms_median": 58.0, "batch_cpu_ms_median": 3.0, "backend_ms": 50.0},
        }
    }
    durations = measured_durations(result)
    assert durations["edge_ms"] == pytest.approx(8.0 + 2.0 * 1769 / 512 - 0.8, abs=0.001)
    assert durations["forwarder_ms"] == pytest.approx(50.0 + 3.0 * 1769 / 256, abs=0.001)
