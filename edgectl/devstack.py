"""The whole system on one machine: moto as AWS, the edge, the forwarder, the key sync, a receiver.

`make dev` runs it in the foreground; the end-to-end tests start it on free
ports. Each piece but the embedded AWS is its own process running the real
`app` (as a Lambda container would), with its output prefixed by its name.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from edgectl.iam_enforce import DENIED_MARKER, LOCAL_ENFORCE_VARIABLE
from edgectl.resources import StackNames, create_resources

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
DEMO_PROJECT_ID = "1"


# Every stack of this process, for tests that check no piece was denied a call (tests/conftest.py).
LIVE_STACKS: weakref.WeakSet[DevStack] = weakref.WeakSet()
_AWS_ACCESS_LOG = re.compile(r'"[A-Z]+ \S+ HTTP/1\.[01]" [23]\d\d ')


class PortInUse(RuntimeError):
    """A port the stack needs is taken; the message says which and what to do."""


@dataclass
class StackOptions:
    host: str = "127.0.0.1"
    edge_port: int = 8000
    receiver_port: int = 8001
    aws_port: int = 4566
    lookout_db_url: str | None = None  # key sync source; None → one demo key written directly
    receiver_db_url: str | None = None  # None → SQLite under state_dir
    state_dir: Path = ROOT / ".dev"
    sync_every: float = 300.0
    poll_wait: int = 1
    demo_key: str | None = None
    receiver_projects: dict[str, str] = field(default_factory=dict)  # API key → project, for /api/config
    source_ip_header: str | None = None  # local only: the edge takes the client IP from this header
    aws_state: Path | None = None  # moto's queues and tables kept in this file across restarts; None → memory
    supervise: bool = True  # restart a piece that exits, with backoff, instead of leaving the stack half up
    extra_env: dict[str, str] = field(default_factory=dict)
    # VictoriaMetrics as the forwarder's influx sink for `metric`/`otlp_metrics` (docs/sinks.md); None: off.
    metrics_port: int | None = None
    # Each piece's AWS calls judged by its function's IAM policy, a denied one answered AccessDenied
    # as AWS would (edgectl.iam_enforce); denials are printed and kept in `DevStack.iam_denials`.
    enforce_iam: bool = True


# Restart backoff of a piece that keeps exiting: 0.5 s, 1 s, 2 s ... up to 30 s; a piece that
# ran for STEADY_SECONDS before it exited starts over at the first step.
FIRST_BACKOFF, MAX_BACKOFF, STEADY_SECONDS = 0.5, 30.0, 30.0


@dataclass
class Piece:
    name: str
    command: list[str]
    process: subprocess.Popen
    pump: threading.Thread
    started: float = field(default_factory=time.monotonic)
    backoff: float = FIRST_BACKOFF
    restart_at: float | None = None  # when the supervisor brings it back; None while it runs
    held: bool = False  # stopped on purpose (`stop_piece`): the supervisor leaves it down
    env: dict[str, str] = field(default_factory=dict)  # its own variables over the stack's environment


class DevStack:
    """Start with `start()`, stop with `stop()` (or use as a context manager)."""

    def __init__(self, options: StackOptions, out: IO[str] | None = None):
        self.options = options
        self.out = out or sys.stdout
        self.token = secrets.token_hex(32)
        self.pieces: list[Piece] = []
        self.names: StackNames | None = None
        self.demo_key: str | None = None
        self._write_lock = threading.Lock()
        self._pieces_lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.iam_denials: list[str] = []  # what edgectl.iam_enforce refused, as the pieces printed it
        LIVE_STACKS.add(self)

    # -- addresses ----------------------------------------------------------------------------
    @property
    def edge_url(self) -> str:
        return f"http://{self.options.host}:{self.options.edge_port}"

    @property
    def receiver_url(self) -> str:
        return f"http://{self.options.host}:{self.options.receiver_port}"

    @property
    def aws_url(self) -> str:
        return f"http://{self.options.host}:{self.options.aws_port}"

    @property
    def metrics_url(self) -> str | None:
        return f"http://{self.options.host}:{self.options.metrics_port}" if self.options.metrics_port else None

    def environment(self) -> dict[str, str]:
        """The environment every piece runs with (the contract's variables + the local AWS)."""
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": self.aws_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "LOOKOUT_INGEST_EDGE_BACKEND_URL": self.receiver_url,
            "LOOKOUT_INGEST_EDGE_TOKEN": self.token,
            "POWERTOOLS_METRICS_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
            **({LOCAL_ENFORCE_VARIABLE: "enforce"} if self.options.enforce_iam else {}),
            **(self.names.environment() if self.names else {}),
            **self.options.extra_env,
            **self._sinks_environment(),  # after extra_env: adds to its sinks, never replaced by them
        }
        if self.options.lookout_db_url:
            env["LOOKOUT_DB_URL"] = self.options.lookout_db_url
        return env

    def session(self, region: str = REGION) -> Any:
        import boto3  # here, not at the top: every `python -m edgectl` piece imports this module

        return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region)  # noqa: S106

    def client(self, service: str, region: str = REGION) -> Any:
        return self.session(region).client(service, endpoint_url=self.aws_url)

    def create_region(self, region: str) -> StackNames:
        """The same tables and queues in another region of the embedded AWS (a second region's stack)."""
        return create_resources(_EndpointSession(self.session(region), self.aws_url))

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, ready_timeout: float = 60.0) -> DevStack:
        opts = self.options
        for port, what in ((opts.aws_port, "embedded AWS"), (opts.edge_port, "edge"), (opts.receiver_port, "receiver")):
            ensure_port_free(opts.host, port, what)
        try:
            self._start_aws()
            self.names = create_resources(_EndpointSession(self.session(), self.aws_url))
            if not opts.lookout_db_url:
                self.demo_key = self._seed_demo_key()
            self._start_receiver()
            if opts.metrics_port:
                self._start_metrics()
            edge_args = ["serve-edge", "--host", opts.host, "--port", str(opts.edge_port)]
            if opts.source_ip_header:
                edge_args += ["--source-ip-header", opts.source_ip_header]
            self._spawn("edge", edge_args)
            self._spawn("forwarder", ["poll-forwarder", "--wait", str(opts.poll_wait)])
            if opts.lookout_db_url:
                self._spawn("sync", ["run-schedule", "--every", str(opts.sync_every)])
            wait_for_http(f"{self.edge_url}/health", ready_timeout, self._check_alive)
            wait_for_http(f"{self.receiver_url}/_receiver/stats", ready_timeout, self._check_alive, self.token)
        except BaseException:
            self.stop()
            raise
        if opts.supervise:
            # Lives as long as the stack: pieces it restarts get SIGTERM when it ends (_die_with_parent).
            self._supervisor = threading.Thread(target=self._supervise, name="devstack-supervisor", daemon=True)
            self._supervisor.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every piece (SIGTERM, then SIGKILL), the embedded AWS last so that it saves
        what the others left in it; leaves nothing running."""
        self._stopping.set()
        with self._pieces_lock:
            pieces = list(self.pieces)
        others = [piece for piece in pieces if piece.name != "aws"]
        self._terminate(others, timeout)
        self._terminate([piece for piece in pieces if piece.name == "aws"], timeout)
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        with self._pieces_lock:
            self.pieces.clear()

    @staticmethod
    def _terminate(pieces: list[Piece], timeout: float) -> None:
        for piece in pieces:
            if piece.process.poll() is None:
                piece.process.terminate()
        deadline = time.monotonic() + timeout
        for piece in pieces:
            try:
                piece.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                piece.process.kill()
                piece.process.wait()
            piece.pump.join(timeout=2)

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def dead_pieces(self) -> list[str]:
        with self._pieces_lock:
            return [p.name for p in self.pieces if p.process.poll() is not None]

    def piece(self, name: str) -> Piece:
        with self._pieces_lock:
            return next(p for p in self.pieces if p.name == name)

    def restart(self, name: str) -> None:
        """Kill one piece and start it again (the reliability tests use this on the forwarder)."""
        with self._pieces_lock:
            piece = self.piece(name)
            piece.process.kill()
            piece.process.wait()
            self._respawn(piece)

    def stop_piece(self, name: str) -> None:
        """Stop one piece and keep it down (the supervisor leaves it) until `start_piece`."""
        with self._pieces_lock:
            piece = self.piece(name)
            piece.held = True
            self._terminate([piece], 10.0)

    def start_piece(self, name: str) -> None:
        with self._pieces_lock:
            piece = self.piece(name)
            piece.held = False
            if piece.process.poll() is not None:
                self._respawn(piece)

    def _supervise(self) -> None:
        """Bring back a piece that exited, alone, after its backoff; the rest of the stack runs on."""
        while not self._stopping.wait(0.2):
            now = time.monotonic()
            with self._pieces_lock:
                for piece in self.pieces:
                    if self._stopping.is_set() or piece.held or piece.process.poll() is None:
                        continue
                    if piece.restart_at is None:
                        if now - piece.started >= STEADY_SECONDS:
                            piece.backoff = FIRST_BACKOFF
                        piece.restart_at = now + piece.backoff
                        self._say(
                            piece.name,
                            f"exited with code {piece.process.returncode}; restarting in {piece.backoff:g}s",
                        )
                        piece.backoff = min(MAX_BACKOFF, piece.backoff * 2)
                    elif now >= piece.restart_at:
                        self._respawn(piece)

    def _respawn(self, piece: Piece) -> None:
        """Start `piece`'s command again in place (same name, same slot in `pieces`)."""
        piece.pump.join(timeout=2)
        fresh = self._launch(piece.name, piece.command, piece.env)
        piece.process, piece.pump, piece.started, piece.restart_at = fresh.process, fresh.pump, fresh.started, None

    # -- pieces -------------------------------------------------------------------------------
    def _start_aws(self) -> None:
        """moto server in a process of its own: its state is this stack's alone (edgectl.local_aws)."""
        args = ["serve-aws", "--host", self.options.host, "--port", str(self.options.aws_port)]
        if self.options.aws_state:
            self.options.aws_state.parent.mkdir(parents=True, exist_ok=True)
            args += ["--state", str(self.options.aws_state)]
        self._spawn("aws", args)
        wait_for_http(f"{self.aws_url}/moto-api/", 30, self._check_alive)
        self._say("aws", f"moto server on {self.aws_url}")

    def _seed_demo_key(self) -> str:
        """No Lookout database: write one demo key straight into the keys table."""
        from chalicelib.keysync.plan import item_from_row

        key = self.options.demo_key or _stored_demo_key(self.options.state_dir)
        row = {"key_id": "1", "api_key": key, "project_id": DEMO_PROJECT_ID, "organization_id": "1", "billing_ok": 1}
        item = item_from_row(row, int(time.time()))
        self.client("dynamodb").put_item(TableName=self.names.keys_table, Item=item)  # type: ignore[union-attr]
        self._say("aws", "demo key written to the keys table (no LOOKOUT_DB_URL set)")
        return key

    def _start_receiver(self) -> None:
        args = ["receiver", "--host", self.options.host, "--port", str(self.options.receiver_port)]
        if self.options.receiver_db_url:
            args += ["--db", self.options.receiver_db_url]
        else:
            self.options.state_dir.mkdir(parents=True, exist_ok=True)
            args += ["--sqlite", str(self.options.state_dir / "receiver.sqlite3")]
        projects = dict(self.options.receiver_projects)
        if self.demo_key:
            projects[self.demo_key] = DEMO_PROJECT_ID
        if projects:  # in a file only this user can read: a command line is visible to every `ps`
            projects_file = self.options.state_dir / "receiver-projects.json"
            write_private(projects_file, json.dumps(projects))
            args += ["--projects-file", str(projects_file)]
        self._spawn("receiver", args)

    def _start_metrics(self) -> None:
        """VictoriaMetrics (Debian `victoria-metrics`), data under the state directory."""
        import shutil

        binary = shutil.which("victoria-metrics")
        if not binary:
            raise RuntimeError(
                "metrics_port is set but victoria-metrics is not installed (apt-get install victoria-metrics)"
            )
        ensure_port_free(self.options.host, int(self.options.metrics_port or 0), "VictoriaMetrics")
        data = self.options.state_dir / "victoria-metrics"
        data.mkdir(parents=True, exist_ok=True)
        command = [
            binary,
            f"-httpListenAddr={self.options.host}:{self.options.metrics_port}",
            f"-storageDataPath={data}",
            "-retentionPeriod=100y",
            "-loggerLevel=ERROR",
        ]
        piece = self._launch("metrics", command)
        with self._pieces_lock:
            self.pieces.append(piece)
        wait_for_http(f"{self.metrics_url}/health", 30, self._check_alive)
        self._say("metrics", f"VictoriaMetrics on {self.metrics_url}: {self.metrics_sinks()[1]}")

    def _sinks_environment(self) -> dict[str, str]:
        text, _ = self.metrics_sinks()
        return {} if text is None else {"LOOKOUT_EDGE_SINKS": text}

    def metrics_sinks(self) -> tuple[str | None, str]:
        """LOOKOUT_EDGE_SINKS with VictoriaMetrics added beside the sinks set in the environment
        (never instead of them), or None to leave the environment's as it is; and what was done."""
        if not self.metrics_url:
            return None, "no VictoriaMetrics"
        own = {
            "name": "victoria-metrics",
            "type": "influx",
            "url": self.metrics_url,
            "signals": ["metric", "otlp_metrics"],
            "org": "lookout",
            "bucket": "lookout",
        }
        env = {**os.environ, **self.options.extra_env}
        text = env.get("LOOKOUT_EDGE_SINKS", "").strip()
        if not text and env.get("LOOKOUT_EDGE_SINKS_PARAM"):
            return None, "VictoriaMetrics is no sink: LOOKOUT_EDGE_SINKS_PARAM is set (add it there to use it)"
        try:
            sinks = json.loads(text) if text else []
        except ValueError:
            return None, "VictoriaMetrics is no sink: LOOKOUT_EDGE_SINKS is not JSON (the forwarder says why)"
        if not isinstance(sinks, list):
            return None, "VictoriaMetrics is no sink: LOOKOUT_EDGE_SINKS is not a JSON list (the forwarder says why)"
        if any(isinstance(sink, dict) and sink.get("name") == own["name"] for sink in sinks):
            return None, "metric events go to the victoria-metrics sink of LOOKOUT_EDGE_SINKS, kept as it is"
        beside = f", beside the {len(sinks)} sink(s) of LOOKOUT_EDGE_SINKS" if sinks else ""
        return json.dumps([*sinks, own]), f"metric events also go to VictoriaMetrics{beside}"

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        """Run `python -m edgectl ARGS` as a piece of the stack (supervised, its output prefixed),
        with `env` over the stack's environment: e.g. an edge of another region (bench/outages.py)."""
        self._spawn(name, args, env)

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        piece = self._launch(name, [sys.executable, "-m", "edgectl", *args], env or {})
        with self._pieces_lock:
            self.pieces.append(piece)

    def _launch(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Piece:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command,
            preexec_fn=_die_with_parent,
            process_group=0,  # Ctrl-C reaches the stack only; it stops the pieces in order
            cwd=ROOT,
            env={**self.environment(), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        pump = threading.Thread(target=self._pump, args=(name, process), daemon=True)
        pump.start()
        return Piece(name, command, process, pump, env=dict(env or {}))

    def _pump(self, name: str, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if name == "aws" and _AWS_ACCESS_LOG.search(line):
                continue  # one line per AWS call would drown the other pieces
            if line.startswith(DENIED_MARKER):
                self.iam_denials.append(f"{name}: {line.rstrip()}")
            self._say(name, line.rstrip("\n"))

    def _say(self, name: str, line: str) -> None:
        with self._write_lock:
            self.out.write(f"{name:<9}| {line}\n")
            self.out.flush()

    def _check_alive(self) -> None:
        dead = self.dead_pieces()
        if dead:
            raise RuntimeError(f"{', '.join(dead)} stopped while the stack was starting; see its output above")

    # -- banner -------------------------------------------------------------------------------
    def banner(self) -> str:
        key = self.demo_key or "YOUR_PROJECT_API_KEY"
        token_file = self.options.state_dir / "edge-token"
        write_private(token_file, self.token)
        host = f"{self.options.host}:{self.options.edge_port}"
        smoke = '{"message":"edge smoke test","exception_class":"RuntimeException"}'
        source = (
            f"key sync every {self.options.sync_every:g}s from LOOKOUT_DB_URL"
            if self.options.lookout_db_url
            else "one demo key (set LOOKOUT_DB_URL, see `make dev-seed`, to sync real keys)"
        )
        return "\n".join(
            [
                "",
                "Lookout Edge is running locally.",
                f"  DSN        http://{key}@{host}",
                "  Try it     curl -sS -w ' %{http_code}\\n' -X POST "
                f"{self.edge_url}/api/ingest -H 'X-Api-Key: {key}' -H 'Content-Type: application/json' -d '{smoke}'",
                f"  Events     land in the reference receiver at {self.receiver_url}:",
                f'             curl -sS -H "Authorization: Bearer $(cat {token_file})" '
                f"'{self.receiver_url}/_receiver/events?limit=5'",
                f"  Verify     {self.verify_command(key, token_file)}",
                f"  Queue      env $(cat {self.write_aws_env()}) .venv/bin/python -m edgectl status",
                f"  AWS        moto on {self.aws_url} (export AWS_ENDPOINT_URL={self.aws_url} to look around)",
                f"  Keys       {source}",
                *(
                    [f"  State      queues and tables kept in {self.options.aws_state} (delete it to start empty)"]
                    if self.options.aws_state
                    else []
                ),
                *(
                    [
                        f"  Metrics    {self.metrics_sinks()[1]}:",
                        f"             curl -sG {self.metrics_url}/api/v1/export --data-urlencode "
                        "'match[]={signal=\"metric\"}'",
                    ]
                    if self.metrics_url
                    else []
                ),
                "  Restarts   a piece that exits is restarted alone, with backoff",
                "  Stop       Ctrl-C",
                "",
            ]
        )

    def write_aws_env(self) -> Path:
        """`.dev/stack.env`: what `edgectl status` and `dlq` need to read this stack's moto (its
        address, moto's fixed test credentials, the queue and table names; no secret)."""
        env = {
            "AWS_ENDPOINT_URL": self.aws_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            **(self.names.environment() if self.names else {}),
        }
        path = self.options.state_dir / "stack.env"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
        return path

    def verify_command(self, key: str, token_file: Path) -> str:
        """`verify` against this stack's edge and receiver, whatever their ports."""
        from edgectl.cmd_verify import DEFAULT_TOKEN_FILE

        command = f".venv/bin/python -m edgectl verify --url {self.edge_url} --key {key} --backend-check"
        command += f" --backend-url {self.receiver_url}"
        if token_file.resolve() != DEFAULT_TOKEN_FILE:
            command += f" --backend-token-file {token_file}"
        return command


def _die_with_parent() -> None:
    """Linux: the piece gets SIGTERM when the stack's process dies, even by SIGKILL.

    (The kernel ties this to the spawning thread, so spawn from a thread that lives as
    long as the stack: the main thread, as `make dev` and the test fixtures do.)
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _EndpointSession:
    """A boto3 session whose clients all talk to one endpoint (for create_resources)."""

    def __init__(self, session: Any, endpoint: str):
        self._session, self._endpoint = session, endpoint

    def client(self, service: str) -> Any:
        return self._session.client(service, endpoint_url=self._endpoint)


def _stored_demo_key(state_dir: Path) -> str:
    """The same demo key across runs, so a DSN pasted into an app keeps working."""
    path = state_dir / "demo-key"
    if path.exists():
        path.chmod(0o600)  # written world-readable by earlier versions
        return path.read_text().strip()
    from edgectl.lookout_fixture_db import new_raw_key

    key = new_raw_key()
    write_private(path, key)
    return key


def write_private(path: Path, text: str) -> None:
    """Write a secret file readable by its owner only (0600 from the start, not chmod after)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.replace(temporary, path)


def ensure_port_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise PortInUse(
                f"port {port} on {host} is in use, the {what} needs it. Stop whatever holds it "
                f"(`ss -ltnp 'sport = :{port}'` shows it; another `make dev`?) and try again."
            ) from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, timeout: float, check: Any = None, token: str | None = None) -> None:
    """Poll `url` until it answers 200 or the time is up."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    while True:
        if check:
            check()
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")
        time.sleep(0.2)


def mariadb_available(url: str = "mysql://root:@127.0.0.1:3306/") -> bool:
    """True when the local MariaDB answers (the receiver then stores there, else in SQLite)."""
    try:
        import pymysql

        pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=1).close()
        return True
    except Exception:
        return False
