"""Gateways, CONTRACT §8's "front doors": REST (payload 1.0), HTTP API and function URL (2.0) into one `app`.

The Lambda payload formats, not to be mixed up with the ingest protocols (chalicelib/edge/doors/).

Chalice's `app` only understands API Gateway REST proxy events: it routes by
`requestContext.resourcePath`, the route *template* API Gateway matched. HTTP API
and function URL events (payload format 2.0) carry the concrete `rawPath` instead, so
they are matched here against the app's own route table, handed to Chalice in the 1.0
shape, and its 1.0 answer is turned into a 2.0 response. Unknown routes get the
contract's JSON 404 and a malformed event a JSON 400, behind every gateway.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

from chalice import Chalice

Event = dict[str, Any]
LambdaResponse = dict[str, Any]

JSON_HEADERS = {"Content-Type": "application/json"}
# Answers with these types are text on the wire (see GatewayApp).
TEXT_MEDIA_TYPES = ("application/json", "text/")


class MalformedEvent(ValueError):
    """The event is not an HTTP request of any gateway this edge knows."""


class RouteTable:
    """Chalice route templates (`/api/ingest/{signal}`) matched against concrete paths.

    As the REST API does: literal segments win over captures, a capture takes one whole
    segment, and a path with an empty segment (`//api/ingest`, `/api/ingest/`) matches nothing.
    """

    def __init__(self, templates: Iterable[str]):
        by_length: dict[int, list[tuple[tuple[str, ...], str]]] = {}
        for template in templates:
            parts = tuple(template.strip("/").split("/")) if template != "/" else ()
            by_length.setdefault(len(parts), []).append((parts, template))
        # Captures ('{...}') sort after literals at each position: the most specific template matches first.
        self._by_length = {
            n: sorted(entries, key=lambda e: [(p.startswith("{"), p) for p in e[0]]) for n, entries in by_length.items()
        }

    def match(self, path: str) -> tuple[str, dict[str, str]] | None:
        """(template, captured path parameters) for `path`, or None when no route has its shape."""
        if path == "/":
            segments: tuple[str, ...] = ()
        else:
            segments = tuple(path.split("/")[1:])
            if not path.startswith("/") or "" in segments:
                return None
        for parts, template in self._by_length.get(len(segments), ()):
            captured: dict[str, str] = {}
            for pattern, segment in zip(parts, segments, strict=True):
                if pattern.startswith("{") and pattern.endswith("}"):
                    captured[pattern[1:-1]] = unquote(segment)
                elif pattern != segment:
                    break
            else:
                return template, captured
        return None


def not_found(path: str) -> LambdaResponse:
    """The contract's JSON 404, as the REST API's gateway response words it."""
    return _json_response(404, {"error": "not_found", "message": f"no ingest route at {path}"})


def bad_event(reason: str) -> LambdaResponse:
    return _json_response(400, {"error": "invalid_request", "message": f"the request could not be read: {reason}"})


def _json_response(status: int, body: dict[str, str]) -> LambdaResponse:
    return {
        "statusCode": status,
        "headers": dict(JSON_HEADERS),
        "multiValueHeaders": {},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


class GatewayApp(Chalice):
    """A Chalice app that is its own Lambda entry point behind every gateway.

    `app.app` is the API function's handler on every deploy path (`chalice deploy` cannot
    name another), so the payload version is told apart here: 1.0 goes to Chalice as is,
    2.0 is routed by path and answered in 2.0. Every answer with a textual Content-Type
    leaves as text (`isBase64Encoded: false`) even though every media type is binary to the
    REST API (so gzip bodies arrive intact whatever their Content-Type): API Gateway passes
    text through whatever the client's Accept, and decodes base64 only for some.
    """

    _route_table: RouteTable | None = None

    def __call__(self, event: Any, context: Any) -> LambdaResponse:
        if isinstance(event, dict) and event.get("version") == "2.0":
            try:
                rest_event = rest_event_from_v2(event)
            except MalformedEvent as error:
                return to_v2_response(bad_event(str(error)))
            return to_v2_response(self._serve(rest_event, context))
        request_context = event.get("requestContext") if isinstance(event, dict) else None
        if isinstance(request_context, dict) and "httpMethod" in request_context:
            try:
                return self._serve(checked_rest_event(event), context)
            except MalformedEvent as error:
                return bad_event(str(error))
        return bad_event("not an API Gateway or function URL event")

    def _serve(self, event: Event, context: Any) -> LambdaResponse:
        """Route a 1.0-shaped event: by the template API Gateway matched (REST), else by the
        concrete path (2.0, or HTTP API's payload 1.0 on a `$default` route)."""
        request_context = event["requestContext"]
        method = request_context["httpMethod"]
        resource = request_context.get("resourcePath")
        if self._route_table is None:  # built once every route (blueprints too) is registered
            self._route_table = RouteTable(self.routes)
        if resource in self.routes and not _captures_given(resource, event.get("pathParameters")):
            resource = None  # a templated route needs its captures: without them, route by the path
        if resource not in self.routes:
            path = event.get("path") or ""
            found = self._route_table.match(path)
            if found is None:
                return not_found(path)
            resource, parameters = found
            event = {**event, "resource": resource, "pathParameters": parameters or None}
            event["requestContext"] = {**request_context, "resourcePath": resource}
        if method not in self.routes[resource]:
            # API Gateway REST answers a method it has no integration for like an unknown path.
            return not_found(event.get("path") or resource)
        return _as_text(super().__call__(_accepting_anything(event), context))


def checked_rest_event(event: Event) -> Event:
    """A payload 1.0 event with the types Chalice reads, else MalformedEvent (a JSON 400).

    API Gateway never sends these shapes; a hand-made or corrupted event must still get the
    contract's answer rather than a 500 from deep inside Chalice. The body's base64 is
    checked by the door (`routes.current_request`), so Firehose answers in its own shape.
    """
    context = event["requestContext"]
    if not isinstance(context.get("httpMethod"), str):
        raise MalformedEvent("requestContext.httpMethod is not a string")
    if not isinstance(context.get("resourcePath"), str | None):
        raise MalformedEvent("requestContext.resourcePath is not a string")
    identity = context.get("identity")
    if not isinstance(identity, dict | None) or not isinstance((identity or {}).get("sourceIp"), str | None):
        raise MalformedEvent("requestContext.identity.sourceIp is not a string")
    if not isinstance(event.get("path"), str | None):
        raise MalformedEvent("path is not a string")
    if not isinstance(event.get("body"), str | bytes | None):  # bytes: Chalice's local server and test client
        raise MalformedEvent("body is not a string")
    for name in ("headers", "queryStringParameters", "pathParameters", "stageVariables"):
        value = event.get(name)
        if not isinstance(value, dict | None) or not all(
            isinstance(k, str) and _is_text(v) for k, v in (value or {}).items()
        ):
            raise MalformedEvent(f"{name} is not a map of strings")
    for name in ("multiValueHeaders", "multiValueQueryStringParameters"):
        value = event.get(name)
        if not isinstance(value, dict | None) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(one, str) for one in v)
            for k, v in (value or {}).items()
        ):
            raise MalformedEvent(f"{name} is not a map of string lists")
    known = ("multiValueQueryStringParameters", "pathParameters", "stageVariables", "body")
    return {
        **event,
        **{name: event.get(name) for name in known},
        "headers": event.get("headers") or {},
        "isBase64Encoded": event.get("isBase64Encoded") is True,
        "requestContext": {**context, "identity": identity or {}},
    }


def _is_text(value: Any) -> bool:
    """A string HTTP could have carried: no lone surrogates (a JSON event can hold `\\ud800`)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _captures_given(template: str, parameters: Any) -> bool:
    """Whether the event carries every path parameter the route template captures."""
    names = [part[1:-1] for part in template.split("/") if part.startswith("{")]
    return not names or (isinstance(parameters, dict) and all(name in parameters for name in names))


def _accepting_anything(event: Event) -> Event:
    """No Accept header means any answer will do (RFC 9110 §12.5.1). Chalice would refuse a
    request without one whose answer type is binary, and to the REST API every type is."""
    headers = event.get("headers") or {}
    if any(name.lower() == "accept" for name in headers):
        return event
    return {**event, "headers": {**headers, "accept": "*/*"}}


def _as_text(response: LambdaResponse) -> LambdaResponse:
    """Chalice base64-encodes every answer whose type is a binary media type; JSON and text go back to text."""
    if not response.get("isBase64Encoded"):
        return response
    content_type = next((v for k, v in (response.get("headers") or {}).items() if k.lower() == "content-type"), "")
    if not content_type.lower().startswith(TEXT_MEDIA_TYPES):
        return response
    return {**response, "body": base64.b64decode(response["body"]).decode("utf-8"), "isBase64Encoded": False}


def rest_event_from_v2(event: Event) -> Event:
    """A payload 2.0 event (HTTP API, function URL) in the REST proxy shape Chalice reads."""
    context = event.get("requestContext")
    http = context.get("http") if isinstance(context, dict) else None
    if not isinstance(context, dict) or not isinstance(http, dict) or not isinstance(http.get("method"), str):
        raise MalformedEvent("payload 2.0 without requestContext.http.method")
    raw_path = event.get("rawPath", http.get("path"))
    if not isinstance(raw_path, str) or not raw_path.startswith("/"):
        raise MalformedEvent("payload 2.0 without an absolute rawPath")
    headers = event.get("headers") or {}
    if not isinstance(headers, dict) or not all(_is_text(v) for v in headers.values()):
        raise MalformedEvent("headers are not a map of strings")
    headers = {name.lower(): value for name, value in headers.items()}
    cookies = event.get("cookies")
    if not isinstance(cookies, list | None) or not all(isinstance(c, str) for c in cookies or ()):
        raise MalformedEvent("cookies are not a list of strings")
    if cookies and "cookie" not in headers:
        headers["cookie"] = "; ".join(cookies)
    path = _without_stage(raw_path, context.get("stage"))  # still percent-encoded: captures are decoded
    raw_query = event.get("rawQueryString")
    if not isinstance(raw_query, str | None):
        raise MalformedEvent("rawQueryString is not a string")
    query = parse_qs(raw_query or "", keep_blank_values=True)
    source_ip = http.get("sourceIp")
    if not isinstance(source_ip, str | None) or not isinstance(http.get("userAgent"), str | None):
        raise MalformedEvent("requestContext.http.sourceIp and userAgent are strings")
    body = _body(event)
    stage_variables = event.get("stageVariables")
    if not isinstance(stage_variables, dict | None):
        raise MalformedEvent("stageVariables is not a map")
    return {
        "resource": None,
        "path": path,
        "httpMethod": http["method"].upper(),
        "headers": headers,
        "multiValueHeaders": {name: value.split(",") for name, value in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": stage_variables,
        "requestContext": {
            "resourcePath": None,
            "httpMethod": http["method"].upper(),
            "path": raw_path,
            "stage": context.get("stage", "$default"),
            "requestId": context.get("requestId"),
            "domainName": context.get("domainName"),
            "apiId": context.get("apiId"),
            "identity": {"sourceIp": source_ip, "userAgent": http.get("userAgent")},
        },
        "body": body,
        "isBase64Encoded": isinstance(body, str),
    }


def _without_stage(raw_path: str, stage: Any) -> str:
    """HTTP API puts a named stage in front of the path (`/prod/api/ingest`); `$default` has none."""
    if isinstance(stage, str) and stage and stage != "$default":
        prefix = f"/{stage}"
        if raw_path == prefix:
            return "/"
        if raw_path.startswith(prefix + "/"):
            return raw_path[len(prefix) :]
    return raw_path


def _body(event: Event) -> bytes | str | None:
    """The body as bytes, base64 decoded once here; a broken encoding stays base64 text for the
    door to refuse in its own terms (`routes.event_body`)."""
    body = event.get("body")
    if body is None:
        return None
    if not isinstance(body, str):
        raise MalformedEvent("body is not a string")
    if not event.get("isBase64Encoded"):
        try:
            return body.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedEvent("body is not valid UTF-8 text") from None
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return body


def to_v2_response(response: LambdaResponse) -> LambdaResponse:
    """A payload 1.0 answer as a 2.0 response: multi-value headers comma-joined, Set-Cookie as `cookies`."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    values: Mapping[str, Any] = response.get("headers") or {}
    multi: Mapping[str, Any] = response.get("multiValueHeaders") or {}
    for name, value in [*((n, [v]) for n, v in values.items()), *multi.items()]:
        if name.lower() == "set-cookie":
            cookies.extend(str(v) for v in value)
        else:
            headers[name] = ",".join([headers[name], *map(str, value)] if name in headers else map(str, value))
    answer: LambdaResponse = {
        "statusCode": response["statusCode"],
        "headers": headers,
        "body": response.get("body") or "",
        "isBase64Encoded": bool(response.get("isBase64Encoded")),
    }
    if cookies:
        answer["cookies"] = cookies
    return answer
