"""`python -m bench` (`make bench`): every benchmark against one moto server, one table, one JSON file.

Sizes come from the environment: BENCH_EDGE_N, BENCH_COLD_N, BENCH_FORWARD_BATCHES,
BENCH_FORWARD_EVENTS, BENCH_LOAD_SECONDS, BENCH_LOAD_CONNECTIONS, BENCH_KEYS, BENCH_FIREHOSE_RECORDS,
BENCH_FIREHOSE_ROUNDS, BENCH_OTLP_SPANS_N; BENCH_ONLY=edge,cold
runs a subset. A benchmark that fails is reported as failed; the others still run.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.stack import ROOT, say, start_stack

# Key sync last: it rewrites the keys table.
SECTIONS = ("first_202", "edge", "cold", "otlp", "forwarder", "load", "firehose", "memory", "keysync")
RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        # 1, 5 and 15 minute load at the start: how busy the (shared) machine was.
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


def verdict(ratio: float, target: float) -> str:
    return "ok" if ratio <= target else "MISSED"


def table(results: dict[str, Any]) -> str:
    """The human summary: one line per measurement."""
    m = results["machine"]
    lines = [
        f"Lookout Edge bench — {m['date']} — {m['nproc']} CPU {m['cpu']} — Python {m['python']}"
        + (f" — load {'/'.join(map(str, m['load_average']))}" if "load_average" in m else ""),
        f"{'measurement':<44} {'value':>22} {'target':>8}  verdict",
    ]

    def row(name: str, value: str, target: str = "", mark: str = "") -> None:
        lines.append(f"{name:<44} {value:>22} {target:>8}  {mark}")

    sections = results["sections"]
    for name in SECTIONS:
        section = sections.get(name)
        if section is None:
            continue
        if "error" in section:
            row(name, "FAILED", "", section["error"][:60])
            continue
        if name == "first_202":
            row(
                "0 git clone to first 202 (make dev)",
                f"{section['seconds']:.1f} s ({section['install_seconds']:.1f} s install)",
                f"≤{section['target_seconds']:g} s",
                verdict(section["seconds"], section["target_seconds"]),
            )
        if name == "edge":
            row(
                "1 warm edge request / bare SendMessage",
                f"{section['edge_ms_median']:.2f}/{section['bare_send_ms_median']:.2f} ms",
            )
            row(
                "  ratio (medians)",
                f"{section['ratio']:.3f}",
                f"≤{section['target']}",
                verdict(section["ratio"], section["target"]),
            )
            ndjson = section["ndjson"]
            row(
                f"1 {ndjson['lines']} NDJSON lines: to the 202 (median)",
                f"{ndjson['edge_ms_median']:.0f} ms",
                f"≤{ndjson['target_ms']}",
                verdict(ndjson["edge_ms_median"], ndjson["target_ms"]),
            )
            row(
                "  p99 / 100 sequential SendMessageBatch",
                f"{ndjson['edge_ms_p99']:.0f}/{ndjson['sequential_batches_ms_median']:.0f} ms",
            )
        elif name == "cold":
            row(
                "2 cold start: app to first 202 / bare boto3",
                f"{section['edge_ms_median']:.0f}/{section['bare_ms_median']:.0f} ms",
            )
            row(
                "  ratio (medians)",
                f"{section['ratio']:.3f}",
                f"≤{section['target']}",
                verdict(section["ratio"], section["target"]),
            )
            offenders = ", ".join(f"{o['module']} {o['cumulative_ms']:.0f}" for o in section["import_offenders"][:6])
            lines.append(f"  import offenders (ms): {offenders}")
            like = section.get("lambda_like")
            if like:
                row(
                    "2 Lambda-like cold start: artifact / boto3",
                    f"{like['edge_ms_median']:.0f}/{like['bare_ms_median']:.0f} ms",
                )
                row(
                    "  ratio (medians)",
                    f"{like['ratio']:.3f}",
                    f"≤{like['target']}",
                    verdict(like["ratio"], like["target"]),
                )
                row(
                    "  deployment.zip",
                    f"{like['package_bytes'] / 1024 / 1024:.2f} MB",
                    "≤3",
                    verdict(like["package_bytes"] / 1024 / 1024, 3.0),
                )
                row(
                    "  log per accepted event (stdout, 200 warm)",
                    f"{like['log_bytes_per_event']:.1f} B",
                    "≤100",
                    verdict(like["log_bytes_per_event"], 100),
                )
                lines.append("  import time top (ms):")
                for offender in like["import_offenders"]:
                    lines.append(f"    {offender['cumulative_ms']:8.1f}  {offender['module']}")
        elif name == "otlp":
            cold = section["cold"]
            row(
                "6 OTLP cold start: first 200 / first SDK 202",
                f"{cold['otlp_ms_median']:.0f}/{cold['sdk_ms_median']:.0f} ms",
            )
            for spans, warm in section["warm"].items():
                row(
                    f"  warm CPU per span, {spans} spans/request",
                    f"{warm['request_cpu_us_per_span']:.1f} µs",
                    "",
                    f"(decoder alone {warm['decode_cpu_us_per_span']:.1f} µs)",
                )
        elif name == "forwarder":
            size = section.get("batch_size", 10)
            for batch, figures in section.get("by_batch", {str(size): section}).items():
                row(
                    f"3 forwarder batch of {batch} / 50 ms backend",
                    f"{figures['batch_ms_median']:.1f} ms, ratio {figures['ratio']:.2f}",
                )
                if "events_per_s" in figures:
                    target = section["events_per_s_target"] if batch == str(size) else None
                    row(
                        "  events per forwarder-second",
                        f"{figures['events_per_s']:.0f}",
                        f"≥{target}" if target else "",
                        ("ok" if figures["events_per_s"] >= target else "MISSED") if target else "",
                    )
                row(
                    "  CPU / log written per batch (healthy)",
                    f"{figures['batch_cpu_ms_median']:.1f} ms / {figures['log_bytes_per_batch']:.0f} B",
                )
            if "fan_out_ms_median" in section:
                alone = section.get("fan_out_lookout_alone_ms_median")
                row(
                    f"  {size} metric events to Lookout + Loki + Influx",
                    f"{section['fan_out_ms_median']:.1f}" + (f"/{alone:.1f} ms" if alone else " ms"),
                )
                row(
                    "  ÷ the same batch to Lookout alone (median)",
                    f"{section['fan_out_ratio']:.3f}",
                    f"≤{section['fan_out_target']}",
                    verdict(section["fan_out_ratio"], section["fan_out_target"]),
                )
            row(
                f"  sustained, concurrency {section['concurrency']}",
                f"{section['sustained_events_per_s']:.0f} ev/s",
                f"{section['sustained_ideal_events_per_s']:.0f}",
                "(ideal)",
            )
        elif name == "load":
            row(f"5 load: wrk, {section['workers']} edge processes", f"{section['events_per_s']:.0f} ev/s")
            row(
                "  latency p50 / p99",
                f"{section['p50_ms']:.1f}/{section['p99_ms']:.1f} ms",
                "",
                f"{section['errors']} errors",
            )
        elif name == "firehose":
            row(
                f"6 Firehose delivery, {section['records']} records gzip",
                f"{section['seconds_median']:.2f} s",
                f"<{section['target_seconds']:.0f} s",
                "ok" if section["seconds_median"] < section["target_seconds"] else "MISSED",
            )
            row("  edge CPU per record", f"{section['edge_cpu_us_per_record']:.0f} µs")
        elif name == "memory":
            for case in section["cases"]:
                row(
                    f"7 peak memory, {case['door']}: {case['case']}"[:44],
                    f"{case['peak_mib']:.1f} MiB ({case['status']})",
                    f"<{section['limit_mib']} MiB",
                    verdict(case["peak_mib"], section["limit_mib"]),
                )
        elif name == "keysync":
            for label, key in (("first", "first"), ("no change", "unchanged"), ("1 % changed", "one_percent_changed")):
                if key not in section:
                    continue
                step = section[key]
                row(f"4 key sync {section['keys']} keys: {label}", f"{step['seconds']:.1f} s, {step['written']} writes")
            first, million = section["first"], section["first"]["million"]
            row("  first load: runs, peak RSS", f"{first['runs']} x 300 s, {first['peak_mb']:.0f} MB")
            row(
                "4 key sync 1,000,000 keys: first load" + ("" if million["measured"] else " (extrapolated)"),
                f"{million['seconds']:.0f} s, {million['runs']} x 300 s",
                f"{million['peak_mb']:.0f} MB",
                "peak RSS",
            )
    return "\n".join(lines)


def main() -> int:
    only = [name for name in (os.environ.get("BENCH_ONLY") or "").split(",") if name]
    results: dict[str, Any] = {"machine": machine(), "sections": {}}
    started = time.monotonic()
    say("starting moto server")
    stack = start_stack()
    try:
        for name in SECTIONS:
            if only and name not in only:
                continue
            try:
                results["sections"][name] = importlib.import_module(f"bench.{name}").run(stack)
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                results["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        stack.stop()
    results["seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"({results['seconds']:.0f} s; results in {path.relative_to(ROOT)})")
    return 1 if any("error" in section for section in results["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
