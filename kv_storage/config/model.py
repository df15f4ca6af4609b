"""The validated, immutable configuration, one frozen dataclass per section.

Each setting is declared once, here, as the field that holds it (``schemas.settings``): the
property list (``PROPERTIES``), the loader, the environment variables and the documentation's
table all come from these fields, in their order. Each component receives only the section it
needs; durations carry their unit in the name.

Sections that hold sections are keyword-only: their settings have defaults and their sections
do not, which positional fields could not mix in the order the properties are documented.
"""

from dataclasses import dataclass

from kv_storage.config.parsers import (
    MAX_SCROLL_PAGE_SIZE,
    admin_token,
    parse_elasticsearch_uri,
    parse_fingerprint,
    parse_index_prefix,
    parse_layout,
    value_max_size,
)
from kv_storage.model import Layout
from pipeline.config import HistoryConfig
from schemas.fields import MAX_KEY_BYTES
from schemas.settings import (
    at_least,
    between,
    boolean,
    one_of,
    optional_text,
    positive_duration,
    setting,
    text,
)


@dataclass(frozen=True, slots=True)
class ScrollConfig:
    """The scans (list, clear) of storages' keys, each an Elasticsearch scroll."""

    page_size: int = setting(
        "elasticsearch.scroll.page-size",
        1000,
        between(1, MAX_SCROLL_PAGE_SIZE),
        "Batch size when reading all keys of a storage.",
    )
    keep_alive_s: float = setting(
        "elasticsearch.scroll.keep-alive",
        "1m",
        positive_duration,
        "How long Elasticsearch keeps a scroll open between two batches.",
    )
    max_open: int = setting(
        "elasticsearch.scroll.max-open",
        16,
        between(1, 500),
        "Most scrolls (list and clear) this instance keeps open at once; more answer 503.",
    )
    """Scans open at once on this instance; each holds a scroll context."""
    max_open_per_storage: int = setting(
        "elasticsearch.scroll.max-open-per-storage",
        4,
        between(1, 500),
        "Of those, most for one storage; more of that storage answer 429, others go on.",
    )
    """A storage's share of them."""


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """Bounds of batched requests (``elasticsearch.batch.*`` for the key/value operations; the
    batcher, ``kv_storage.actors.batching``, takes them as they are configured)."""

    max_operations: int = setting(
        "elasticsearch.batch.max-operations",
        1000,
        at_least(1),
        "Most keys in one batched _mget or _bulk (a multi-key call counts each key; a larger "
        "call goes alone).",
    )
    """Keys in one batch (a multi-key operation counts each of its keys)."""
    max_bytes: int = setting(
        "elasticsearch.batch.max-bytes",
        10 * 1024 * 1024,
        at_least(1024),
        "Most bytes of one batched request body (a larger single call goes alone); keep it "
        "below Elasticsearch's http.max_content_length.",
    )
    """Bytes of one batch's request body."""
    max_in_flight: int = setting(
        "elasticsearch.batch.max-in-flight",
        1,
        between(1, 64),
        "Batches of reads, and of writes, waiting for Elasticsearch at once; operations "
        "arriving meanwhile wait and go together.",
    )
    """Batches of one kind (reads, writes) waiting for Elasticsearch at once."""
    max_keys_per_storage: int = setting(
        "elasticsearch.batch.max-keys-per-storage",
        20_000,
        at_least(1),
        "Most keys of one storage waiting for Elasticsearch at once (one call alone may "
        "hold more); more answer 429, other storages' operations go on.",
    )
    """A storage's share: keys it may have waiting or in flight at once (one operation
    alone may hold more)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ElasticsearchConfig:
    hosts: tuple[str, ...] = setting(
        "elasticsearch.uri",
        None,
        parse_elasticsearch_uri,
        "Elasticsearch addresses: elasticsearch://h:p,h:p, http://h:p,h:p or https://h:p,h:p",
    )
    username: str | None = setting(
        "elasticsearch.auth.username",
        "",
        optional_text,
        "Elasticsearch username for basic authentication (empty: none).",
    )
    password: str | None = setting(
        "elasticsearch.auth.password",
        "",
        optional_text,
        "Elasticsearch password for basic authentication.",
        secret=True,
    )
    api_key: str | None = setting(
        "elasticsearch.auth.api-key",
        "",
        optional_text,
        "Elasticsearch API key (encoded, or id:key), instead of username and password.",
        secret=True,
    )
    """Encoded (base64 of ``id:key``) by the loader; used instead of username and password."""
    ca_file: str | None = setting(
        "elasticsearch.tls.ca-file",
        "",
        optional_text,
        "PEM file of the CA(s) that signed Elasticsearch's certificate (https:// only).",
    )
    """PEM file of the CA(s) to trust for https:// addresses; ``None``: the system's."""
    fingerprint: str | None = setting(
        "elasticsearch.tls.fingerprint",
        "",
        parse_fingerprint,
        "SHA-256 fingerprint of the node's certificate, pinned instead of a CA (https:// only).",
    )
    """SHA-256 of the node's certificate (64 lower-case hex digits), pinned instead of a CA."""
    verify_certs: bool = setting(
        "elasticsearch.tls.verify",
        True,
        boolean,
        "Check Elasticsearch's certificate; false is insecure and logs a warning at each start.",
    )
    index_prefix: str = setting(
        "elasticsearch.index-prefix",
        "",
        parse_index_prefix,
        "Put in front of every index and template name; lets deployments share a cluster.",
    )
    layout: Layout = setting(
        "elasticsearch.layout",
        "shared",
        parse_layout,
        "Layout of storages created from now on: shared (keys and history in two shared "
        "indices, routed by storage) or per-storage (two indices each, as the original; "
        "Elasticsearch's shard limit then bounds the number of storages).",
    )
    """Of storages created from now on; existing ones keep theirs (the registry says)."""
    shared_shards: int = setting(
        "elasticsearch.shared.shards",
        1,
        between(1, 1024),
        "Primary shards of each shared index, set when kv-storage init creates it (aim at "
        "10 to 50 GB per shard).",
    )
    """Primary shards of each shared index, when ``init`` creates it."""
    scroll: ScrollConfig
    batch: BatchLimits
    value_max_bytes: int | None = setting(
        "elasticsearch.limit.value.max-size",
        -1,
        value_max_size,
        "Max length of a value in bytes of UTF-8; -1 for unlimited.",
    )
    """``None`` means values of any size (the original's ``-1``)."""
    key_max_bytes: int = setting(
        "elasticsearch.limit.key.max-size",
        MAX_KEY_BYTES,
        between(1, MAX_KEY_BYTES),
        "Max length of a key in bytes of UTF-8; at most 512.",
    )


@dataclass(frozen=True, slots=True)
class CacheConfig:
    max_size: int = setting(
        "app.cache.max-size",
        1000,
        at_least(1),
        "Max number of storages kept in the storage cache.",
    )
    expiration_time_s: float = setting(
        "app.cache.expiration-time",
        "1 hour",
        positive_duration,
        "How long a storage cache entry is kept.",
    )
    update_time_s: float = setting(
        "app.cache.update-time",
        "1 second",
        positive_duration,
        "How often the registry is polled for changed storages: a rotation, deletion or "
        "expiry made anywhere takes effect here within this plus app.request-timeout.",
    )


@dataclass(frozen=True, slots=True)
class WatchConfig:
    max_wait_s: float = setting(
        "app.watch.max-wait",
        "5 minutes",
        positive_duration,
        "Longest wait a blocking read may ask for (?wait=); more is 400.",
    )
    poll_interval_s: float = setting(
        "app.watch.poll-interval",
        "1 second",
        positive_duration,
        "How often waited-for keys are checked for changes made elsewhere (one _mget for all).",
    )
    max_waiters: int = setting(
        "app.watch.max-waiters",
        10_000,
        at_least(1),
        "Most blocking reads waiting at once on this instance; more answer 503.",
    )
    max_waiters_per_storage: int = setting(
        "app.watch.max-waiters-per-storage",
        1_000,
        at_least(1),
        "Of those, most for one storage; more of that storage answer 429, others go on.",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AppConfig:
    cache: CacheConfig
    history: HistoryConfig
    expiry_interval_s: float = setting(
        "app.expiry.interval",
        "1 minute",
        positive_duration,
        "How often expired TEMP storages are deleted (by one instance of many, under a lease).",
    )
    default_page_size: int = setting(
        "app.default-page-size",
        50,
        between(1, MAX_SCROLL_PAGE_SIZE),
        "History results per page when the request gives no size.",
    )
    request_timeout_s: float = setting(
        "app.request-timeout",
        "3 seconds",
        positive_duration,
        "Longest time a request may take before it is answered with 500.",
    )
    watch: WatchConfig
    docs_enabled: bool = setting(
        "app.docs.enabled",
        True,
        boolean,
        "Serve the Swagger UI and the API document at /api/docs.",
    )


def revocation_s(app: AppConfig) -> float:
    """How long a change of the registry (a rotation, a deletion, an expiry) may take to reach
    every instance: one registry poll (``app.cache.update-time``) and the poll's own time,
    bounded by ``app.request-timeout`` (a poll that takes longer fails and empties the cache),
    which also bounds every request under way when the change was made."""
    return app.cache.update_time_s + app.request_timeout_s


@dataclass(frozen=True, slots=True)
class AdminConfig:
    token: str | None = setting(
        "admin.token",
        "",
        admin_token,
        "Bearer token of the administration API (/admin/), at least 32 characters; empty: "
        "the API is disabled.",
        secret=True,
    )
    """``None``: the administration API is disabled."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = setting("server.host", "0.0.0.0", text, "Address the HTTP server listens on.")
    tls_cert_file: str | None = setting(
        "server.tls.cert-file",
        "",
        optional_text,
        "PEM certificate (chain) of the service; with server.tls.key-file, it serves HTTPS.",
    )
    tls_key_file: str | None = setting(
        "server.tls.key-file",
        "",
        optional_text,
        "PEM private key of server.tls.cert-file.",
    )
    """With ``tls_cert_file``: the service listens with HTTPS."""
    access_log: bool = setting(
        "server.access-log",
        False,
        boolean,
        "Log a line per request, never its headers (off: it costs throughput).",
    )
    log_format: str = setting(
        "server.log-format",
        "json",
        one_of("json", "logfmt"),
        "Log lines as JSON objects or as logfmt, each with the request id.",
    )
    port: int = setting(
        "server.port",
        8080,
        between(0, 65535),
        "Port the HTTP server listens on; when neither the file nor the environment sets it, "
        "PORT (set by container platforms) is used when set.",
    )
    max_body_size: int = setting(
        "server.max-body-size",
        64 * 1024 * 1024,
        at_least(1),
        "Largest request body in bytes (a single value); a larger one is answered with 413.",
    )
    max_json_body_size: int = setting(
        "server.max-json-body-size",
        4 * 1024 * 1024,
        at_least(1),
        "Largest JSON body in bytes (multi-key and administration calls); larger: 413.",
    )
    max_keys_per_request: int = setting(
        "server.max-keys-per-request",
        10_000,
        at_least(1),
        "Most keys in one multi-key call; more are answered with 400.",
    )
    header_timeout_s: float = setting(
        "server.header-timeout",
        "10 seconds",
        positive_duration,
        "Longest time a client may take to send a request's headers (from connecting, or from "
        "the first byte of a further request on the connection); then it is closed.",
    )
    """A request's headers must arrive within this (``kv_storage.connections``)."""
    max_connections: int = setting(
        "server.max-connections",
        10_000,
        at_least(1),
        "Most HTTP connections open at once on this instance; more are answered with 503.",
    )
    """Connections open at once on this instance; beyond, 503."""

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert_file is not None else "http"


@dataclass(frozen=True, slots=True)
class Config:
    elasticsearch: ElasticsearchConfig
    app: AppConfig
    admin: AdminConfig
    server: ServerConfig
