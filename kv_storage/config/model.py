"""The validated, immutable configuration, one frozen dataclass per section.

Each component receives only the section it needs; durations carry their unit in the name.
"""

from dataclasses import dataclass, field

from kv_storage.model import Layout
from pipeline.config import HistoryConfig


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """Bounds of batched requests (``elasticsearch.batch.*`` for the key/value operations; the
    batcher, ``kv_storage.actors.batching``, takes them as they are configured)."""

    max_operations: int
    """Keys in one batch (a multi-key operation counts each of its keys)."""
    max_bytes: int
    """Bytes of one batch's request body."""
    max_in_flight: int
    """Batches of one kind (reads, writes) waiting for Elasticsearch at once."""
    max_keys_per_storage: int = 20_000
    """A storage's share: keys it may have waiting or in flight at once (one operation
    alone may hold more)."""


@dataclass(frozen=True, slots=True)
class ElasticsearchConfig:
    hosts: tuple[str, ...]
    username: str | None
    password: str | None = field(repr=False)
    index_prefix: str
    scroll_page_size: int
    scroll_keep_alive_s: float
    scroll_max_open: int
    """Scans (list, clear) open at once on this instance; each holds a scroll context."""
    scroll_max_open_per_storage: int
    """A storage's share of them."""
    key_max_bytes: int
    value_max_bytes: int | None
    """``None`` means values of any size (the original's ``-1``)."""
    batch: BatchLimits
    layout: Layout = Layout.SHARED
    """Of storages created from now on; existing ones keep theirs (the registry says)."""
    shared_shards: int = 1
    """Primary shards of each shared index, when ``init`` creates it."""
    ca_file: str | None = None
    """PEM file of the CA(s) to trust for https:// addresses; ``None``: the system's."""
    fingerprint: str | None = None
    """SHA-256 of the node's certificate (64 lower-case hex digits), pinned instead of a CA."""
    verify_certs: bool = True
    api_key: str | None = field(default=None, repr=False)
    """Encoded (base64 of ``id:key``); used instead of username and password."""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    max_size: int
    expiration_time_s: float
    update_time_s: float


@dataclass(frozen=True, slots=True)
class WatchConfig:
    max_wait_s: float
    poll_interval_s: float
    max_waiters: int
    max_waiters_per_storage: int


@dataclass(frozen=True, slots=True)
class AppConfig:
    default_page_size: int
    request_timeout_s: float
    expiry_interval_s: float
    docs_enabled: bool
    watch: WatchConfig
    cache: CacheConfig
    history: HistoryConfig


def revocation_s(app: AppConfig) -> float:
    """How long a change of the registry (a rotation, a deletion, an expiry) may take to reach
    every instance: one registry poll (``app.cache.update-time``) and the poll's own time,
    bounded by ``app.request-timeout`` (a poll that takes longer fails and empties the cache),
    which also bounds every request under way when the change was made."""
    return app.cache.update_time_s + app.request_timeout_s


@dataclass(frozen=True, slots=True)
class AdminConfig:
    token: str | None = field(repr=False)
    """``None``: the administration API is disabled."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str
    port: int
    max_body_size: int
    max_json_body_size: int
    max_keys_per_request: int
    access_log: bool
    log_format: str
    header_timeout_s: float
    """A request's headers must arrive within this (``kv_storage.connections``)."""
    max_connections: int
    """Connections open at once on this instance; beyond, 503."""
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    """With ``tls_cert_file``: the service listens with HTTPS."""

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert_file is not None else "http"


@dataclass(frozen=True, slots=True)
class Config:
    elasticsearch: ElasticsearchConfig
    app: AppConfig
    server: ServerConfig
    admin: AdminConfig
