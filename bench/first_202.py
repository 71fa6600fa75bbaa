"""0. First 202 from a fresh clone: what a new operator waits for (the README's figure).

Timed from before `git clone` of this repository's committed HEAD to the first 202 of the
smoke event `make dev` prints the curl for: creating the venv, installing
requirements-stack.lock, starting every piece. The stack runs on free ports; the machine's
uv wheel cache is used as an operator's would be (whether it was warm is recorded), and an
operator's environment: PYTHONDONTWRITEBYTECODE unset, so each module is compiled once. The
machine's load average is recorded with it (on a shared machine the wall time grows with it).
The make dev it started is stopped (its process group) before this returns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.stack import ROOT, Stack, say
from edgectl.cmd_verify import SMOKE_EVENT
from edgectl.devstack import free_port

TIMEOUT_SECONDS = 300
TARGET_SECONDS = 30.0


def accepted(edge_url: str, key: str) -> bool:
    request = urllib.request.Request(  # noqa: S310 - the stack's loopback URL
        f"{edge_url}/api/ingest",
        data=json.dumps(SMOKE_EVENT).encode(),
        headers={"X-Api-Key": key, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - the stack's loopback URL
            return response.status == 202
    except (urllib.error.URLError, OSError):
        return False


def uv_cache_warm() -> bool:
    cache = Path(os.environ.get("UV_CACHE_DIR") or Path.home() / ".cache" / "uv")
    return cache.is_dir() and any(cache.glob("wheels-*/pypi/*"))


def run(_shared: Stack | None = None) -> dict[str, Any]:
    ports = {name: free_port() for name in ("EDGE_PORT", "RECEIVER_PORT", "AWS_PORT", "METRICS_PORT")}
    env = {**os.environ, **{name: str(port) for name, port in ports.items()}}
    for name in ("VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    warm = uv_cache_warm()
    with tempfile.TemporaryDirectory(prefix="lookout-edge-first-202-") as tmp:
        clone = Path(tmp) / "clone"
        say(f"first 202: git clone + make dev in {clone}")
        started = time.monotonic()
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)  # noqa: S603, S607
        log_path = Path(tmp) / "make-dev.log"
        with log_path.open("w") as log:
            make = subprocess.Popen(
                ["make", "dev"],  # noqa: S607 - make in our own clone
                cwd=clone,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
            try:
                installed = None
                key_file = clone / ".dev" / "demo-key"
                edge_url = f"http://127.0.0.1:{ports['EDGE_PORT']}"
                while True:
                    elapsed = time.monotonic() - started
                    if make.poll() is not None:
                        raise RuntimeError(f"make dev exited ({make.returncode}): {log_path.read_text()[-1500:]}")
                    if elapsed > TIMEOUT_SECONDS:
                        raise TimeoutError(f"no 202 within {TIMEOUT_SECONDS} s: {log_path.read_text()[-1500:]}")
                    if installed is None and (clone / ".venv" / ".stack-installed").exists():
                        installed = elapsed
                    if key_file.exists() and accepted(edge_url, key_file.read_text().strip()):
                        break
                    time.sleep(0.1)
            finally:
                os.killpg(make.pid, signal.SIGTERM)
                try:
                    make.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(make.pid, signal.SIGKILL)
                    make.wait()
        python = subprocess.run(  # noqa: S603 - the clone's own interpreter
            [str(clone / ".venv" / "bin" / "python"), "--version"], capture_output=True, text=True, check=False
        ).stdout.split()[-1:]
    say(f"first 202 after {elapsed:.1f} s ({installed or 0:.1f} s installing)")
    return {
        "seconds": round(elapsed, 1),
        "install_seconds": round(installed or 0.0, 1),
        "target_seconds": TARGET_SECONDS,
        "uv_cache_warm": warm,
        "python": python[0] if python else "?",
        "load_average_after": [round(load, 2) for load in os.getloadavg()],
    }
