from chalicelib.edge.cors import preflight_headers, response_headers


def test_response_headers_echo_origin_with_credentials():
    assert response_headers("https://shop.example") == {
        "Access-Control-Allow-Origin": "https://shop.example",
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }
    assert response_headers(None) == {}


def test_preflight_allows_requested_headers():
    headers = preflight_headers("https://shop.example", "content-type, x-lookout-client-sampled, bad header")
    assert headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert headers["Access-Control-Max-Age"] == "600"
    allowed = [h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")]
    assert "content-type" in allowed and "x-lookout-client-sampled" in allowed
    assert "bad header" not in allowed
    assert headers["Vary"] == "Origin"


def test_null_wildcard_and_non_origins_are_never_echoed_with_credentials():
    """`Origin: null` (sandboxed frames, file: pages) or `*` with Allow-Credentials would hand any
    such page a credentialed answer: such requests get no CORS headers at all (issue #15 item 8)."""
    for origin in ("null", "*", "https://*.shop.example", "https://shop.example/path", "shop.example", "x\r\ny"):
        assert response_headers(origin) == {}, origin
        assert "Access-Control-Allow-Origin" not in preflight_headers(origin, "content-type")
        assert "Access-Control-Allow-Credentials" not in preflight_headers(origin, "content-type")
    for origin in (
        "http://localhost:8080",
        "http://[::1]:3000",
        "https://xn--bcher-kva.example",
        "chrome-extension://abc",
    ):
        assert response_headers(origin)["Access-Control-Allow-Origin"] == origin
