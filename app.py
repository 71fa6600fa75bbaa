"""Lookout Edge for AWS: the Chalice registry (blueprints, event handlers). Logic lives in chalicelib/."""

from __future__ import annotations

import os

from chalice.app import CloudWatchEvent, LambdaFunctionEvent, SQSEvent

from chalicelib.edge import routes as edge_routes
from chalicelib.edge.gateways import GatewayApp
from chalicelib.runtime.observability import around_invocation, traced

# Its own entry point behind every gateway (CONTRACT §8's front doors): REST payload 1.0, HTTP API and function URL 2.0.
app = GatewayApp(app_name="lookout-edge")
# Every request body is binary to the REST API, so API Gateway hands it over base64 and untouched
# (gzip sent as application/json included). JSON answers still leave as text: see GatewayApp.
app.api.binary_types = ["*/*"]
app.register_blueprint(edge_routes.edge)

# Which Lambda an invocation belongs to, by the event Chalice hands the middleware: the name of
# its logger and metrics service (the handlers' SERVICE). Routes get a Request: "api".
SERVICE_BY_EVENT = {SQSEvent: "forwarder", CloudWatchEvent: "sync", LambdaFunctionEvent: "ship-logs"}


@app.middleware("all")
def observe_invocation(event, get_response):
    """Every handler: Lambda context in each log line, correlation id reset, one metrics flush."""
    return around_invocation(event, get_response, SERVICE_BY_EVENT.get(type(event), "api"))


# --- Forwarder: SQS → Lookout and the sinks (chalicelib/forward/, docs/forwarder.md, docs/sinks.md) ---
# Chalice reads decorator arguments when it packages the app, so the queue name and the
# concurrency come from the deploying shell's environment, not the function's.
EDGE_QUEUE_NAME = os.environ.get("LOOKOUT_EDGE_QUEUE_NAME", "lookout-edge-events")
FORWARDER_CONCURRENCY = int(os.environ.get("LOOKOUT_EDGE_FORWARDER_CONCURRENCY", "25"))
# Up to 100 messages per invocation (CONTRACT §6), filled for at most the window (docs/forwarder.md).
FORWARDER_BATCH_SIZE = int(os.environ.get("LOOKOUT_EDGE_FORWARDER_BATCH_SIZE", "100"))
FORWARDER_BATCH_WINDOW = int(os.environ.get("LOOKOUT_EDGE_FORWARDER_BATCH_WINDOW", "1"))


@app.on_sqs_message(
    queue=EDGE_QUEUE_NAME,
    batch_size=FORWARDER_BATCH_SIZE,
    maximum_batching_window_in_seconds=FORWARDER_BATCH_WINDOW,
    maximum_concurrency=FORWARDER_CONCURRENCY,
)
def forward_events(event) -> dict:
    """Fan the batch out to Lookout and the configured sinks. Settles each message (every
    destination took it, or its dead-letter copy is sent) and raises when any must be
    retried, so Lambda never deletes a message a destination did not take."""
    from chalicelib.forward import handler as forward_handler

    remaining = getattr(event.context, "get_remaining_time_in_millis", None)
    with traced("forward", forward_handler.SERVICE):
        return forward_handler.forward(event.to_dict(), remaining() if remaining else None)


# --- Log shipping: CloudWatch Logs subscription → log events (chalicelib/ship_logs, CONTRACT §12) ---
@app.lambda_function(name="ship_logs")
def ship_logs(event, context) -> dict:
    """Queue each DATA_MESSAGE as a `log` event of the tail key's project; raises when the
    queue refuses one, so Lambda retries the invocation (same event ids, no duplicates)."""
    from chalicelib.ship_logs import handler as ship_handler

    with traced("ship_logs", ship_handler.SERVICE):
        return ship_handler.ship(event)


# --- Key sync: Lookout MySQL → keys table (chalicelib/keysync/, docs/key-sync.md) ---
class KeySyncFailed(RuntimeError):
    """Raised so the invocation counts as an error (Lambda Errors alarm); the details are logged."""


@app.schedule("rate(5 minutes)")
def sync_keys(event) -> dict:
    """Mirror Lookout's live project keys into the keys table (CONTRACT §7)."""
    from chalicelib.keysync import job as keysync_job

    with traced("sync", keysync_job.SERVICE):
        # The Lambda context's clock: a first load of many keys stops in time and resumes next run.
        remaining = getattr(event.context, "get_remaining_time_in_millis", None)
        result = keysync_job.run(remaining_ms=remaining)
    if not result.ok:
        raise KeySyncFailed(result.error)
    return result.summary()
