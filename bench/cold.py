"""2. Cold start: a fresh process importing `app` up to its first 202 ÷ a fresh process doing the
bare minimum (boto3, two clients, one GetItem, one SendMessage). Plus `-X importtime` offenders.

Twice: in this checkout (bytecode cached by a first run), and Lambda-like: from the real
artifact (`edgectl package`, unzipped as /var/task), with a separate boto3-only "runtime"
directory, no site-packages and PYTHONDONTWRITEBYTECODE=1, as a new Lambda container runs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from bench.stack import ROOT, Stack, env_int, median, say

TARGET = 1.00


def child_seconds(kind: str, env: dict[str, str]) -> float:
    """One fresh interpreter; its own clock, from its first line to its first accepted event."""
    return timed_child([sys.executable, "-m", "bench.cold_child", kind], env, ROOT)


def timed_child(command: list[str], env: dict[str, str], cwd: Path) -> float:
    """Run a child that prints `{"seconds": ...}` as its last stderr line; return that."""
    done = subprocess.run(  # noqa: S603 - our own interpreter
        command,
        cwd=cwd,
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
    return importtime_top([sys.executable, "-X", "importtime", "-m", "bench.cold_child", "edge"], env, ROOT, top)


def importtime_top(command: list[str], env: dict[str, str], cwd: Path, top: int) -> list[dict[str, Any]]:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=True)  # noqa: S603
    pattern = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")
    rows = []
    for line in done.stderr.splitlines():
        match = pattern.match(line)
        if match and len(match.group(3)) <= 3:  # depth 1 and 2: what app and its modules import
            rows.append({"module": match.group(4), "cumulative_ms": int(match.group(2)) / 1000})
    rows = [row for row in rows if not row["module"].startswith(("bench", "runpy", "site", "encodings"))]
    rows.sort(key=lambda row: -row["cumulative_ms"])
    return rows[:top]


# The Lambda-like children: `python -S -c` (no site-packages, the working directory not the repo),
# timing themselves from their first line. The edge gets a function URL event (payload 2.0).
LAMBDA_EDGE = """
import time
STARTED = time.perf_counter()
import json, os, sys
event = json.loads(os.environ["BENCH_EVENT"])
from app import app
answer = app(event, None)
if answer["statusCode"] != 202:
    raise SystemExit(f"edge answered {answer['statusCode']}: {answer['body']}")
print(json.dumps({"seconds": time.perf_counter() - STARTED}), file=sys.stderr)
"""
# One warm container serving LOG_EVENTS accepted events; what it writes to stdout is its log bill.
LAMBDA_LOG = """
import json, os
event = json.loads(os.environ["BENCH_EVENT"])
from app import app
for _ in range(int(os.environ["BENCH_LOG_EVENTS"])):
    if app(event, None)["statusCode"] != 202:
        raise SystemExit("not accepted")
"""
LOG_EVENTS = 200
LAMBDA_BARE = """
import time
STARTED = time.perf_counter()
import hashlib, json, os, sys
import boto3
dynamodb = boto3.client("dynamodb")
sqs = boto3.client("sqs")
key_hash = hashlib.sha256(os.environ["BENCH_KEY"].encode()).hexdigest()
dynamodb.get_item(TableName=os.environ["LOOKOUT_EDGE_KEYS_TABLE"], Key={"key_hash": {"S": key_hash}})
sqs.send_message(QueueUrl=os.environ["LOOKOUT_EDGE_QUEUE_URL"], MessageBody='{"message": "cold"}')
print(json.dumps({"seconds": time.perf_counter() - STARTED}), file=sys.stderr)
"""


def lambda_layout(work: Path) -> dict[str, Any]:
    """/var/task (the unzipped artifact) and /var/runtime (boto3 & co, byte-compiled as AWS ships
    them) under `work`; returns the package build's summary with both paths."""
    from edgectl.cmd_package import build, byte_compile, lambda_runtime_site

    built = build("prod", work / "dist")
    task, runtime = work / "task", work / "runtime"
    with zipfile.ZipFile(built["zip"]) as archive:
        archive.extractall(task)
    byte_compile(lambda_runtime_site(runtime))
    return {**built, "task": task, "runtime": runtime}


def lambda_env(stack: Stack, python_path: list[Path]) -> dict[str, str]:
    """The function's environment: the config's Powertools settings and the stack's resources, nothing of this shell."""
    from bench.events import BENCH_KEY, EVENT_BODY, HEADERS
    from bench.stack import aws_env
    from edgectl.lambda_shim import function_url_event

    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    event = function_url_event("/api/ingest", json.dumps(EVENT_BODY).encode(), HEADERS)
    return {
        **config.get("environment_variables", {}),
        **aws_env(stack.aws_url),
        **stack.names.environment(),
        "PYTHONPATH": os.pathsep.join(str(p) for p in python_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "BENCH_EVENT": json.dumps(event),
        "BENCH_KEY": BENCH_KEY,
    }


def lambda_like(stack: Stack, repeats: int) -> dict[str, Any]:
    """Cold start from the real artifact, as Lambda runs it, ÷ bare boto3 under the same conditions."""
    with tempfile.TemporaryDirectory(prefix="lookout-edge-lambda-") as tmp:
        work = Path(tmp)
        layout = lambda_layout(work)
        say(f"lambda-like cold start: {layout['bytes'] / 1024 / 1024:.2f} MB artifact, {repeats} of each")
        edge_env = lambda_env(stack, [layout["task"], layout["runtime"]])
        bare_env = lambda_env(stack, [layout["runtime"]])
        edge_s: list[float] = []
        bare_s: list[float] = []
        for _ in range(repeats):
            edge_s.append(timed_child([sys.executable, "-S", "-c", LAMBDA_EDGE], edge_env, work))
            bare_s.append(timed_child([sys.executable, "-S", "-c", LAMBDA_BARE], bare_env, work))
        logged = subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, "-S", "-c", LAMBDA_LOG],
            cwd=work,
            env={**edge_env, "BENCH_LOG_EVENTS": str(LOG_EVENTS)},
            capture_output=True,
            timeout=300,
            check=True,
        ).stdout
        offenders = importtime_top([sys.executable, "-S", "-X", "importtime", "-c", LAMBDA_EDGE], edge_env, work, 12)
    edge_ms, bare_ms = median(edge_s) * 1000, median(bare_s) * 1000
    return {
        "package_bytes": layout["bytes"],
        "package_files": layout["files"],
        "edge_ms_median": round(edge_ms, 1),
        "bare_ms_median": round(bare_ms, 1),
        "ratio": round(edge_ms / bare_ms, 3),
        "target": TARGET,
        "import_offenders": offenders,
        "log_bytes_per_event": round(len(logged) / LOG_EVENTS, 1),
    }


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
        "lambda_like": lambda_like(stack, repeats),
    }
