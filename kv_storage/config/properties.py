"""Every configuration property: its name, its default and how a raw value is checked.

Names follow the original service's configuration file, so an operator can carry values
over; the parsers accept both TOML values and the strings an environment variable holds.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from schemas.durations import parse_duration_s
from schemas.fields import MAX_KEY_BYTES

MAX_SCROLL_PAGE_SIZE = 10_000
"""Elasticsearch's default ``index.max_result_window``: a larger page is refused."""

MIN_ADMIN_TOKEN_LENGTH = 32
"""A bearer token shorter than this can be guessed; ``openssl rand -hex 32`` makes one of 64."""


def _integer(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def _at_least(minimum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        number = _integer(value)
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def _between(minimum: int, maximum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        number = _integer(value)
        if not minimum <= number <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}, got {number}")
        return number

    return parse


def _positive_duration(value: object) -> float:
    seconds = parse_duration_s(value)
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


def _value_max_size(value: object) -> int | None:
    number = _integer(value)
    if number == -1:
        return None
    if number < 0:
        raise ValueError(f"must be -1 (unlimited) or a number of bytes, got {number}")
    return number


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"expected true or false, got {value!r}")


def _one_of(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return parse


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _optional_text(value: object) -> str | None:
    text = _text(value)
    return text or None


def _admin_token(value: object) -> str | None:
    token = _optional_text(value)
    if token is not None and len(token) < MIN_ADMIN_TOKEN_LENGTH:
        raise ValueError(
            f"must be at least {MIN_ADMIN_TOKEN_LENGTH} characters (it has {len(token)}); "
            "make one with: openssl rand -hex 32"
        )
    return token


_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def parse_fingerprint(value: object) -> str | None:
    """A SHA-256 certificate fingerprint as tools print it (``AB:CD:...``) or as plain hex."""
    text = _text(value).strip()
    if not text:
        return None
    digits = text.replace(":", "").lower()
    if not _FINGERPRINT.match(digits):
        raise ValueError(
            "expected the SHA-256 fingerprint of the node's certificate: 64 hex digits, "
            "with or without colons"
        )
    return digits


_HOST_PORT = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$")


def parse_elasticsearch_uri(value: object) -> tuple[str, ...]:
    """``elasticsearch://h:p,h:p`` (plain HTTP), ``http://...`` or ``https://...``."""
    uri = _text(value).strip()
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
    prefix = _text(value)
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


@dataclass(frozen=True, slots=True)
class Property:
    name: str
    default: object
    parse: Callable[[object], object]
    description: str
    secret: bool = False

    @property
    def env_var(self) -> str:
        return "KV_STORAGE_" + re.sub(r"[.-]", "_", self.name).upper()


PROPERTIES: tuple[Property, ...] = (
    Property(
        "elasticsearch.uri",
        None,
        parse_elasticsearch_uri,
        "Elasticsearch addresses: elasticsearch://h:p,h:p, http://h:p,h:p or https://h:p,h:p",
    ),
    Property(
        "elasticsearch.auth.username",
        "",
        _optional_text,
        "Elasticsearch username for basic authentication (empty: none).",
    ),
    Property(
        "elasticsearch.auth.password",
        "",
        _optional_text,
        "Elasticsearch password for basic authentication.",
        secret=True,
    ),
    Property(
        "elasticsearch.auth.api-key",
        "",
        _optional_text,
        "Elasticsearch API key (encoded, or id:key), instead of username and password.",
        secret=True,
    ),
    Property(
        "elasticsearch.tls.ca-file",
        "",
        _optional_text,
        "PEM file of the CA(s) that signed Elasticsearch's certificate (https:// only).",
    ),
    Property(
        "elasticsearch.tls.fingerprint",
        "",
        parse_fingerprint,
        "SHA-256 fingerprint of the node's certificate, pinned instead of a CA (https:// only).",
    ),
    Property(
        "elasticsearch.tls.verify",
        True,
        _boolean,
        "Check Elasticsearch's certificate; false is insecure and logs a warning at each start.",
    ),
    Property(
        "elasticsearch.index-prefix",
        "",
        parse_index_prefix,
        "Put in front of every index and template name; lets deployments share a cluster.",
    ),
    Property(
        "elasticsearch.layout",
        "shared",
        _one_of("shared", "per-storage"),
        "Layout of storages created from now on: shared (keys and history in two shared "
        "indices, routed by storage) or per-storage (two indices each, as the original; "
        "Elasticsearch's shard limit then bounds the number of storages).",
    ),
    Property(
        "elasticsearch.shared.shards",
        1,
        _between(1, 1024),
        "Primary shards of each shared index, set when kv-storage init creates it (aim at "
        "10 to 50 GB per shard).",
    ),
    Property(
        "elasticsearch.scroll.page-size",
        1000,
        _between(1, MAX_SCROLL_PAGE_SIZE),
        "Batch size when reading all keys of a storage.",
    ),
    Property(
        "elasticsearch.scroll.keep-alive",
        "1m",
        _positive_duration,
        "How long Elasticsearch keeps a scroll open between two batches.",
    ),
    Property(
        "elasticsearch.scroll.max-open",
        16,
        _between(1, 500),
        "Most scrolls (list and clear) this instance keeps open at once; more answer 503.",
    ),
    Property(
        "elasticsearch.scroll.max-open-per-storage",
        4,
        _between(1, 500),
        "Of those, most for one storage; more of that storage answer 429, others go on.",
    ),
    Property(
        "elasticsearch.batch.max-operations",
        1000,
        _at_least(1),
        "Most keys in one batched _mget or _bulk (a multi-key call counts each key; a larger "
        "call goes alone).",
    ),
    Property(
        "elasticsearch.batch.max-bytes",
        10 * 1024 * 1024,
        _at_least(1024),
        "Most bytes of one batched request body (a larger single call goes alone); keep it "
        "below Elasticsearch's http.max_content_length.",
    ),
    Property(
        "elasticsearch.batch.max-in-flight",
        1,
        _between(1, 64),
        "Batches of reads, and of writes, waiting for Elasticsearch at once; operations "
        "arriving meanwhile wait and go together.",
    ),
    Property(
        "elasticsearch.batch.max-keys-per-storage",
        20_000,
        _at_least(1),
        "Most keys of one storage waiting for Elasticsearch at once (one call alone may "
        "hold more); more answer 429, other storages' operations go on.",
    ),
    Property(
        "elasticsearch.limit.value.max-size",
        -1,
        _value_max_size,
        "Max length of a value in bytes of UTF-8; -1 for unlimited.",
    ),
    Property(
        "elasticsearch.limit.key.max-size",
        MAX_KEY_BYTES,
        _between(1, MAX_KEY_BYTES),
        "Max length of a key in bytes of UTF-8; at most 512.",
    ),
    Property(
        "app.cache.max-size",
        1000,
        _at_least(1),
        "Max number of storages kept in the storage cache.",
    ),
    Property(
        "app.cache.expiration-time",
        "1 hour",
        _positive_duration,
        "How long a storage cache entry is kept.",
    ),
    Property(
        "app.cache.update-time",
        "1 second",
        _positive_duration,
        "How often the registry is polled for changed storages: a rotation, deletion or "
        "expiry made anywhere takes effect here within this plus app.request-timeout.",
    ),
    Property(
        "app.history.flush-size", 1000, _at_least(1), "History records written in one bulk request."
    ),
    Property(
        "app.history.flush-timeout",
        "30 seconds",
        _positive_duration,
        "Longest time a history record waits before it is written.",
    ),
    Property(
        "app.history.retry-limit",
        5,
        _at_least(0),
        "Retries of a failed history write: a record is tried at most retry-limit + 1 times, "
        "then logged as lost.",
    ),
    Property(
        "app.history.buffer-size",
        100_000,
        _at_least(1),
        "Most history records held while Elasticsearch is not taking them; more are dropped.",
    ),
    Property(
        "app.history.buffer-share-per-storage",
        0,
        _at_least(0),
        "Most of those records one storage may hold (0: a tenth of app.history.buffer-size); "
        "its further records are dropped while other storages' are still taken. At most "
        "app.history.buffer-size.",
    ),
    Property(
        "app.expiry.interval",
        "1 minute",
        _positive_duration,
        "How often expired TEMP storages are deleted (by one instance of many, under a lease).",
    ),
    Property(
        "app.default-page-size",
        50,
        _between(1, MAX_SCROLL_PAGE_SIZE),
        "History results per page when the request gives no size.",
    ),
    Property(
        "app.request-timeout",
        "3 seconds",
        _positive_duration,
        "Longest time a request may take before it is answered with 500.",
    ),
    Property(
        "app.watch.max-wait",
        "5 minutes",
        _positive_duration,
        "Longest wait a blocking read may ask for (?wait=); more is 400.",
    ),
    Property(
        "app.watch.poll-interval",
        "1 second",
        _positive_duration,
        "How often waited-for keys are checked for changes made elsewhere (one _mget for all).",
    ),
    Property(
        "app.watch.max-waiters",
        10_000,
        _at_least(1),
        "Most blocking reads waiting at once on this instance; more answer 503.",
    ),
    Property(
        "app.watch.max-waiters-per-storage",
        1_000,
        _at_least(1),
        "Of those, most for one storage; more of that storage answer 429, others go on.",
    ),
    Property(
        "app.docs.enabled",
        True,
        _boolean,
        "Serve the Swagger UI and the API document at /api/docs.",
    ),
    Property(
        "admin.token",
        "",
        _admin_token,
        "Bearer token of the administration API (/admin/), at least 32 characters; empty: "
        "the API is disabled.",
        secret=True,
    ),
    Property("server.host", "0.0.0.0", _text, "Address the HTTP server listens on."),
    Property(
        "server.tls.cert-file",
        "",
        _optional_text,
        "PEM certificate (chain) of the service; with server.tls.key-file, it serves HTTPS.",
    ),
    Property(
        "server.tls.key-file",
        "",
        _optional_text,
        "PEM private key of server.tls.cert-file.",
    ),
    Property(
        "server.access-log",
        False,
        _boolean,
        "Log a line per request, never its headers (off: it costs throughput).",
    ),
    Property(
        "server.log-format",
        "json",
        _one_of("json", "logfmt"),
        "Log lines as JSON objects or as logfmt, each with the request id.",
    ),
    Property(
        "server.port",
        8080,
        _between(0, 65535),
        "Port the HTTP server listens on; when neither the file nor the environment sets it, "
        "PORT (set by container platforms) is used when set.",
    ),
    Property(
        "server.max-body-size",
        64 * 1024 * 1024,
        _at_least(1),
        "Largest request body in bytes (a single value); a larger one is answered with 413.",
    ),
    Property(
        "server.max-json-body-size",
        4 * 1024 * 1024,
        _at_least(1),
        "Largest JSON body in bytes (multi-key and administration calls); larger: 413.",
    ),
    Property(
        "server.max-keys-per-request",
        10_000,
        _at_least(1),
        "Most keys in one multi-key call; more are answered with 400.",
    ),
    Property(
        "server.header-timeout",
        "10 seconds",
        _positive_duration,
        "Longest time a client may take to send a request's headers (from connecting, or from "
        "the first byte of a further request on the connection); then it is closed.",
    ),
    Property(
        "server.max-connections",
        10_000,
        _at_least(1),
        "Most HTTP connections open at once on this instance; more are answered with 503.",
    ),
)

PROPERTIES_BY_NAME: dict[str, Property] = {prop.name: prop for prop in PROPERTIES}
