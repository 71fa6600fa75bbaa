"""Which destinations this container delivers to (CONTRACT §11), read and checked once.

`LOOKOUT_EDGE_SINKS` (or the SSM SecureString named by `LOOKOUT_EDGE_SINKS_PARAM`) lists
the sinks beside Lookout; `LOOKOUT_EDGE_LOOKOUT_SIGNALS` narrows Lookout (comma list, or
`none`). A bad configuration raises ConfigError naming the entry and the fix: the
forwarder then delivers nothing and drops nothing (every message stays queued), instead
of quietly sending a signal nowhere.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from chalicelib.contract.signals import SIGNAL_NAMES
from chalicelib.forward.sinks.base import Sink
from chalicelib.forward.sinks.lookout import LookoutSink
from chalicelib.runtime import ssm
from chalicelib.runtime.config import ConfigError, Settings
from chalicelib.runtime.container import per_container

LOOKOUT = "lookout"
# type → module with SUPPORTED_SIGNALS (None: all), OPTIONS (allowed keys) and build(spec).
SINK_MODULES = {
    "loki": "chalicelib.forward.sinks.loki",
    "influx": "chalicelib.forward.sinks.influx",
    "otlp": "chalicelib.forward.sinks.otlp",
}
COMMON_KEYS = frozenset({"name", "type", "url", "signals"})
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
SOURCE = "LOOKOUT_EDGE_SINKS"
# RFC 9110 §5.1 field name (a token) and a value of visible ASCII, space and tab: what http.client
# sends unchanged. CR/LF would split the request (header injection), anything else fails at delivery.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Set by the sink itself (framing, encoding of its body): an extra one would break every request.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-type", "content-encoding"}
)


@per_container
def _cache() -> dict[str, list[Sink]]:
    """The container's sinks, by the configuration text they were built from."""
    return {}


@dataclass(frozen=True)
class SinkSpec:
    """One checked entry of the sinks list; each sink type reads its own options from it."""

    name: str
    type: str
    url: str
    signals: frozenset[str]
    options: Mapping[str, Any]

    def error(self, text: str) -> ConfigError:
        return ConfigError(f"{SOURCE}: sink {self.name!r} ({self.type}): {text}")

    def text(self, key: str, required: bool = False, header: bool = False) -> str | None:
        """A string option, stripped; `header`: it is sent as (part of) a header value."""
        value = self.options.get(key)
        if value is None:
            if required:
                raise self.error(f'"{key}" is required')
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(f'"{key}" must be a non-empty string')
        if CONTROL.search(value):
            raise self.error(f'"{key}" must not contain control characters (CR, LF, ...)')
        if header and not HEADER_VALUE.fullmatch(value):
            raise self.error(f'"{key}" is sent in a header: printable ASCII only')
        return value.strip()

    def headers(self, key: str) -> dict[str, str]:
        """An object of extra request headers: valid names, values that cannot split the request."""
        value = self.options.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self.error(f'"{key}" must be an object of header names to strings')
        for name, text in value.items():
            if not HEADER_NAME.fullmatch(name):
                raise self.error(f'"{key}": {name!r} is not a header name (letters, digits, -, no spaces or CR/LF)')
            if name.lower() in RESERVED_HEADERS:
                raise self.error(f'"{key}": {name} is set by the sink itself')
            if not HEADER_VALUE.fullmatch(text):
                raise self.error(f'"{key}": the value of {name} must be printable ASCII (no CR, LF or other controls)')
        return {name: text.strip() for name, text in value.items()}


def sinks(config: Settings) -> list[Sink]:
    """Lookout (unless narrowed to none) and the configured sinks; built once per configuration."""
    text = _sinks_text(config)
    key = f"{config.lookout_signals}\n{config.backend_url}\n{text}"
    built = _cache()
    if key not in built:
        built.clear()
        built[key] = build(text, config.lookout_signals, config.backend_url)
    return built[key]


def _sinks_text(config: Settings) -> str | None:
    if config.sinks:
        return config.sinks
    if not config.sinks_param:
        return None
    try:
        return ssm.secure_parameter(config.sinks_param, config.token_cache_seconds)
    except ssm.ParameterUnavailable as exc:
        raise ConfigError(f"LOOKOUT_EDGE_SINKS_PARAM: {exc}") from None


def build(text: str | None, lookout_signals: str | None, backend_url: str | None) -> list[Sink]:
    """Every destination, checked: names unique, signals known and supported, no signal sent nowhere."""
    destinations: list[Sink] = []
    narrowed = _lookout_signals(lookout_signals)
    if narrowed is None or narrowed:
        if not backend_url:
            raise ConfigError(
                "LOOKOUT_INGEST_EDGE_BACKEND_URL is not set (or set LOOKOUT_EDGE_LOOKOUT_SIGNALS=none "
                "to deliver to the configured sinks only)"
            )
        destinations.append(LookoutSink(LOOKOUT, narrowed))
    for spec in parse(text):
        module = importlib.import_module(SINK_MODULES[spec.type])
        unknown = sorted(set(spec.options) - module.OPTIONS)
        if unknown:
            raise spec.error(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(module.OPTIONS))}")
        supported = module.SUPPORTED_SIGNALS
        if supported is not None and not spec.signals <= supported:
            refused = ", ".join(sorted(spec.signals - supported))
            raise spec.error(f'"signals": cannot take signal(s) {refused}; it maps {", ".join(sorted(supported))}')
        destinations.append(module.build(spec))
    covered = set().union(*(SIGNAL_NAMES if d.signals is None else d.signals for d in destinations))
    if SIGNAL_NAMES - covered:
        raise ConfigError(
            f"signal(s) {', '.join(sorted(SIGNAL_NAMES - covered))} have no destination: add them to "
            "LOOKOUT_EDGE_LOOKOUT_SIGNALS or to a sink of LOOKOUT_EDGE_SINKS"
        )
    return destinations


def parse(text: str | None) -> list[SinkSpec]:
    """The sinks list as checked specs (no I/O); ConfigError says which entry is wrong and how."""
    if not text or not text.strip():
        return []
    try:
        entries = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{SOURCE} is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{SOURCE} must be a JSON array of sinks")
    specs: list[SinkSpec] = []
    for index, entry in enumerate(entries):
        spec = _spec(index, entry)
        if spec.name == LOOKOUT or spec.name in {s.name for s in specs}:
            raise ConfigError(f"{SOURCE}: entry {index}: the name {spec.name!r} is already taken")
        specs.append(spec)
    return specs


def _spec(index: int, entry: Any) -> SinkSpec:
    where = f"{SOURCE}: entry {index}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a JSON object")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f'{where}: "name" must match {NAME_PATTERN.pattern} (it names metrics and DLQ reasons)')
    sink_type = entry.get("type")
    if not isinstance(sink_type, str) or sink_type not in SINK_MODULES:
        raise ConfigError(f'{where} ({name}): "type" must be one of {", ".join(SINK_MODULES)}, got {sink_type!r}')
    url = _url(entry.get("url"), f"{where} ({name})")
    signals = entry.get("signals")
    if not isinstance(signals, list) or not signals or not all(isinstance(s, str) for s in signals):
        raise ConfigError(f'{where} ({name}): "signals" must be a non-empty list of signal names')
    unknown = sorted(set(signals) - SIGNAL_NAMES)
    if unknown:
        raise ConfigError(f'{where} ({name}): "signals": unknown signal(s) {", ".join(unknown)}')
    options = {k: v for k, v in entry.items() if k not in COMMON_KEYS}
    return SinkSpec(name, sink_type, url, frozenset(signals), options)


def _url(url: Any, where: str) -> str:
    """An http(s) base URL the sink can append its path to, checked as urllib3 will read it."""
    problem = '"url" must be an http(s) URL'
    if not isinstance(url, str) or CONTROL.search(url) or " " in url:
        raise ConfigError(f"{where}: {problem} (a string without spaces or control characters)")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when not a number in 0-65535
    except ValueError as exc:
        raise ConfigError(f"{where}: {problem}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: {problem} with a host (scheme://host[:port][/path])")
    if port == 0:
        raise ConfigError(f"{where}: {problem}: port must be 1-65535")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{where}: {problem} without user:password@ (it is not sent; use the sink's token keys)")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(f"{where}: {problem} without ?query or #fragment (the sink appends its own path)")
    return url.rstrip("/")


def _lookout_signals(value: str | None) -> frozenset[str] | None:
    """None: every signal; empty: Lookout is not a destination."""
    if value is None or not value.strip():
        return None
    if value.strip().lower() == "none":
        return frozenset()
    names = frozenset(s.strip() for s in value.split(",") if s.strip())
    unknown = sorted(names - SIGNAL_NAMES)
    if unknown:
        raise ConfigError(f"LOOKOUT_EDGE_LOOKOUT_SIGNALS: unknown signal(s) {', '.join(unknown)}")
    return names
