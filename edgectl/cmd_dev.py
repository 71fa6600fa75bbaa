"""`dev` (the whole stack in the foreground) and `dev-seed` (a Lookout database to sync from)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from typing import Any

from edgectl.devstack import ROOT, DevStack, PortInUse, StackOptions, mariadb_available, write_private

STATE_DIR = ROOT / ".dev"
SEEDED_URL_FILE = STATE_DIR / "lookout-db-url"
SERVER_URL = "mysql://root:@127.0.0.1:3306/"
DEV_DATABASE = "lookout_dev"
RECEIVER_DATABASE = "lookout_edge_receiver"


def register(subparsers: Any) -> None:
    dev = subparsers.add_parser("dev", help="run the whole stack locally until Ctrl-C (what `make dev` runs)")
    dev.add_argument("--edge-port", type=int, default=int(os.environ.get("EDGE_PORT", 8000)))
    dev.add_argument("--receiver-port", type=int, default=int(os.environ.get("RECEIVER_PORT", 8001)))
    dev.add_argument("--aws-port", type=int, default=int(os.environ.get("AWS_PORT", 4566)))
    dev.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("METRICS_PORT", 8428)),
        help="VictoriaMetrics, when installed: the influx sink of metric events (default 8428)",
    )
    dev.add_argument("--sync-every", type=float, default=300.0, help="seconds between key syncs (default 300)")
    dev.add_argument(
        "--source-ip-header",
        metavar="NAME",
        help="let the edge take the client IP from this request header (local only, to try IP allowlists)",
    )
    dev.set_defaults(run=run_dev)

    seed = subparsers.add_parser("dev-seed", help="create a Lookout database with a demo key for the key sync")
    seed.add_argument("--server-url", default=SERVER_URL, help=f"MariaDB/MySQL server (default {SERVER_URL})")
    seed.add_argument("--database", default=DEV_DATABASE)
    seed.set_defaults(run=run_dev_seed)


def lookout_db_url() -> str | None:
    """LOOKOUT_DB_URL if set, else the database `make dev-seed` made."""
    if os.environ.get("LOOKOUT_DB_URL"):
        return os.environ["LOOKOUT_DB_URL"]
    return SEEDED_URL_FILE.read_text().strip() if SEEDED_URL_FILE.exists() else None


def run_dev(args: argparse.Namespace) -> int:
    receiver_db = f"{SERVER_URL}{RECEIVER_DATABASE}" if mariadb_available() else None
    options = StackOptions(
        edge_port=args.edge_port,
        receiver_port=args.receiver_port,
        aws_port=args.aws_port,
        lookout_db_url=lookout_db_url(),
        receiver_db_url=receiver_db,
        state_dir=STATE_DIR,
        sync_every=args.sync_every,
        source_ip_header=args.source_ip_header,
        aws_state=STATE_DIR / "aws-state.pickle",  # accepted events survive a restart of `make dev`
        # Metric events also go to VictoriaMetrics when it is installed (docs/sinks.md).
        metrics_port=args.metrics_port if shutil.which("victoria-metrics") else None,
    )
    stack = DevStack(options)
    # Ctrl-C and SIGTERM both stop the stack, even when started with SIGINT ignored (nohup, CI).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.start()
        print(f"receiver stores events in {'MariaDB ' + RECEIVER_DATABASE if receiver_db else 'SQLite (.dev/)'}")
        if options.lookout_db_url:
            print(f"key sync reads {_without_password(options.lookout_db_url)}; API keys are those of that database")
        print(stack.banner(), flush=True)
        while True:  # a piece that exits is restarted alone by the stack's supervisor
            time.sleep(3600)
    except PortInUse as error:
        print(f"make dev: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        stack.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):  # down: a late one must not kill the exit
            signal.signal(signum, signal.SIG_IGN)
        print("stopped: nothing left running", flush=True)


def _interrupt(*_: object) -> None:
    """The first SIGINT or SIGTERM stops the stack. Every later one (make forwards Ctrl-C too, a
    user presses it twice) is only acknowledged: raised inside DevStack.stop() it would leave pieces
    running, the `aws` piece without its final save."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _already_stopping)
    raise KeyboardInterrupt


def _already_stopping(*_: object) -> None:
    print("already stopping: the pieces end in order, the aws piece saves its state last", flush=True)


def run_dev_seed(args: argparse.Namespace) -> int:
    import pymysql

    from chalicelib.keysync.source_mysql import connect
    from edgectl import lookout_fixture_db

    try:
        lookout_fixture_db.drop_database(args.server_url, args.database)
        url = lookout_fixture_db.create_database(args.server_url, args.database)
        with connect(url, streaming=False) as conn:
            key = lookout_fixture_db.insert_demo_key(conn, key_id=1, project_id=1, organization_id=1)
            conn.commit()
    except pymysql.MySQLError as exc:
        print(f"dev-seed: cannot reach the database server ({exc.args[-1]}); is MariaDB running?", file=sys.stderr)
        return 1
    write_private(SEEDED_URL_FILE, url)
    write_private(STATE_DIR / "demo-key", key)
    print(f"created database {args.database} with the Lookout schema and one organization, project and key")
    print(f"  API key       {key}")
    print(f"  LOOKOUT_DB_URL {_without_password(url)} (saved in {SEEDED_URL_FILE.relative_to(ROOT)})")
    print("now run `make dev`: its key sync reads this database")
    return 0


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
