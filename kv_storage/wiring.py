"""The one place that builds the service's parts from its configuration and tears them down.

Each part is an async context manager that starts one resource, puts it in ``Parts`` and
stops it when it ends: the Elasticsearch client, the history pipeline, each actor, each
periodic job (each of the last three written as what it builds, which ``_part`` runs). The
HTTP service runs every part as a ``cleanup_ctx`` of its own (aiohttp stops them in reverse
order and goes on with the others when one fails to stop); a command of the command line runs
the few it needs in an ``AsyncExitStack`` (the same order, the same guarantee); tests use
both. So the client is made here and nowhere else, and every consumer wires the parts the same
way.
"""

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from elastic_transport import AsyncTransport
from elasticsearch import AsyncElasticsearch

from kv_storage.actors.cache import CacheActor
from kv_storage.actors.expiry import ExpirySweep, drop_delay_s
from kv_storage.actors.history_query import HistoryQueryActor
from kv_storage.actors.key_listing import KeyListingActor
from kv_storage.actors.lifecycle import LifecycleActor
from kv_storage.actors.registry_poll import RegistryPoll
from kv_storage.actors.shares import SCANS, SharedPool
from kv_storage.actors.storage import StorageActor
from kv_storage.actors.watch import WatchActor
from kv_storage.config import BatchLimits, Config, revocation_s
from kv_storage.es.client import create_client
from kv_storage.es.cluster_clock import ClusterClock
from kv_storage.es.data import DataStore
from kv_storage.es.history import HistoryStore
from kv_storage.es.keys import KeyIndex
from kv_storage.es.lease import Lease, Mark
from kv_storage.es.moving import StorageCopy
from kv_storage.es.names import IndexNames
from kv_storage.es.registry import Registry
from kv_storage.es.registry_changes import RegistryChanges
from kv_storage.es.retirement import StorageIndices
from kv_storage.es.signing_keys import SigningKeys
from kv_storage.es.versions import Versions
from pipeline.actor import HistoryActor

_MOVE_PAGE_SIZE = 1000
HISTORY_SHUTDOWN_TIMEOUT_S = 10.0
"""How long the history pipeline may take to write what it holds when the service stops."""
COMMAND_REQUEST_TIMEOUT_S = 30.0
"""A command's requests (init, storage ...) may take longer than the API's: nobody waits on
them but the operator."""


@dataclass
class Parts:
    """What a running service (or command) is made of, each part set once it started."""

    config: Config
    request_timeout_s: float
    transport_class: type[AsyncTransport] = AsyncTransport
    drop_delay_s: float | None = None
    """How long a deleted storage's indices stay closed before the sweep removes them;
    ``None``: as long as a late write may come (``actors.expiry.drop_delay_s``). Tests
    shorten it rather than wait minutes."""
    names: IndexNames = field(init=False)
    scans: SharedPool = field(init=False)
    """The instance's open scans (scroll contexts), whichever actor opens them."""
    _client: AsyncElasticsearch | None = None
    _data: DataStore | None = None
    _registry: Registry | None = None
    _clock: ClusterClock | None = None
    _history: HistoryActor | None = None
    _cache: CacheActor | None = None
    _storage: StorageActor | None = None
    _history_query: HistoryQueryActor | None = None
    _lifecycle: LifecycleActor | None = None
    _key_listing: KeyListingActor | None = None
    _watch: WatchActor | None = None
    _expiry: ExpirySweep | None = None
    _registry_poll: RegistryPoll | None = None

    def __post_init__(self) -> None:
        settings = self.config.elasticsearch
        self.names = IndexNames(settings.index_prefix)
        self.scans = SharedPool(
            capacity=settings.scroll.max_open,
            share=settings.scroll.max_open_per_storage,
            names=SCANS,
        )

    @property
    def client(self) -> AsyncElasticsearch:
        return _started(self._client, "the Elasticsearch client")

    @property
    def data(self) -> DataStore:
        """The keys and values in Elasticsearch: one for the actors that read and scan them,
        so that scans at once share refreshes (``es.refreshes``)."""
        return _started(self._data, "the Elasticsearch client")

    @property
    def registry(self) -> Registry:
        return _started(self._registry, "the Elasticsearch client")

    @property
    def clock(self) -> ClusterClock:
        """Elasticsearch's time, which TEMP expirations are judged by."""
        return _started(self._clock, "the Elasticsearch client")

    @property
    def history(self) -> HistoryActor:
        return _started(self._history, "the history pipeline")

    @property
    def cache(self) -> CacheActor:
        return _started(self._cache, "the cache")

    @property
    def storage(self) -> StorageActor:
        return _started(self._storage, "the storage actor")

    @property
    def watch(self) -> WatchActor:
        return _started(self._watch, "the watch actor")

    @property
    def started_watch(self) -> WatchActor | None:
        """The watch actor if it was started (a shutdown may follow a failed start)."""
        return self._watch

    @property
    def key_listing(self) -> KeyListingActor:
        return _started(self._key_listing, "the key listing actor")

    @property
    def history_query(self) -> HistoryQueryActor:
        return _started(self._history_query, "the history query actor")

    @property
    def lifecycle(self) -> LifecycleActor:
        return _started(self._lifecycle, "the lifecycle actor")

    @property
    def expiry(self) -> ExpirySweep:
        return _started(self._expiry, "the expiry sweep")

    @property
    def registry_poll(self) -> RegistryPoll:
        return _started(self._registry_poll, "the registry poll")

    def batch_limits(self) -> BatchLimits:
        """The bounds of the batched requests (the storage actor's, the key listing's)."""
        return self.config.elasticsearch.batch


T = TypeVar("T")


def _started(part: T | None, name: str) -> T:
    if part is None:
        raise RuntimeError(f"{name} is not running: its part was not started")
    return part


Part = Callable[[Parts], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def elasticsearch(parts: Parts) -> AsyncIterator[None]:
    parts._client = create_client(
        parts.config.elasticsearch,
        request_timeout_s=parts.request_timeout_s,
        transport_class=parts.transport_class,
    )
    parts._clock = ClusterClock(parts._client)
    parts._data = DataStore(parts._client, parts.names, parts.config.elasticsearch.scroll)
    parts._registry = Registry(parts._client, parts.names)
    try:
        yield
    finally:
        await parts._client.close()


class _Runs(Protocol):
    """An actor or a periodic job: started once, stopped once."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


def _part(build: Callable[[Parts], Awaitable[_Runs]]) -> Part:
    """The part that runs what ``build`` makes (and puts in ``Parts``) from start to stop."""

    @asynccontextmanager
    async def run(parts: Parts) -> AsyncIterator[None]:
        started = await build(parts)
        started.start()
        try:
            yield
        finally:
            await started.stop()

    run.__name__ = build.__name__
    return run


@_part
async def history_pipeline(parts: Parts) -> _Runs:
    """It outlives the storage actors (started before, stopped after): it writes what they
    handed over."""
    parts._history = HistoryActor(
        writer=HistoryStore(parts.client, parts.names),
        config=parts.config.app.history,
        shutdown_timeout_s=HISTORY_SHUTDOWN_TIMEOUT_S,
    )
    return parts._history


@_part
async def cache(parts: Parts) -> _Runs:
    parts._cache = CacheActor(
        registry=parts.registry,
        config=parts.config.app.cache,
        now_ms=parts.clock.now_ms,
        listener=parts._watch,
    )
    return parts._cache


@_part
async def watch(parts: Parts) -> _Runs:
    settings = parts.config.app.watch
    parts._watch = WatchActor(
        versions=Versions(parts.client, parts.names),
        max_waiters=settings.max_waiters,
        max_waiters_per_storage=settings.max_waiters_per_storage,
        poll_interval_s=settings.poll_interval_s,
    )
    return parts._watch


@_part
async def storage(parts: Parts) -> _Runs:
    parts._storage = StorageActor(
        data=parts.data,
        history=parts.history,
        scans=parts.scans,
        batch_limits=parts.batch_limits(),
        changes=parts._watch,
    )
    return parts._storage


@_part
async def key_listing(parts: Parts) -> _Runs:
    parts._key_listing = KeyListingActor(
        keys=KeyIndex(parts.client, parts.names),
        data=parts.data,
        scans=parts.scans,
        recheck_s=parts.config.app.cache.update_time_s,
        batch_limits=parts.batch_limits(),
    )
    return parts._key_listing


@_part
async def history_query(parts: Parts) -> _Runs:
    parts._history_query = HistoryQueryActor(
        cache=parts.cache,
        store=HistoryStore(parts.client, parts.names),
        keys=SigningKeys(parts.client, parts.names),
    )
    return parts._history_query


@_part
async def lifecycle(parts: Parts) -> _Runs:
    """With the cache and the history pipeline when they run (the service), without them in a
    command (there is no cache to keep, nor buffered history to discard)."""
    parts._lifecycle = LifecycleActor(
        registry=parts.registry,
        indices=StorageIndices(parts.client, parts.names),
        cache=parts._cache,
        history_buffer=parts._history,
        retry_for_s=parts.config.app.request_timeout_s,
        now_ms=parts.clock.now_ms,
        layout=parts.config.elasticsearch.layout,
        copy=StorageCopy(parts.client, parts.names, page_size=_MOVE_PAGE_SIZE),
        revocation_s=revocation_s(parts.config.app),
    )
    if parts.clock.due:
        await parts.clock.sync()  # a command's TEMP expirations start from the cluster's time
    return parts._lifecycle


@_part
async def expiry(parts: Parts) -> _Runs:
    app = parts.config.app
    client, names = parts.client, parts.names
    parts._expiry = ExpirySweep(
        registry=parts.registry,
        changes=RegistryChanges(client, names),
        indices=StorageIndices(client, names),
        lifecycle=parts.lifecycle,
        lease=Lease(client, names, name="expiry", duration_s=3 * app.expiry_interval_s),
        progress=lambda shard: Mark(client, names, name=f"expiry-swept-seq-no-{shard}"),
        interval_s=app.expiry_interval_s,
        drop_delay_s=drop_delay_s(app) if parts.drop_delay_s is None else parts.drop_delay_s,
        now_ms=parts.clock.now_ms,
    )
    return parts._expiry


@_part
async def registry_poll(parts: Parts) -> _Runs:
    parts._registry_poll = RegistryPoll(
        changes=RegistryChanges(parts.client, parts.names),
        cache=parts.cache,
        update_time_s=parts.config.app.cache.update_time_s,
        clock=parts.clock,
    )
    await parts._registry_poll.begin()
    return parts._registry_poll


SERVICE: Sequence[Part] = (
    elasticsearch,
    history_pipeline,
    watch,
    cache,
    storage,
    key_listing,
    history_query,
    lifecycle,
    expiry,
    registry_poll,
)
"""The HTTP service's parts, callees before callers: stopped in the reverse order."""

COMMAND: Sequence[Part] = (elasticsearch, lifecycle)
"""A storage command's parts (``kv-storage storage ...``): no cache, no history, no jobs."""


@asynccontextmanager
async def running(parts: Parts, wanted: Sequence[Part]) -> AsyncIterator[Parts]:
    """Starts ``wanted`` in order; stops what started in reverse, whatever fails."""
    async with AsyncExitStack() as stack:
        for part in wanted:
            await stack.enter_async_context(part(parts))
        yield parts
