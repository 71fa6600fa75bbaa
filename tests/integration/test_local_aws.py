"""The local stack's AWS (edgectl.local_aws): moto state that survives a restart."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from moto import mock_aws

from edgectl.devstack import ROOT, free_port, wait_for_http
from edgectl.local_aws import restore, snapshot
from edgectl.resources import create_resources
from tests.conftest import REGION
from tests.fault_proxy import FaultProxy, Faults


def test_a_snapshot_brings_back_queued_messages_and_items_with_in_flight_ones_visible():
    with mock_aws():
        names = create_resources(boto3.Session(region_name=REGION))
        sqs, dynamodb = boto3.client("sqs", region_name=REGION), boto3.client("dynamodb", region_name=REGION)
        sqs.send_message(QueueUrl=names.queue_url, MessageBody="waiting")
        sqs.send_message(QueueUrl=names.queue_url, MessageBody="in flight")
        sqs.receive_message(QueueUrl=names.queue_url, MaxNumberOfMessages=1, VisibilityTimeout=3600)
        dynamodb.put_item(TableName=names.keys_table, Item={"key_hash": {"S": "k"}, "project_id": {"S": "1"}})
        saved = snapshot()
    with mock_aws():  # a new, empty moto: what a restarted process starts from
        restore(saved)
        sqs, dynamodb = boto3.client("sqs", region_name=REGION), boto3.client("dynamodb", region_name=REGION)
        got = sqs.receive_message(QueueUrl=names.queue_url, MaxNumberOfMessages=10)["Messages"]
        assert sorted(m["Body"] for m in got) == ["in flight", "waiting"]
        assert dynamodb.get_item(TableName=names.keys_table, Key={"key_hash": {"S": "k"}})["Item"]["project_id"] == {
            "S": "1"
        }


@contextlib.contextmanager
def serve_aws(*args: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """`edgectl serve-aws` on a free port with `args`: its URL, and once it stopped (SIGTERM) its
    `output` and `returncode`."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "edgectl", "serve-aws", "--port", str(port), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ended: dict[str, Any] = {}
    try:
        wait_for_http(f"http://127.0.0.1:{port}/moto-api/", 30)
        yield f"http://127.0.0.1:{port}", ended
    finally:
        server.terminate()
        ended["output"] = server.communicate(timeout=30)[0]
        ended["returncode"] = server.returncode


def test_an_unreadable_state_file_is_kept_aside_and_moto_starts_empty(tmp_path):
    state = tmp_path / "aws-state.pickle"
    state.write_bytes(b"not a pickle")
    with serve_aws("--state", str(state)) as (_, ended):
        pass
    assert ended["returncode"] == 0, ended["output"]
    assert "starting empty" in ended["output"]
    assert (tmp_path / "aws-state.pickle.unreadable").read_bytes() == b"not a pickle"
    assert state.exists()  # the clean stop saved the (empty) state


def test_the_access_log_names_failures_and_leaves_out_conditional_check_failures(tmp_path):
    """A conditional write that finds its item (an idempotency claim doing its job) is no error
    in the stack's log; a real failure names its action and code."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "edgectl", "serve-aws", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/moto-api/", 30)
        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        dynamodb.create_table(
            TableName="claims",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        claim = {"TableName": "claims", "Item": {"id": {"S": "k"}}, "ConditionExpression": "attribute_not_exists(id)"}
        dynamodb.put_item(**claim)
        with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
            dynamodb.put_item(**claim)
        with pytest.raises(dynamodb.exceptions.ResourceNotFoundException):
            dynamodb.get_item(TableName="absent", Key={"id": {"S": "k"}})
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert output.count('" 400 ') == 1, output  # the missing table's; not the claim's
    assert "GetItem failed: ResourceNotFoundException" in output
    assert "ConditionalCheckFailed" not in output


def test_the_state_file_is_private_from_the_start_and_an_old_world_readable_one_is_tightened(tmp_path):
    """It holds queued payloads and the keys table: 0600, whatever the umask, as .dev/'s other secrets."""
    state = tmp_path / "aws-state.pickle"
    state.write_bytes(snapshot_of_nothing())
    state.chmod(0o644)  # as earlier versions wrote it
    with serve_aws("--state", str(state)) as (url, ended):
        assert state.stat().st_mode & 0o777 == 0o600
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=url)
        queue = sqs.create_queue(QueueName="private")["QueueUrl"]
        sqs.send_message(QueueUrl=queue, MessageBody="a queued payload")
    assert "state saved" in ended["output"]
    assert state.stat().st_mode & 0o777 == 0o600
    assert b"a queued payload" in state.read_bytes()


def test_snapshots_do_not_hold_requests_while_a_long_poll_waits(tmp_path):
    """The forwarder long-polls for 5 s; a snapshot that waited for it to end held every other
    call that long, and the edge's keys lookup (one 0.5 s call) answered 503 meanwhile."""
    from botocore.config import Config

    state = tmp_path / "aws-state.pickle"
    with serve_aws("--state", str(state), "--snapshot-every", "0.1") as (url, ended):
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=url)
        queue = sqs.create_queue(QueueName="idle")["QueueUrl"]
        # As the edge bounds its calls: one try, a 0.5 s read timeout.
        bounded = Config(read_timeout=0.5, connect_timeout=0.5, retries={"total_max_attempts": 1})
        dynamodb = boto3.client("dynamodb", region_name=REGION, endpoint_url=url, config=bounded)
        dynamodb.create_table(
            TableName="keys",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        with ThreadPoolExecutor(1) as poller:
            long_poll = poller.submit(sqs.receive_message, QueueUrl=queue, WaitTimeSeconds=3)
            for number in range(20):  # each write makes the next snapshot due
                dynamodb.put_item(TableName="keys", Item={"id": {"S": f"k{number}"}})
                time.sleep(0.05)
            assert not long_poll.done(), "the writes ended after the long poll: they proved nothing"
            assert long_poll.result().get("Messages") is None
    assert ended["returncode"] == 0, ended["output"]
    assert b"k19" in state.read_bytes()


def snapshot_of_nothing() -> bytes:
    with mock_aws():
        return snapshot()


def test_a_snapshot_leaves_out_services_no_request_reached_without_importing_them():
    """moto's SSM takes seconds to import (its default parameters): a stack that never used it
    must not pay for that in the snapshot taken while it creates its tables and queues."""
    script = (
        "import pickle, sys, boto3\n"
        "from moto import mock_aws\n"
        "from edgectl.local_aws import snapshot\n"
        "with mock_aws():\n"
        "    boto3.client('sqs', region_name='us-east-1').create_queue(QueueName='q')\n"
        "    state = pickle.loads(snapshot())\n"
        "print(sorted(state), 'moto.ssm.models' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["['sqs']", "False"], done.stdout + done.stderr


def test_the_local_sqs_keeps_moto_answers_without_its_quadratic_costs(tmp_path):
    """serve-aws runs moto with edgectl.moto_linear_sqs and one request at a time: a batch delete
    still answers per entry (taken, already taken, invalid) and long polls still wake."""
    with serve_aws() as (url, _):
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=url)
        queue = sqs.create_queue(QueueName="linear")["QueueUrl"]
        sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(3)])
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=2, VisibilityTimeout=60)["Messages"]
        first, second = got[0]["ReceiptHandle"], got[1]["ReceiptHandle"]
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=second)
        entries = [("a", first), ("c", second), ("d", "not-a-handle")]
        answer = sqs.delete_message_batch(QueueUrl=queue, Entries=[{"Id": i, "ReceiptHandle": h} for i, h in entries])
        assert sorted(s["Id"] for s in answer["Successful"]) == ["a", "c"]  # c: deleted before, still taken
        assert [(f["Id"], f["Code"]) for f in answer["Failed"]] == [("d", "ReceiptHandleIsInvalid")]
        [left] = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
        assert left["Body"] not in {got[0]["Body"], got[1]["Body"]}
        attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_dlq_redrive_moves_everything_through_a_local_aws_slower_than_the_functions_timeouts(tmp_path):
    """The operator's `dlq redrive` against a local AWS that answers every call after 2.5 s (the
    local stack's one moto process, busy with a soak): longer than a function's 2 s read timeout,
    which made the redrive fail; the operator's commands wait up to a minute."""
    with serve_aws() as (url, _):
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=url)
        dlq = sqs.create_queue(QueueName="slow-dlq")["QueueUrl"]
        queue = sqs.create_queue(QueueName="slow-queue")["QueueUrl"]
        bodies = {f'{{"event_id": "e{i}"}}' for i in range(12)}
        for start in range(0, 12, 10):
            entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(sorted(bodies)[start : start + 10])]
            sqs.send_message_batch(QueueUrl=dlq, Entries=entries)
        with FaultProxy(url, Faults(server_error=0, slow=1.0, reset=0, slow_seconds=2.5)) as slow:
            env = {
                **os.environ,
                "AWS_ENDPOINT_URL": slow.url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION,
            }
            done = subprocess.run(
                [sys.executable, "-m", "edgectl", "dlq", "redrive", "--dlq-url", dlq, "--queue-url", queue],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert slow.counts["slow"] >= 7  # depth, then receive, send, delete for each of two batches
        assert done.returncode == 0, done.stdout + done.stderr
        assert "moved 12 message(s)" in done.stdout
        moved = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        moved += sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        assert {m["Body"] for m in moved} == bodies
        attributes = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
        assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) == (
            "0",
            "0",
        )
