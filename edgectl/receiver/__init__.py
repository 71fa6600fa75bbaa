"""The reference Lookout receiver: `POST /api/ingest/edge` (CONTRACT §6) as a small real server.

Lookout implements this route in its own code. This module is the executable
spec of that side, and the backend of the local stack and of the tests: it
checks the edge token, validates each §5 message, stores every event once per
`event_id`, turns `job`/`cron` events into runs and check-ins, serves the SDK's
remote config (`GET /api/config`) and lets humans and tests look inside.

Python API (the server runs in a background thread)::

    from edgectl.receiver import start_receiver
    from edgectl.receiver.store import SQLiteStore

    with start_receiver(port=0, token="t", store=SQLiteStore(path), projects={"key": "42"}) as rx:
        post to f"{rx.url}/api/ingest/edge" ...
        rx.store.event(event_id); rx.set_project_settings("42", {"signals": {"traces": {"sample_rate": 0.5}}})
        rx.config_failing = True  # /api/config answers 500

To inject faults, replace `rx.app` with any object whose `handle(Request) -> Response`
wraps the real one: the HTTP layer looks it up on every request.

Inside: `app.py` (the logic, no sockets), `server.py` (HTTP in a thread), `store.py`
(SQLite or MySQL). Command line: `python -m edgectl receiver --port 8001 --token T [--db mysql://... | --sqlite PATH]`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from typing import Any

from edgectl.receiver.app import TOKEN_ENV
from edgectl.receiver.server import ReceiverHandle, start_receiver
from edgectl.receiver.store import MySQLStore, ReceiverStore, SQLiteStore

log = logging.getLogger("edgectl.receiver")

__all__ = ["ReceiverHandle", "register", "start_receiver"]


# -- command line ------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "receiver",
        help="run the reference Lookout receiver (POST /api/ingest/edge) for local work and tests",
        description="Serve the Lookout side of CONTRACT §6 until Ctrl-C. See docs/receiver.md.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--token", help=f"the edge token (default: ${TOKEN_ENV}; none → every ingest is 503)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", metavar="MYSQL_URL", help="mysql://user:pass@host:port/db (created if missing)")
    where.add_argument(
        "--sqlite",
        metavar="PATH",
        default=os.path.join(tempfile.gettempdir(), "lookout-receiver.sqlite3"),
        help="SQLite file (the default, in the temp directory)",
    )
    parser.add_argument(
        "--project",
        action="append",
        default=[],
        metavar="KEY=PROJECT_ID",
        help="an API key allowed to read PROJECT_ID's /api/config (repeatable; visible in `ps`)",
    )
    parser.add_argument(
        "--projects-file",
        metavar="PATH",
        help='JSON {"API_KEY": "PROJECT_ID", ...}: as --project, but the keys stay off the command line',
    )
    parser.set_defaults(run=run_receiver)


def parse_projects(pairs: list[str]) -> dict[str, str]:
    """`["KEY=42", ...]` → `{"KEY": "42"}`; split at the last "=" (project ids have none)."""
    projects = {}
    for pair in pairs:
        key, sep, project_id = pair.rpartition("=")
        if not sep or not key or not project_id:
            raise SystemExit(f"--project wants KEY=PROJECT_ID, got {pair.split('=')[0][:4]}…")
        projects[key] = project_id
    return projects


def run_receiver(args: Any) -> int:
    import signal

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    store: ReceiverStore = MySQLStore(args.db) if args.db else SQLiteStore(args.sqlite)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    projects = parse_projects(args.project)
    if args.projects_file:
        with open(args.projects_file) as file:
            projects.update({str(key): str(project_id) for key, project_id in json.load(file).items()})
    handle = start_receiver(store, token, args.host, args.port, projects)
    log.info("receiver on %s, store %r, token %s", handle.url, store, "set" if token else "NOT set (503)")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopping.wait()
    handle.stop()
    store.close()
    return 0
