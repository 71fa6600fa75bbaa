"""The receiver on real HTTP: a threaded HTTP/1.1 server around `ReceiverApp.handle`, in a background thread."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from edgectl.receiver.app import MAX_BODY_BYTES, ReceiverApp, Request, Response
from edgectl.receiver.store import ReceiverStore

log = logging.getLogger("edgectl.receiver")


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive (the forwarder reuses connections) around `server.app.handle`."""

    protocol_version = "HTTP/1.1"
    server_version = "lookout-receiver"
    timeout = 120  # an idle keep-alive connection is closed after this
    disable_nagle_algorithm = True  # headers and body are two writes: without this, +40 ms per request
    server: _ReceiverServer

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _serve(self) -> None:
        started = time.perf_counter()
        url = urlsplit(self.path)
        response = self._read_and_handle(url.path, dict(parse_qsl(url.query)))
        payload = json.dumps(response.body).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        events = "" if response.events is None else f" events={response.events}"
        elapsed = (time.perf_counter() - started) * 1000
        log.info("%s %s %d%s %.1fms", self.command, url.path, response.status, events, elapsed)

    def _read_and_handle(self, path: str, query: dict[str, str]) -> Response:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return Response(400, {"error": "length_required", "message": "send a Content-Length, not chunks"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True  # the unread body would corrupt the next request
            return Response(413, {"error": "payload_too_large", "message": f"at most {MAX_BODY_BYTES} bytes"})
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        return self.server.app.handle(Request(self.command, path, headers, query, body))

    def log_message(self, format: str, *args: Any) -> None:
        # The base class logs raw request lines here; keep only its protocol errors, at debug level.
        log.debug(format, *args)


class _ReceiverServer(ThreadingHTTPServer):
    """Tracks open connections so that `stop()` really cuts keep-alive clients (a backend outage)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: ReceiverApp):
        super().__init__(address, _Handler)
        self.app = app
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class ReceiverHandle:
    """A running receiver: `url`, `port`, the `app` (replaceable, see module doc), its `store`, `stop()`.

    `token`, `config_failing`, `set_project_settings` and `add_project_key` act on the
    live app. The store belongs to the caller: `stop()` leaves it open.
    """

    def __init__(self, server: _ReceiverServer, thread: threading.Thread):
        self._server = server
        self._thread = thread
        host, self.port = server.socket.getsockname()[:2]
        self.host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - comparing, not binding
        self.url = f"http://{self.host}:{self.port}"

    @property
    def app(self) -> ReceiverApp:
        return self._server.app

    @app.setter
    def app(self, app: Any) -> None:
        self._server.app = app

    @property
    def store(self) -> ReceiverStore:
        return self.app.store

    @property
    def token(self) -> str | None:
        return self.app.token

    @token.setter
    def token(self, token: str | None) -> None:
        self.app.token = token

    @property
    def config_failing(self) -> bool:
        return self.app.config_failing

    @config_failing.setter
    def config_failing(self, failing: bool) -> None:
        self.app.config_failing = failing

    def set_project_settings(self, project_id: str, change: dict[str, Any]) -> dict[str, Any]:
        return self.app.set_project_settings(project_id, change)

    def add_project_key(self, api_key: str, project_id: str) -> None:
        self.app.add_project_key(api_key, project_id)

    def stop(self) -> None:
        """Stop accepting, cut open connections, free the port."""
        self._server.shutdown()
        self._server.cut_connections()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ReceiverHandle:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start_receiver(
    store: ReceiverStore,
    token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    projects: dict[str, str] | None = None,
) -> ReceiverHandle:
    """Serve a receiver in a background thread; `port=0` picks a free port (read `handle.port`)."""
    server = _ReceiverServer((host, port), ReceiverApp(store, token, projects))
    # A short poll interval: `stop()` returns within it (tests stop and start receivers often).
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name=f"receiver-{server.server_address[1]}", daemon=True
    )
    thread.start()
    return ReceiverHandle(server, thread)
