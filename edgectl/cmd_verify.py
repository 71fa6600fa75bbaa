"""`verify`: the seed's smoke event through an edge, and optionally into the backend."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SMOKE_EVENT = {"message": "edge smoke test", "exception_class": "RuntimeException"}
DEFAULT_RECEIVER = "http://127.0.0.1:8001"
# Written by `make dev` (edgectl.devstack); found from any working directory.
DEFAULT_TOKEN_FILE = Path(__file__).resolve().parent.parent / ".dev" / "edge-token"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("verify", help="send a smoke event through an edge and expect 202")
    parser.add_argument("--url", required=True, help="the edge's base URL (scheme://host[:port], no path)")
    parser.add_argument("--key", required=True, help="a project API key")
    parser.add_argument("--backend-check", action="store_true", help="also wait until the backend stored the event")
    parser.add_argument(
        "--backend-url",
        default=DEFAULT_RECEIVER,
        help="reference receiver to ask for the event (default %(default)s); or use --backend-query",
    )
    parser.add_argument(
        "--backend-query",
        metavar="URL_TEMPLATE",
        help="a URL answering 200 once the event exists, with {event_id} in it (e.g. your Lookout's event page API)",
    )
    parser.add_argument(
        "--backend-token-file",
        default=str(DEFAULT_TOKEN_FILE),
        help="file holding the receiver's Bearer token (default .dev/edge-token, written by make dev; "
        "LOOKOUT_INGEST_EDGE_TOKEN wins when set)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the backend (default 30)")
    parser.set_defaults(run=run_verify)


def path_warning(url: str) -> str | None:
    """The SDKs keep only scheme, host and port of a DSN: a path here is a DSN that cannot work."""
    path = urlsplit(url).path
    if path not in ("", "/"):
        return (
            f"warning: {url} has a path ({path}). Lookout SDKs drop the DSN path and post to "
            "/api/ingest at the root of the host, so this URL cannot be a DSN host: give the edge "
            "a host of its own (custom domain with an empty base path)."
        )
    return None


def send_smoke_event(url: str, key: str, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url.rstrip("/") + "/api/ingest",
        data=json.dumps(SMOKE_EVENT).encode(),
        headers={"X-Api-Key": key, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _json(response.read())
    except urllib.error.HTTPError as error:
        return error.code, _json(error.read())


def wait_until_stored(check_url: str, token: str | None, timeout: float) -> tuple[bool, str | None]:
    """Poll until `check_url` answers 200: (True, None), or (False, why the last try failed)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout
    problem: str | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(check_url, headers=headers), timeout=5) as response:
                if response.status == 200:
                    return True, None
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                return False, f"the backend refused the check ({error.code}): wrong or missing token"
            problem = None if error.code == 404 else f"the backend answered {error.code}"
        except (urllib.error.URLError, OSError) as error:
            problem = f"cannot reach the backend at {check_url}: {getattr(error, 'reason', error)}"
        time.sleep(0.5)
    return False, problem


def run_verify(args: argparse.Namespace) -> int:
    if urlsplit(args.url).scheme not in ("http", "https"):
        print(f"FAIL: {args.url} is not an http(s) URL")
        return 1
    warning = path_warning(args.url)
    if warning:
        print(warning, file=sys.stderr)
    try:
        status, body = send_smoke_event(args.url, args.key)
    except (urllib.error.URLError, OSError) as error:
        print(f"FAIL: cannot reach {args.url}: {getattr(error, 'reason', error)}")
        return 1
    if status != 202:
        detail = body.get("message") or body.get("error") or ""
        print(f"FAIL: expected 202, got {status}" + (f": {detail}" if detail else ""))
        return 1
    event_id = body.get("event_id")
    if not args.backend_check:
        print(f"OK: 202 accepted, event_id {event_id}")
        return 0
    if args.backend_query:
        check_url, token = args.backend_query.replace("{event_id}", str(event_id)), None
    else:
        check_url, token = (
            f"{args.backend_url.rstrip('/')}/_receiver/events/{event_id}",
            _token(args.backend_token_file),
        )
    stored, problem = wait_until_stored(check_url, token, args.timeout)
    if stored:
        print(f"OK: 202 accepted and stored by the backend, event_id {event_id}")
        return 0
    if problem:
        print(f"FAIL: 202 accepted (event_id {event_id}) but {problem}")
    else:
        print(
            f"FAIL: 202 accepted (event_id {event_id}) but not stored within {args.timeout:g}s; "
            "see `status` (queue depth) and `dlq status`"
        )
    return 1


def _token(path: str) -> str | None:
    if os.environ.get("LOOKOUT_INGEST_EDGE_TOKEN"):
        return os.environ["LOOKOUT_INGEST_EDGE_TOKEN"]
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
