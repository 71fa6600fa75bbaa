"""The local stack's AWS: moto server whose queues and tables survive a restart.

moto keeps everything in memory, so a stopped `make dev` used to drop every accepted
event still waiting for the receiver. Here moto's backends are pickled to a state file
(`--state`) every few seconds after a change and when the process is told to stop
(SIGTERM), and loaded again at start. A snapshot is taken while no request runs inside
moto (under `MOTO_LOCK`), so it never holds half of a BatchWriteItem or a message that
was both sent and not yet stored; the file is written after the lock is let go, and a
long poll waiting for a message does not hold it (the edge's calls are bounded at 0.5 s:
a snapshot that waited for the forwarder's 5 s long poll to end made them time out). A
crash loses at most the last `--snapshot-every` seconds; a clean stop loses nothing.

Its access log names the action and error code of a failed call, and leaves out the
errors the edge expects in normal operation (a conditional write that finds its item
taken: an idempotency claim or rate counter doing its job), which read as failures.
"""

from __future__ import annotations

import contextlib
import copyreg
import os
import pickle
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

# The services the stack uses (edgectl.resources creates their tables and queues).
SERVICES = ("sqs", "dynamodb", "ssm")
# X-Amz-Target actions that leave nothing worth a snapshot (ReceiveMessage only moves
# a message's visibility: after a crash it is simply visible sooner).
_READ_ONLY_PREFIXES = ("Get", "Describe", "List", "Query", "Scan", "BatchGet", "Receive")
# Error codes that are answers, not failures, for this stack: left out of the access log.
EXPECTED_ERRORS = frozenset({"ConditionalCheckFailedException"})
# Where RequestGate leaves a failed call's action and error code for the log line.
ERROR_KEY = "edgectl.aws_error"


def _lock_reducers() -> None:
    """Locks cannot be pickled; a restored backend gets fresh, unlocked ones."""
    copyreg.pickle(type(threading.Lock()), lambda _: (threading.Lock, ()))
    copyreg.pickle(type(threading.RLock()), lambda _: (threading.RLock, ()))


def snapshot(services: Iterable[str] = SERVICES) -> bytes:
    """moto's state for `services` as bytes: {service: {account: {region: backend}}}.

    A service no request has reached yet (its models not imported) holds nothing and is left
    out: importing it only to find that out took seconds for SSM (moto loads its default
    parameters), and the first snapshot runs while the stack creates its tables and queues."""
    from moto.backends import get_backend

    _lock_reducers()
    state = {
        # get_backend is typed by one overload per literal service name; these are moto's own names.
        service: {account: dict(regions.items()) for account, regions in get_backend(service).items()}  # type: ignore[call-overload]
        for service in services
        if f"moto.{service}.models" in sys.modules
    }
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def restore(data: bytes) -> None:
    """Put a `snapshot` back into this process's moto backends."""
    from moto.backends import get_backend

    state = pickle.loads(data)  # noqa: S301 - our own file, written by `snapshot` under .dev/
    for service, accounts in state.items():
        live = get_backend(service)
        for account, regions in accounts.items():
            for region, backend in regions.items():
                if service == "sqs":
                    release_in_flight(backend)
                live[account][region] = backend


def release_in_flight(sqs_backend: Any) -> None:
    """Make every message visible again: the consumers that held them died with the old stack
    (a forwarder stopped between ReceiveMessage and its answer would otherwise leave its batch
    hidden for the queue's whole visibility timeout, 6 minutes)."""
    for queue in sqs_backend.queues.values():
        for message in queue._messages:
            message.visible_at = 0.0


def save(path: Path, data: bytes) -> None:
    """Write atomically (a crash mid-write leaves the previous snapshot whole) and readable by its
    owner only: the snapshot holds queued payloads and the keys table, 0600 from the start."""
    temporary = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()  # a leftover of a crash, maybe with other permissions: O_CREAT would keep them
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


# moto's backends are not thread-safe (a DeleteMessage rebuilding a queue's list while a send
# appends to it loses the message; receives iterating the in-flight set while another adds to
# it fail with "Set changed size during iteration"): requests run one at a time, as moto is
# CPU-bound under the GIL anyway. A long poll lets go while it waits (serialize_moto).
MOTO_LOCK = threading.Lock()


def serialize_moto() -> None:
    """moto's SQS without its quadratic costs (edgectl.moto_linear_sqs), and long polls that
    do not hold MOTO_LOCK while they wait for a message."""
    from moto.sqs.models import Queue

    from edgectl.moto_linear_sqs import install

    install()
    wait = Queue.wait_for_messages

    def wait_unlocked(self: Queue, timeout: int) -> None:
        MOTO_LOCK.release()
        try:
            wait(self, timeout)
        finally:
            MOTO_LOCK.acquire()

    Queue.wait_for_messages = wait_unlocked  # type: ignore[method-assign]


class RequestGate:
    """WSGI middleware that runs one request at a time (MOTO_LOCK), can hold new requests and
    wait for the running ones to end (`quiet`, at the last snapshot).

    Also notes whether a request may have changed anything since the last `take_snapshot()`.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]):
        self._app = app
        self._condition = threading.Condition()
        self._running = 0
        self._paused = False
        self.dirty = False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        action = target.rpartition(".")[2]
        with self._condition:
            while self._paused:
                self._condition.wait()
            self._running += 1
        changes = not action.startswith(_READ_ONLY_PREFIXES)
        status: list[str] = []

        def noting_start_response(code: str, headers: Any, *rest: Any) -> Any:
            status.append(code)
            return start_response(code, headers, *rest)

        try:
            with MOTO_LOCK:
                body = b"".join(self._app(environ, noting_start_response))
                # Noted under the lock, after the change: a snapshot taken before it sees it
                # dirty again, one taken after it holds the change.
                self.dirty = self.dirty or changes
            if status and status[-1][:1] in "45":
                environ[ERROR_KEY] = (action or environ.get("PATH_INFO", ""), error_code(body))
            return [body]
        finally:
            with self._condition:
                self._running -= 1
                self._condition.notify_all()

    def take_snapshot(self) -> bytes:
        """A `snapshot` between two requests' moto calls. Requests wait only while it pickles:
        a long poll lets go of MOTO_LOCK while it waits, and receiving changes nothing kept."""
        with MOTO_LOCK:
            self.dirty = False
            return snapshot()

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """No request runs inside this block (new ones wait; long polls are let finish)."""
        with self._condition:
            self._paused = True
            while self._running:
                self._condition.wait()
        try:
            yield
        finally:
            with self._condition:
                self._paused = False
                self._condition.notify_all()


def error_code(body: bytes) -> str:
    """The error code of an AWS error answer: JSON `__type` (DynamoDB, SQS) or XML `<Code>`."""
    text = body[:4096].decode("utf-8", "replace")
    found = re.search(r'"__type"\s*:\s*"(?:[^"#]*#)?([^"]+)"', text) or re.search(r"<Code>([^<]+)</Code>", text)
    return found.group(1) if found else "?"


def _request_handler() -> type:
    """moto's request handler with the access log described in the module docstring."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class AccessLog(MotoRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            action, error = getattr(self, "environ", {}).get(ERROR_KEY, (None, None))
            if error in EXPECTED_ERRORS:
                return
            super().log_request(code, size)
            if error is not None:
                self.log("info", "%s failed: %s", action, error)

    return AccessLog


def serve(host: str, port: int, state: Path | None, snapshot_every: float) -> int:
    """Serve moto until SIGTERM/SIGINT; with `state`, load it first and keep it current."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    if state is not None and state.exists():
        state.chmod(0o600)  # written world-readable by earlier versions
        try:
            restore(state.read_bytes())
            print(f"restored queues and tables from {state}", flush=True)
        except Exception as exc:  # another moto version's pickle, a truncated file: start empty, keep it
            aside = state.with_name(state.name + ".unreadable")
            os.replace(state, aside)
            print(f"cannot restore {state} ({type(exc).__name__}: {exc}); starting empty, kept as {aside}", flush=True)
    serialize_moto()
    gate = RequestGate(DomainDispatcherApplication(create_backend_app))
    server = make_server(host, port, gate, threaded=True, request_handler=_request_handler())
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"moto server on http://{host}:{port}" + (f", state in {state}" if state else ""), flush=True)
    while not stopping.wait(snapshot_every):
        if state is not None and gate.dirty:
            save(state, gate.take_snapshot())
    with gate.quiet():  # and stays quiet: nothing may change after the last snapshot
        if state is not None:
            save(state, snapshot())
            print(f"state saved to {state}", flush=True)
        server.shutdown()
    return 0
