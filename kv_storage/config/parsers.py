"""The service's own parsers of raw property values (the generic ones, integers, durations,
booleans and text, are ``schemas.settings``'): each accepts a TOML value and the string an
environment variable holds, and raises ``ValueError`` with the reason otherwise.
"""

import re

from kv_storage.model import Layout
from schemas.settings import integer, one_of, optional_text, text

MAX_SCROLL_PAGE_SIZE = 10_000
"""Elasticsearch's default ``index.max_result_window``: a larger page is refused."""

MIN_ADMIN_TOKEN_LENGTH = 32
"""A bearer token shorter than this can be guessed; ``openssl rand -hex 32`` makes one of 64."""


def value_max_size(value: object) -> int | None:
    """``-1`` (the original's "unlimited") is ``None``."""
    number = integer(value)
    if number == -1:
        return None
    if number < 0:
        raise ValueError(f"must be -1 (unlimited) or a number of bytes, got {number}")
    return number


def admin_token(value: object) -> str | None:
    token = optional_text(value)
    if token is not None and len(token) < MIN_ADMIN_TOKEN_LENGTH:
        raise ValueError(
            f"must be at least {MIN_ADMIN_TOKEN_LENGTH} characters (it has {len(token)}); "
            "make one with: openssl rand -hex 32"
        )
    return token


_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def parse_fingerprint(value: object) -> str | None:
    """A SHA-256 certificate fingerprint as tools print it (``AB:CD:...``) or as plain hex."""
    given = text(value).strip()
    if not given:
        return None
    digits = given.replace(":", "").lower()
    if not _FINGERPRINT.match(digits):
        raise ValueError(
            "expected the SHA-256 fingerprint of the node's certificate: 64 hex digits, "
            "with or without colons"
        )
    return digits


_HOST_PORT = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$")


def parse_elasticsearch_uri(value: object) -> tuple[str, ...]:
    """``elasticsearch://h:p,h:p`` (plain HTTP), ``http://...`` or ``https://...``."""
    uri = text(value).strip()
    scheme, separator, rest = uri.partition("://")
    if not separator or scheme.lower() not in ("elasticsearch", "http", "https"):
        raise ValueError(
            f"{uri!r} is not of the form elasticsearch://host:port,host:port, "
            "http://host:port,host:port or https://host:port,host:port"
        )
    http_scheme = "https" if scheme.lower() == "https" else "http"
    rest = rest.rstrip("/")
    if "@" in rest:
        raise ValueError(
            "credentials do not belong in the URI; set elasticsearch.auth.username "
            "and elasticsearch.auth.password"
        )
    hosts: list[str] = []
    for part in rest.split(","):
        address = part.strip()
        match = _HOST_PORT.match(address)
        if not address or match is None:
            raise ValueError(f"{address!r} in {uri!r} is not a host[:port]")
        port = match.group(1)
        if port is not None and not 1 <= int(port) <= 65535:
            raise ValueError(f"port {port} in {uri!r} is out of range")
        hosts.append(f"{http_scheme}://{address if port else address + ':9200'}")
    return tuple(hosts)


_FORBIDDEN_IN_INDEX = set('\\/*?"<>| ,#:')


def parse_index_prefix(value: object) -> str:
    prefix = text(value)
    if prefix != prefix.lower():
        raise ValueError(f"{prefix!r} has upper-case letters; index names are lower case")
    if prefix[:1] in ("-", "_", "+"):
        raise ValueError(f"{prefix!r} starts with {prefix[0]!r}, which index names cannot")
    bad = sorted(set(prefix) & _FORBIDDEN_IN_INDEX)
    if bad:
        raise ValueError(f"{prefix!r} contains {''.join(bad)!r}, not allowed in index names")
    if len(prefix.encode()) > 100:
        raise ValueError("must be at most 100 bytes, to leave room for the index names")
    return prefix


_LAYOUT_NAME = one_of("shared", "per-storage")


def parse_layout(value: object) -> Layout:
    return Layout(_LAYOUT_NAME(value))
