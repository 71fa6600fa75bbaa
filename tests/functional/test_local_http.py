"""The local edge server (edgectl.local_http) keeps the contract's promises at the HTTP layer."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgectl import local_http
from edgectl.cmd_local import make_edge_server
from edgectl.lambda_shim import LambdaContext, function_url_event
from edgectl.local_http import read_chunked, redact_query
from tests.conftest import drain_queue

KEY = "lk_local_http_test_key"
SOURCE_IP_HEADER = "X-Local-Source-Ip"


@pytest.fixture
def serve(aws: Any, put_key: Callable[..., dict]) -> Iterator[Callable[..., tuple[str, int]]]:
    """Start the local edge server on a free port in a thread: serve(source_ip_header=None)."""
    put_key(KEY)
    servers = []

    def start(source_ip_header: str | None = None) -> tuple[str, int]:
        server = make_edge_server("127.0.0.1", 0, source_ip_header)
        threading.Thread(target=server.server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server.server.server_address[:2]

    yield start
    for server in servers:
        server.shutdown()
        server.server.server_close()


def request(address: tuple[str, int], method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        connection.request(method, path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
        response = connection.getresponse()
        return response.status, response.read(), response
    finally:
        connection.close()


def raw_exchange(address: tuple[str, int], data: bytes) -> tuple[int, dict]:
    """Send raw bytes, read the whole answer: (status, JSON body)."""
    status, _, body = raw_answer(address, data)
    return status, json.loads(body)


def ingest(address: tuple[str, int], path: str = "/api/ingest", **headers: str) -> tuple[int, dict]:
    body = json.dumps({"message": "local"}).encode()
    status, data, _ = request(address, "POST", path, body, X_Api_Key=KEY, Content_Type="application/json", **headers)
    return status, json.loads(data)


def test_access_log_never_shows_the_query_string(serve, aws, capsys):
    address = serve()
    status, _, _ = request(address, "POST", f"/api/ingest?api_key={KEY}", b'{"message": "m"}', X_Api_Key=KEY)
    assert status == 202
    err = capsys.readouterr().err
    assert "POST /api/ingest?…" in err
    assert KEY not in err
    assert redact_query('"GET /x?api_key=k&a=b HTTP/1.1" 200') == '"GET /x?… HTTP/1.1" 200'


def test_a_method_the_route_lacks_is_the_deployed_json_404(serve):
    """API Gateway REST answers a method it has no integration for like an unknown path."""
    status, body, response = request(serve(), "GET", "/api/ingest")
    assert (status, json.loads(body)["error"]) == (404, "not_found")
    assert response.headers["Content-Type"] == "application/json"


def test_unknown_http_method_is_contract_json(serve):
    status, body, response = request(serve(), "BREW", "/api/ingest")
    assert (status, json.loads(body)["error"]) == (501, "not_implemented")
    assert response.headers["Content-Type"] == "application/json"


def test_too_many_headers_is_contract_json(serve):
    headers = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(120))
    status, body = raw_exchange(serve(), f"POST /api/ingest HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    assert (status, body["error"]) == (431, "request_header_fields_too_large")
    assert body["message"]


@pytest.mark.parametrize("path", ["//api/ingest", "/api/ingest/", "/api//ingest", "/api/ingest/log/"])
def test_paths_api_gateway_does_not_route_are_not_accepted(serve, aws, path):
    status, body = ingest(serve(), path)
    assert (status, body["error"]) == (404, "not_found")
    assert drain_queue(aws.queue_url) == []


def test_unrouted_path_is_the_gateway_responses_json_404(serve):
    status, body = ingest(serve(), "/nothing/here")
    assert (status, body) == (404, {"error": "not_found", "message": "no ingest route at /nothing/here"})


def test_chunked_post_is_read_whole(serve, aws):
    payload = json.dumps({"message": "chunked", "stack_trace": "#0 x\n" * 2000}).encode()
    chunks = [payload[i : i + 1000] for i in range(0, len(payload), 1000)]
    connection = http.client.HTTPConnection(*serve(), timeout=10)
    try:
        connection.request(
            "POST",
            "/api/ingest",
            body=iter(chunks),
            headers={"X-Api-Key": KEY, "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["status"]) == (202, "accepted")
    finally:
        connection.close()
    [message] = drain_queue(aws.queue_url)
    assert message["payload"] == json.loads(payload)


def test_read_chunked_skips_extensions_and_trailers():
    import io

    stream = io.BytesIO(b"4;name=x\r\nWiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\nNEXT")
    assert read_chunked(stream) == b"Wikipedia"
    assert stream.read() == b"NEXT"


def test_source_ip_header_is_opt_in_and_drives_the_allowlist(serve, put_key, aws):
    put_key(KEY, ip_allowlist=["198.51.100.7"])
    plain = serve()
    assert ingest(plain, **{SOURCE_IP_HEADER.replace("-", "_"): "198.51.100.7"})[0] == 403  # not opted in: ignored
    opted = serve(SOURCE_IP_HEADER)
    assert ingest(opted)[0] == 403  # 127.0.0.1 is not on the list
    assert ingest(opted, **{SOURCE_IP_HEADER.replace("-", "_"): "198.51.100.7"})[0] == 202
    status, body = ingest(opted, **{SOURCE_IP_HEADER.replace("-", "_"): "not-an-ip"})
    assert (status, body["error"]) == (400, "bad_request")
    [message] = drain_queue(aws.queue_url)
    assert message["client_ip"] == "198.51.100.7"
    assert SOURCE_IP_HEADER.lower() not in json.dumps(message).lower()


def test_a_client_that_hangs_up_leaves_no_traceback(serve, capsys):
    address = serve()
    for _ in range(5):
        sock = socket.create_connection(address, timeout=5)
        body = json.dumps({"message": "gone", "padding": "x" * 200_000}).encode()
        head = f"POST /api/ingest HTTP/1.1\r\nHost: x\r\nX-Api-Key: {KEY}\r\nContent-Length: {len(body) + 10}\r\n\r\n"
        sock.sendall(head.encode() + body)  # 10 bytes short: the server is still reading when the client resets
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    time.sleep(0.5)
    assert request(address, "GET", "/health")[0] == 200
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Error" not in err


def raw_answer(address: tuple[str, int], data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole answer: (status, headers lowercased, body)."""
    with socket.create_connection(address, timeout=20) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def post_raw(path: str, body: bytes, *header_lines: str) -> bytes:
    head = "".join(
        f"{line}\r\n" for line in ("Host: x", *header_lines, f"Content-Length: {len(body)}", "Connection: close")
    )
    return f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body


def test_a_text_body_that_is_not_utf8_gets_the_deployed_answer_not_a_dropped_connection(serve, aws, capsys):
    """A JSON event cannot carry invalid UTF-8 as text: the door hands it over base64, the app answers."""
    from app import app

    body = b'{"message":"\xff"}'
    headers = {"X-Api-Key": KEY, "Content-Type": "application/json"}
    status, answer_headers, answer = raw_answer(
        serve(), post_raw("/api/ingest", body, *(f"{k}: {v}" for k, v in headers.items()))
    )
    deployed = app(function_url_event("/api/ingest", body, headers, base64_body=True), LambdaContext("api_handler"))
    assert (status, json.loads(answer)) == (deployed["statusCode"], json.loads(deployed["body"]))
    assert status == 400 and answer_headers["content-type"] == "application/json"
    assert drain_queue(aws.queue_url) == []
    assert "Traceback" not in capsys.readouterr().err


def test_repeated_headers_are_joined_with_commas_as_a_function_url_does(serve, aws):
    address = serve()
    body = json.dumps({"message": "twice"}).encode()
    bad_then_good = post_raw(
        "/api/ingest", body, "X-Api-Key: wrong", f"X-Api-Key: {KEY}", "Content-Type: application/json"
    )
    status, _, answer = raw_answer(address, bad_then_good)
    assert (status, json.loads(answer)["error"]) == (401, "invalid_api_key")  # the key is "wrong,<key>"
    twice = post_raw(
        "/api/ingest",
        body,
        f"X-Api-Key: {KEY}",
        "X-Lookout-Tag: a",
        "x-lookout-tag: b",
        "Content-Type: application/json",
    )
    assert raw_answer(address, twice)[0] == 202
    [message] = drain_queue(aws.queue_url)
    assert message["headers"]["x-lookout-tag"] == "a,b"


def test_joined_headers_keep_the_first_spelling_and_every_value_in_order():
    pairs = [("X-Api-Key", "a"), ("Accept", "*/*"), ("x-api-key", "b"), ("X-API-KEY", "c")]
    assert local_http.joined_headers(pairs) == {"X-Api-Key": "a,b,c", "Accept": "*/*"}


def test_an_event_over_lambdas_6_mb_is_refused_as_a_function_url_does(serve, aws):
    """4.7 MiB of protobuf is under the edge's own 5 MiB, but base64 in the event it is over 6 MB."""
    body = b"\x0a" * (47 * 1024 * 1024 // 10)
    request_bytes = post_raw("/v1/traces", body, f"X-Api-Key: {KEY}", "Content-Type: application/x-protobuf")
    status, headers, answer = raw_answer(serve(), request_bytes)
    assert (status, json.loads(answer)) == (413, local_http.EVENT_TOO_LARGE)
    assert headers["content-type"] == "application/json"
    assert drain_queue(aws.queue_url) == []


def test_a_body_that_cannot_fit_the_event_is_refused_before_it_is_read(serve):
    head = f"POST /api/ingest HTTP/1.1\r\nHost: x\r\nContent-Length: {local_http.MAX_EVENT_BYTES + 1}\r\n\r\n"
    status, _, answer = raw_answer(serve(), head.encode())
    assert (status, json.loads(answer)) == (413, local_http.EVENT_TOO_LARGE)


def test_an_answer_over_lambdas_response_limit_is_the_function_urls_502(serve, aws, monkeypatch):
    monkeypatch.setattr(local_http, "MAX_RESULT_BYTES", 64)  # any real answer is larger
    status, headers, answer = raw_answer(
        serve(), post_raw("/api/ingest", b'{"message":"x"}', f"X-Api-Key: {KEY}", "Content-Type: application/json")
    )
    assert (status, answer, headers["content-type"]) == (502, b"Internal Server Error", "text/plain")


def test_an_invocation_past_the_function_timeout_is_the_function_urls_502(serve, aws, monkeypatch):
    from app import app

    assert local_http.make_handler(None).timeout_seconds == 10.0  # the deployed api_handler's (.chalice/config.json)
    monkeypatch.setattr(local_http, "function_timeout", lambda: 0.3)
    address = serve()  # first: the server gives the app its local class
    released = threading.Event()
    handle = type(app).__call__

    def slow(self: Any, event: dict, context: Any) -> Any:
        released.wait(10)
        return handle(self, event, context)

    monkeypatch.setattr(type(app), "__call__", slow)
    try:
        status, _, answer = raw_answer(address, post_raw("/health", b"", "X-Api-Key: x"))
    finally:
        released.set()
    assert (status, answer) == (502, b"Internal Server Error")


def test_the_function_timeout_is_the_deployed_one_never_over_api_gateways_29_s(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"lambda_functions": {"api_handler": {"lambda_timeout": 900}}}))
    assert local_http.function_timeout(config) == 29.0
    assert (
        local_http.function_timeout()
        == json.loads(local_http.CHALICE_CONFIG.read_text())["lambda_functions"]["api_handler"]["lambda_timeout"]
    )
