"""2. Cold start: a fresh process importing `app` up to its first 202 ÷ a fresh process doing the
bare minimum (boto3, two clients, one GetItem, one SendMessage). Plus `-X importtime` offenders."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

from bench.stack import ROOT, Stack, env_int, median, say

TARGET = 1.00


def child_seconds(kind: str, env: dict[str, str]) -> float:
    """One fresh interpreter; its own clock, from its first line to its first accepted event."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench.cold_child", kind],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=True,
    )
    return float(json.loads(done.stderr.strip().splitlines()[-1])["seconds"])


def import_offenders(env: dict[str, str], top: int = 12) -> list[dict[str, Any]]:
    """`python -X importtime` of a cold edge child: `import app` and what its first request
    imports lazily, the modules costing most (cumulative, two levels deep)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bench.cold_child", "edge"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pattern = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")
    rows = []
    for line in done.stderr.splitlines():
        match = pattern.match(line)
        if match and len(match.group(3)) <= 3:  # depth 1 and 2: what app and its modules import
            rows.append({"module": match.group(4), "cumulative_ms": int(match.group(2)) / 1000})
    rows = [row for row in rows if not row["module"].startswith(("bench", "runpy", "site", "encodings"))]
    rows.sort(key=lambda row: -row["cumulative_ms"])
    return rows[:top]


def run(stack: Stack) -> dict[str, Any]:
    repeats = env_int("BENCH_COLD_N", 9)
    env = {**stack.env, "PYTHONDONTWRITEBYTECODE": "0"}
    say(f"cold start: {repeats} fresh processes each, interleaved")
    child_seconds("edge", env)  # compile .pyc files once, as a deployment package ships them
    edge_s: list[float] = []
    bare_s: list[float] = []
    for _ in range(repeats):
        edge_s.append(child_seconds("edge", env))
        bare_s.append(child_seconds("bare", env))
    edge_ms, bare_ms = median(edge_s) * 1000, median(bare_s) * 1000
    return {
        "repeats": repeats,
        "edge_ms_median": round(edge_ms, 1),
        "bare_ms_median": round(bare_ms, 1),
        "ratio": round(edge_ms / bare_ms, 3),
        "target": TARGET,
        "import_offenders": import_offenders(env),
    }
