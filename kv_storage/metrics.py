"""Prometheus metrics of one service process, in a registry of its own (not the global one).

Labels are route templates (``/get/{storage_id}/{key}``), methods and status codes: never a
storage id, a key or a secret. Counts the actors keep (history, cache) are read at scrape time.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from elastic_transport import AsyncTransport
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# name -> (kind, help): the counts the actors hand over at scrape time; a value is a number,
# or, for a metric with a label, the number of each label value.
_SNAPSHOT_METRICS = {
    "kv_storage_history_buffered_records": ("gauge", "History records waiting to be written"),
    "kv_storage_history_written_records": ("counter", "History records written"),
    "kv_storage_history_retried_records": ("counter", "History records whose write is retried"),
    "kv_storage_history_lost_records": (
        "counter",
        "History records lost after retry-limit or at shutdown",
    ),
    "kv_storage_history_dropped_records": (
        "counter",
        "History records dropped, by reason: buffer_full (Elasticsearch is not taking them), "
        "storage_share (their storage held app.history.buffer-share-per-storage already)",
    ),
    "kv_storage_history_discarded_records": (
        "counter",
        "History records of deleted storages dropped unwritten (their index refuses writes)",
    ),
    "kv_storage_cache_hits": ("counter", "Storage lookups answered by the cache"),
    "kv_storage_cache_misses": ("counter", "Storage lookups that read the registry"),
    "kv_storage_cache_entries": ("gauge", "Storages in the cache (at most app.cache.max-size)"),
    "kv_storage_watch_waiters": (
        "gauge",
        "Blocking reads waiting for a change (at most app.watch.max-waiters)",
    ),
    "kv_storage_share_refusals_operations": (
        "counter",
        "Operations, lists and clears answered 429: their storage held its share of the keys "
        "waiting for Elasticsearch or of the open scans",
    ),
    "kv_storage_sweep_pending_storages": (
        "gauge",
        "Deleted storages whose data the sweep removes once no late write can come (on the "
        "instance that holds the expiry lease)",
    ),
    "kv_storage_sweep_purged_documents": (
        "counter",
        "Documents of deleted shared-layout storages removed from the shared indices",
    ),
    "kv_storage_share_refusals_waiters": (
        "counter",
        "Blocking reads answered 429: their storage held its share of the waiters",
    ),
}


_SNAPSHOT_LABELS = {"kv_storage_history_dropped_records": "reason"}
"""The one label of a labelled snapshot metric (never a storage id: one series per storage
would grow without bound)."""

SnapshotValue = float | Mapping[str, float]


class _Snapshot(Collector):
    def __init__(self) -> None:
        self.values: dict[str, SnapshotValue] = {}

    def collect(self) -> Iterable[Metric]:
        for name, (kind, text) in _SNAPSHOT_METRICS.items():
            if name not in self.values:
                continue
            value = self.values[name]
            family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            if isinstance(value, Mapping):
                family = family_type(name, text, labels=[_SNAPSHOT_LABELS[name]])
                for label, number in value.items():
                    family.add_metric([label], number)
                yield family
            else:
                yield family_type(name, text, value=value)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kv_storage_http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kv_storage_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.es_requests = Counter(
            "kv_storage_elasticsearch_requests",
            "Requests sent to Elasticsearch, by method and outcome (2xx, 4xx, 5xx, or error "
            "when no answer came)",
            ["method", "outcome"],
            registry=self.registry,
        )
        self.watch_wakeups = Counter(
            "kv_storage_watch_wakeups",
            "Blocking reads woken, by cause: write (through this instance), poll (changed "
            "elsewhere), registry (its storage changed: checked again), timeout (unchanged: "
            "304), shutdown (304)",
            ["cause"],
            registry=self.registry,
        )
        # The HTTP connections (kv_storage.connections), counted before any request exists.
        self.open_connections = Gauge(
            "kv_storage_http_open_connections",
            "HTTP connections open now (at most server.max-connections)",
            registry=self.registry,
        )
        self.refused_connections = Counter(
            "kv_storage_http_refused_connections",
            "HTTP connections refused with 503: server.max-connections were open",
            registry=self.registry,
        )
        self.header_timeouts = Counter(
            "kv_storage_http_header_timeouts",
            "HTTP connections closed because a request's headers took longer than "
            "server.header-timeout",
            registry=self.registry,
        )
        self.malformed_requests = Counter(
            "kv_storage_http_malformed_requests",
            "Requests refused with 400 before they reached a route: not valid HTTP",
            registry=self.registry,
        )
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)

    def update(self, values: Mapping[str, SnapshotValue]) -> None:
        self._snapshot.values = dict(values)

    def transport_class(self) -> type[AsyncTransport]:
        """An Elasticsearch transport that counts what it sends."""
        counter = self.es_requests

        class CountingTransport(AsyncTransport):
            async def perform_request(  # type: ignore[override]
                self, method: str, target: str, **kwargs: Any
            ) -> Any:
                try:
                    response = await super().perform_request(method, target, **kwargs)
                except Exception:
                    counter.labels(method, "error").inc()
                    raise
                counter.labels(method, f"{response.meta.status // 100}xx").inc()
                return response

        return CountingTransport
