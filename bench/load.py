"""5. Throughput under load: wrk against 2 edge worker processes (`edgectl serve-edge`, Chalice's
threaded local server, one per port), loopback only, bounded in time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

from bench.events import BENCH_KEY, EVENT_BODY
from bench.stack import HOST, ROOT, Stack, env_int, fresh_queue, say
from edgectl.devstack import free_port, wait_for_http

WORKERS = 2


def start_workers(stack: Stack) -> tuple[list[subprocess.Popen], list[int]]:
    ports = [free_port(HOST) for _ in range(WORKERS)]
    queue_url, _ = fresh_queue("bench-load")  # moto slows down as a queue grows
    env = {**stack.env, "LOOKOUT_EDGE_QUEUE_URL": queue_url}
    processes = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "edgectl", "serve-edge", "--host", HOST, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    for port in ports:
        wait_for_http(f"http://{HOST}:{port}/health", 60)
    return processes, ports


def run(stack: Stack) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (make bench installs it with apt-get)")
    seconds = env_int("BENCH_LOAD_SECONDS", 30)
    connections = env_int("BENCH_LOAD_CONNECTIONS", 16)
    processes, ports = start_workers(stack)
    try:
        env = {
            **os.environ,
            "BENCH_PORTS": ",".join(map(str, ports)),
            "BENCH_BODY": json.dumps(EVENT_BODY),
            "BENCH_KEY": BENCH_KEY,
        }
        command = [wrk, f"-t{WORKERS}", f"-c{connections}", f"-d{seconds}s", "-s", str(ROOT / "bench" / "load.lua")]
        say(f"load: wrk, {connections} connections, {seconds} s, {WORKERS} edge worker processes")
        done = subprocess.run(  # noqa: S603 - wrk from PATH, our own script
            [*command, f"http://{HOST}:{ports[0]}/api/ingest"],
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "tool": "wrk",
        "workers": WORKERS,
        "connections": connections,
        "seconds": seconds,
        "requests": result["requests"],
        "errors": result["non_2xx"] + result["socket_errors"],
        "events_per_s": round(result["requests"] / (result["duration_us"] / 1e6), 1),
        "p50_ms": round(result["p50_us"] / 1000, 1),
        "p99_ms": round(result["p99_us"] / 1000, 1),
    }
