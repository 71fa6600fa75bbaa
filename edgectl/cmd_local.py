"""Processes of the local stack: the edge over HTTP, the forwarder poller, the key-sync schedule.

Each runs the real `app` (as a Lambda container would) against the AWS that
`AWS_ENDPOINT_URL` points at. `make dev` starts them through edgectl.devstack.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from edgectl.iam_enforce import enforce_if_asked
from edgectl.lambda_shim import LambdaContext, poll_once, scheduled_event


def register(subparsers: Any) -> None:
    edge = subparsers.add_parser("serve-edge", help="serve the edge's routes over HTTP (local stack)")
    edge.add_argument("--host", default="127.0.0.1")
    edge.add_argument("--port", type=int, default=8000)
    edge.add_argument(
        "--source-ip-header",
        metavar="NAME",
        help="local only: take the client IP (sourceIp) from this request header, to try allowlists",
    )
    edge.set_defaults(run=serve_edge)

    aws = subparsers.add_parser("serve-aws", help="moto server that keeps its state in a file (local stack)")
    aws.add_argument("--host", default="127.0.0.1")
    aws.add_argument("--port", type=int, default=4566)
    aws.add_argument("--state", type=Path, help="pickle file: loaded at start, saved after changes and at stop")
    aws.add_argument("--snapshot-every", type=float, default=2.0, help="seconds between snapshots after a change")
    aws.set_defaults(run=serve_aws)

    poller = subparsers.add_parser("poll-forwarder", help="feed the queue to the forwarder handler (local stack)")
    poller.add_argument("--wait", type=int, default=2, help="long-poll seconds")
    poller.add_argument("--batch-size", type=int, help="messages per invocation (default: as app.py deploys it)")
    poller.add_argument("--window", type=float, help="batching window, seconds (default: as app.py deploys it)")
    poller.set_defaults(run=poll_forwarder)

    schedule = subparsers.add_parser("run-schedule", help="run the key sync handler on a schedule (local stack)")
    schedule.add_argument("--every", type=float, default=300.0, help="seconds between runs (default 300)")
    schedule.set_defaults(run=run_schedule)


def make_edge_server(host: str, port: int, source_ip_header: str | None = None) -> Any:
    """The real `app` behind Chalice's local server (as a function URL hands it requests), served at the root,
    with the HTTP-level answers of the deployed API (edgectl.local_http).

    Chalice's local server keeps `current_request` per thread, so requests run concurrently.
    """
    from chalice.config import Config
    from chalice.local import CustomLocalChalice, LocalChalice, LocalDevServer

    from app import app
    from edgectl.local_http import EdgeHTTPServer, make_handler

    config = Config(chalice_stage="local", config_from_disk={"version": "2.0", "app_name": "lookout-edge"})
    if not isinstance(app, LocalChalice):  # what chalice.local.create_local_server does
        CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
        app.__class__ = CustomLocalChalice  # type: ignore[assignment]  # the class swap is chalice.local's own
    handler = make_handler(source_ip_header)
    return LocalDevServer(app, config, host, port, handler_cls=handler, server_cls=EdgeHTTPServer)


def serve_edge(args: argparse.Namespace) -> int:
    enforce_if_asked()
    server = make_edge_server(args.host, args.port, args.source_ip_header)
    print(f"edge listening on http://{args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def serve_aws(args: argparse.Namespace) -> int:
    from edgectl.local_aws import serve

    return serve(args.host, args.port, args.state, args.snapshot_every)


def poll_forwarder(args: argparse.Namespace) -> int:
    """Long-poll the queue and hand each batch to the real `forward_events` handler."""
    import app as app_module
    from chalicelib.runtime.aws import client
    from chalicelib.runtime.config import settings

    enforce_if_asked()
    queue_url = settings().require("queue_url")
    # The event source's own client (its receives and deletes are AWS's work, not the function's):
    # no 2 s read timeout, which a busy local AWS exceeds while batches of 100 are gathered.
    sqs = client("sqs", timeout_seconds=30)
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    print(f"forwarder polling {queue_url}", flush=True)
    try:
        while True:
            try:
                count, ok = poll_once(
                    sqs,
                    queue_url,
                    queue_arn,
                    app_module.forward_events,
                    args.wait,
                    args.batch_size or app_module.FORWARDER_BATCH_SIZE,
                    app_module.FORWARDER_BATCH_WINDOW if args.window is None else args.window,
                )
            except Exception as exc:  # the local AWS restarting, say: keep polling
                print(f"poll failed: {type(exc).__name__}: {exc}", flush=True)
                time.sleep(1)
                continue
            if count and not ok:
                print(f"batch of {count} not delivered; it stays queued for a retry", flush=True)
    except KeyboardInterrupt:
        return 0


def run_schedule(args: argparse.Namespace) -> int:
    """Invoke the real `sync_keys` handler now and then every `--every` seconds."""
    import app as app_module

    logging.basicConfig(level=logging.INFO)
    enforce_if_asked()
    try:
        while True:
            started = time.monotonic()
            try:
                app_module.sync_keys(scheduled_event("lookout-edge-sync_keys"), LambdaContext("sync_keys", 300))
            except Exception as exc:
                print(f"key sync failed: {type(exc).__name__}: {exc}", flush=True)
            time.sleep(max(1.0, args.every - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return 0
