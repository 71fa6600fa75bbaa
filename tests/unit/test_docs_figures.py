"""Figures the docs state about the code, read from the code."""

from __future__ import annotations

import re
from pathlib import Path

from chalicelib.contract.signals import SIGNALS
from chalicelib.runtime.sqs_batch import CONCURRENT_BATCHES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_firehose_doc_states_the_concurrent_queue_writes_the_edge_makes() -> None:
    stated = re.search(r"(\d+) SendMessageBatch\s+calls in flight", (DOCS / "firehose.md").read_text())
    assert stated is not None and int(stated.group(1)) == CONCURRENT_BATCHES


def test_receiver_spec_lists_every_signal() -> None:
    row = next(
        line for line in (DOCS / "receiver.md").read_text().splitlines() if line.strip().startswith("| `signal` |")
    )
    assert re.findall(r"`([a-z_]+)`", row.split("):", 1)[1]) == list(SIGNALS)
