"""A misbehaving network between the forwarder and the receiver, for the reliability tests.

`FaultProxy(upstream)` listens on 127.0.0.1 and relays each request to `upstream`,
except that, at the rates in `Faults`, it answers a 5xx, answers too late (after the
forwarder's read timeout), resets the connection, or hangs (reads the request, never
relays nor answers it: a stalled service; `applies` picks which requests may be faulted,
e.g. one region's AWS calls); and while `wrong_token` is set it
rewrites the Authorization header so the receiver answers 401. Half of the 5xx and
resets happen AFTER the receiver stored the batch (a backend that committed and then
lost its answer), and every slow answer does: that is what makes duplicates, which the
receiver must absorb by event_id. `counts` says what was done, per kind.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import urllib3

HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


@dataclass
class Faults:
    """Shares of requests that fail each way (the rest pass through untouched)."""

    server_error: float = 0.30
    slow: float = 0.10
    reset: float = 0.05
    slow_seconds: float = 1.0  # how long a slow answer takes: set it past the forwarder's read timeout
    hang: float = 0.0  # read the request, never relay it, never answer (a stalled service)


class FaultProxy:
    """Start with `start()`, stop with `stop()`; `url` is what the forwarder should post to."""

    def __init__(
        self,
        upstream: str,
        faults: Faults | None = None,
        seed: int = 7,
        applies: Callable[[dict[str, str], bytes], bool] | None = None,
    ):
        self.upstream = upstream.rstrip("/")
        self.faults = faults or Faults()
        self.applies = applies  # which requests (by headers and body) may be faulted; None: every POST
        self.enabled = True
        self.stopped = threading.Event()  # releases the hung requests
        self.wrong_token = False
        self.counts: Counter[str] = Counter()
        self.events_per_request: list[int] = []  # events of each backend request relayed or faulted
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._pool = urllib3.PoolManager(maxsize=16, retries=False, timeout=urllib3.Timeout(connect=5, read=30))
        self._server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._pool.clear()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def choose(self) -> str:
        """The fate of the next request: pass, 5xx or slow or reset, before or after the receiver saw it."""
        with self._lock:
            roll, half = self._random.random(), self._random.random() < 0.5
        if not self.enabled:
            return "pass"
        faults = self.faults
        if roll < faults.server_error:
            return "5xx_after" if half else "5xx_before"
        if roll < faults.server_error + faults.slow:
            return "slow"
        if roll < faults.server_error + faults.slow + faults.reset:
            return "reset_after" if half else "reset_before"
        if roll < faults.server_error + faults.slow + faults.reset + faults.hang:
            return "hang"
        return "pass"

    def count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def count_events(self, body: bytes) -> None:
        """How many events a backend request carried (`{"events": [...]}`; anything else: 0)."""
        try:
            events = len(json.loads(body)["events"])
        except (ValueError, KeyError, TypeError):
            events = 0
        with self._lock:
            self.events_per_request.append(events)

    def relay(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        if self.wrong_token and "authorization" in {k.lower() for k in headers}:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            headers["Authorization"] = "Bearer not-the-edge-token"
            self.count("wrong_token")
        return self._pool.request(method, self.upstream + path, body=body, headers=headers, redirect=False)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type, proxy: FaultProxy):
        super().__init__(address, handler)
        self.proxy = proxy
        self.to_reset: set[socket.socket] = set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A killed forwarder resets its keep-alive connections: expected here, not worth a traceback."""

    def shutdown_request(self, request: Any) -> None:
        if request in self.to_reset:
            # No FIN first: close with SO_LINGER 0 sends a bare RST, as a crashed peer does.
            self.to_reset.discard(request)
            self.close_request(request)
            return
        super().shutdown_request(request)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _ProxyServer

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_GET

    def _serve(self) -> None:
        proxy = self.server.proxy
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        chosen = self.command == "POST" and (proxy.applies is None or proxy.applies(headers, body))
        fate = proxy.choose() if chosen else "pass"
        proxy.count(fate)
        if fate == "hang":  # until the proxy stops: the client's read timeout ends it
            proxy.stopped.wait()
            return self._reset()
        if self.command == "POST":
            proxy.count_events(body)
        if fate in ("5xx_before", "reset_before"):
            if fate == "reset_before":
                return self._reset()
            return self._answer(503, b'{"error":"injected","message":"fault proxy 503"}', {"Retry-After": "1"})
        try:
            upstream = proxy.relay(self.command, self.path, headers, body)
        except urllib3.exceptions.HTTPError:
            proxy.count("upstream_down")
            return self._answer(502, b'{"error":"bad_gateway","message":"receiver unreachable"}', {})
        if fate == "5xx_after":
            return self._answer(500, b'{"error":"injected","message":"fault proxy 500 after commit"}', {})
        if fate == "reset_after":
            return self._reset()
        if fate == "slow":
            time.sleep(proxy.faults.slow_seconds)
        kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS | {"content-type"}}
        self._answer(upstream.status, upstream.data, kept)

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        with contextlib.suppress(OSError):  # a slow answer's client is long gone
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def _reset(self) -> None:
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.server.to_reset.add(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass
