"""Real time-series servers for the influx sink's tests: VictoriaMetrics and InfluxDB 1.x.

Both are Debian packages (`victoria-metrics`, `influxdb`) that `.ci/run` installs. Each runs
on free 127.0.0.1 ports with its data in a temporary directory. Without the binary, a test
is skipped, except under CI=true, where a missing server is a failure, never a silent skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest

from edgectl.devstack import free_port

HOST = "127.0.0.1"


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is not installed: .ci/run installs the Debian package {package}")
    pytest.skip(f"{name} not installed (apt-get install {package})")


def _get(url: str, data: bytes | None = None) -> bytes:
    with urllib.request.urlopen(url, data=data, timeout=10) as response:
        return response.read()


def _wait_ready(url: str, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within 30 s")


class Server:
    def __init__(self, command: list[str], ready_path: str, port: int, workdir: str, what: str) -> None:
        self.url = f"http://{HOST}:{port}"
        self.workdir = workdir
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
        try:
            _wait_ready(self.url + ready_path, self.process, what)
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


class VictoriaMetrics(Server):
    """Takes InfluxDB line protocol on `/write` and `/api/v2/write`; `export` reads raw samples back."""

    def __init__(self) -> None:
        binary = require_binary("victoria-metrics", "victoria-metrics")
        port, workdir = free_port(), tempfile.mkdtemp(prefix="vm-")
        command = [
            binary,
            f"-httpListenAddr={HOST}:{port}",
            f"-storageDataPath={workdir}",
            "-retentionPeriod=100y",
            "-loggerLevel=ERROR",
        ]
        super().__init__(command, "/health", port, workdir, "victoria-metrics")

    def export(self, match: str) -> list[dict[str, Any]]:
        return victoria_export(self.url, match)


def victoria_export(url: str, match: str) -> list[dict[str, Any]]:
    """Every series a VictoriaMetrics at `url` stores matching the selector, values and ms timestamps."""
    _get(url + "/internal/force_flush")
    query = urllib.parse.urlencode({"match[]": match})
    text = _get(f"{url}/api/v1/export?{query}").decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class InfluxDB1(Server):
    """InfluxDB 1.x with its HTTP API on a free port; `select` reads points back with InfluxQL."""

    def __init__(self, database: str) -> None:
        binary = require_binary("influxd", "influxdb")
        port, workdir = free_port(), tempfile.mkdtemp(prefix="influx-")
        config = os.path.join(workdir, "influxdb.conf")
        with open(config, "w") as out:
            out.write(
                f'reporting-disabled = true\nbind-address = "{HOST}:{free_port()}"\n'
                f'[meta]\n  dir = "{workdir}/meta"\n'
                f'[data]\n  dir = "{workdir}/data"\n  wal-dir = "{workdir}/wal"\n  query-log-enabled = false\n'
                f'[http]\n  bind-address = "{HOST}:{port}"\n  log-enabled = false\n'
                "[monitor]\n  store-enabled = false\n"
            )
        self.database = database
        super().__init__([binary, "-config", config], "/ping", port, workdir, "influxd")
        _get(f"{self.url}/query", urllib.parse.urlencode({"q": f'CREATE DATABASE "{database}"'}).encode())

    def select(self, measurement: str) -> list[dict[str, Any]]:
        """The points of a measurement as dicts (time in ns)."""
        body = urllib.parse.urlencode({"q": f'SELECT * FROM "{measurement}"', "db": self.database, "epoch": "ns"})
        answer = json.loads(_get(f"{self.url}/query?{body}"))
        rows = []
        for series in answer["results"][0].get("series", []):
            rows.extend(dict(zip(series["columns"], values, strict=True)) for values in series["values"])
        return rows
