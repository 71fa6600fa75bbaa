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
