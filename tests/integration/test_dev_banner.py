"""What `make dev` prints works as printed: the curl, the events curl and the verify command carry
the stack's own ports; VictoriaMetrics is added beside the sinks exported in the shell."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from edgectl.devstack import ROOT, DevStack, StackOptions, free_port

VM_SINK = "victoria-metrics"


def printed_command(banner: str, label: str) -> str:
    """The command on the banner line `label`, with its continuation lines (indented, no label)."""
    lines = banner.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {label} "))
    command = [lines[start][len(f"  {label} ") :].strip()]
    for line in lines[start + 1 :]:
        if not line.startswith("             "):
            break
        command.append(line.strip())
    return command[-1] if label == "Events" else " ".join(command)


def run_as_printed(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=90)


def test_every_printed_command_works_on_ports_that_are_not_the_defaults(tmp_path):
    ports = {name: free_port() for name in ("edge", "receiver", "aws")}
    assert not {8000, 8001, 4566} & set(ports.values())
    options = StackOptions(
        edge_port=ports["edge"],
        receiver_port=ports["receiver"],
        aws_port=ports["aws"],
        state_dir=tmp_path,
        demo_key="lk_banner_demo",
    )
    with open(tmp_path / "log", "w") as log, DevStack(options, out=log) as stack:
        banner = stack.banner()
        tried = run_as_printed(printed_command(banner, "Try it"))
        answer, status = tried.stdout.rsplit(" ", 1)
        assert status.strip() == "202", tried.stdout + tried.stderr
        event_id = json.loads(answer)["event_id"]

        verify = printed_command(banner, "Verify")
        assert f"--backend-url http://127.0.0.1:{ports['receiver']}" in verify
        verified = run_as_printed(verify)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.startswith("OK: 202 accepted and stored by the backend")

        events = run_as_printed(printed_command(banner, "Events"))
        assert event_id in events.stdout, events.stdout + events.stderr

        status = run_as_printed(printed_command(banner, "Queue"))
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"127.0.0.1:{ports['aws']}" in status.stdout and "dead letters" in status.stdout
        dlq = run_as_printed(printed_command(banner, "Queue").replace(" status", " dlq status"))
        assert dlq.returncode == 0, dlq.stdout + dlq.stderr


def test_verify_says_when_the_backend_cannot_be_reached(e2e):
    closed = f"http://127.0.0.1:{free_port()}"
    args = ["--url", e2e.edge_url, "--key", e2e.keys["main"], "--backend-check", "--backend-url", closed]
    done = subprocess.run(
        [sys.executable, "-m", "edgectl", "verify", *args, "--timeout", "2"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert re.match(rf"FAIL: 202 accepted \(event_id \w+\) but cannot reach the backend at {closed}/", done.stdout)
    assert "dlq" not in done.stdout


def _stack_sinks() -> tuple[list[dict], str]:
    stack = DevStack(StackOptions(metrics_port=8428))
    text, note = stack.metrics_sinks()
    assert text is not None and stack.environment()["LOOKOUT_EDGE_SINKS"] == text
    return json.loads(text), note


def test_victoria_metrics_is_added_beside_the_sinks_exported_in_the_shell(monkeypatch):
    loki = {"name": "loki", "type": "loki", "url": "http://127.0.0.1:3100", "signals": ["log"]}
    monkeypatch.setenv("LOOKOUT_EDGE_SINKS", json.dumps([loki]))
    sinks, note = _stack_sinks()
    assert [sink["name"] for sink in sinks] == ["loki", VM_SINK]
    assert sinks[0] == loki and sinks[1]["url"] == "http://127.0.0.1:8428"
    assert "beside the 1 sink(s) of LOOKOUT_EDGE_SINKS" in note


def test_without_sinks_in_the_shell_victoria_metrics_is_the_only_one(monkeypatch):
    monkeypatch.delenv("LOOKOUT_EDGE_SINKS", raising=False)
    monkeypatch.delenv("LOOKOUT_EDGE_SINKS_PARAM", raising=False)
    sinks, _ = _stack_sinks()
    assert [sink["name"] for sink in sinks] == [VM_SINK]
    assert DevStack(StackOptions()).environment().get("LOOKOUT_EDGE_SINKS") is None  # no VictoriaMetrics: no sink


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("LOOKOUT_EDGE_SINKS", "[{not json", "is not JSON"),
        ("LOOKOUT_EDGE_SINKS", '{"name": "loki"}', "is not a JSON list"),
        ("LOOKOUT_EDGE_SINKS", json.dumps([{"name": VM_SINK, "type": "influx", "url": "http://x"}]), "kept as it is"),
        ("LOOKOUT_EDGE_SINKS_PARAM", "/lookout/sinks", "LOOKOUT_EDGE_SINKS_PARAM is set"),
    ],
)
def test_sinks_the_stack_cannot_add_to_are_left_as_they_are_and_it_says_so(monkeypatch, variable, value, said):
    monkeypatch.delenv("LOOKOUT_EDGE_SINKS", raising=False)
    monkeypatch.setenv(variable, value)
    stack = DevStack(StackOptions(metrics_port=8428))
    text, note = stack.metrics_sinks()
    assert text is None and said in note
    assert stack.environment().get("LOOKOUT_EDGE_SINKS") == (value if variable == "LOOKOUT_EDGE_SINKS" else None)
