"""The one place that builds the service from its configuration and tears it down.

``Service`` is the one object of what a running process is made of: the Elasticsearch access
layer (built once, each piece shared by whoever needs it), the history pipeline, each actor,
each periodic job. Each part is an async context manager that starts one resource, puts it in
the ``Service`` and stops it when it ends; ``running`` enters the parts a process needs in one
``AsyncExitStack`` (callees before callers) and leaves them in reverse, going on with the others
when one fails to stop. The HTTP service (``HTTP_SERVICE``, run by one ``cleanup_ctx`` of the app),
``kv-storage serve`` (``SERVE``, the same with a start-up probe) and each command of the
command line (``COMMAND``, ``INIT``) use the same object the same way; tests
too. So the client is made here and nowhere else.
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
from kv_storage.config import Config, revocation_s
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
from kv_storage.startup import check_elasticsearch
from pipeline.actor import HistoryActor

_MOVE_PAGE_SIZE = 1000
HISTORY_SHUTDOWN_TIMEOUT_S = 10.0
"""How long the history pipeline may take to write what it holds when the service stops."""
COMMAND_REQUEST_TIMEOUT_S = 30.0
"""A command's requests (init, storage ...) may take longer than the API's: nobody waits on
them but the operator."""


@dataclass
class Service:
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
    _elasticsearch: "ElasticsearchAccess | None" = None
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
    def elasticsearch(self) -> "ElasticsearchAccess":
        """The Elasticsearch access layer: each piece made once, for every part that uses it."""
        return _started(self._elasticsearch, "the Elasticsearch client")

    @property
    def client(self) -> AsyncElasticsearch:
        return self.elasticsearch.client

    @property
    def data(self) -> DataStore:
        return self.elasticsearch.data

    @property
    def registry(self) -> Registry:
        return self.elasticsearch.registry

    @property
    def clock(self) -> ClusterClock:
        return self.elasticsearch.clock

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


@dataclass(frozen=True, slots=True)
class ElasticsearchAccess:
    """The Elasticsearch access layer of one process: one client, and each store over it made
    once (they hold no state of their own but ``data``'s refresh coalescing, which must be
    shared: scans at once share refreshes, ``es.refreshes``)."""

    client: AsyncElasticsearch
    clock: ClusterClock
    """Elasticsearch's time, which TEMP expirations are judged by."""
    data: DataStore
    registry: Registry
    registry_changes: RegistryChanges
    history: HistoryStore
    indices: StorageIndices
    keys: KeyIndex
    versions: Versions
    signing_keys: SigningKeys
    copy: StorageCopy


T = TypeVar("T")


def _started(part: T | None, name: str) -> T:
    if part is None:
        raise RuntimeError(f"{name} is not running: its part was not started")
    return part


Part = Callable[[Service], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def elasticsearch(service: Service) -> AsyncIterator[None]:
    client = create_client(
        service.config.elasticsearch,
        request_timeout_s=service.request_timeout_s,
        transport_class=service.transport_class,
    )
    names = service.names
    service._elasticsearch = ElasticsearchAccess(
        client=client,
        clock=ClusterClock(client),
        data=DataStore(client, names, service.config.elasticsearch.scroll),
        registry=Registry(client, names),
        registry_changes=RegistryChanges(client, names),
        history=HistoryStore(client, names),
        indices=StorageIndices(client, names),
        keys=KeyIndex(client, names),
        versions=Versions(client, names),
        signing_keys=SigningKeys(client, names),
        copy=StorageCopy(client, names, page_size=_MOVE_PAGE_SIZE),
    )
    try:
        yield
    finally:
        await client.close()


class _Runs(Protocol):
    """An actor or a periodic job: started once, stopped once."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


def _part(build: Callable[[Service], Awaitable[_Runs]]) -> Part:
    """The part that runs what ``build`` makes (and puts in the ``Service``) from start to
    stop."""

    @asynccontextmanager
    async def run(service: Service) -> AsyncIterator[None]:
        started = await build(service)
        started.start()
        try:
            yield
        finally:
            await started.stop()

    run.__name__ = build.__name__
    return run


@_part
async def history_pipeline(service: Service) -> _Runs:
    """It outlives the storage actors (started before, stopped after): it writes what they
    handed over."""
    service._history = HistoryActor(
        writer=service.elasticsearch.history,
        config=service.config.app.history,
        shutdown_timeout_s=HISTORY_SHUTDOWN_TIMEOUT_S,
    )
    return service._history


@_part
async def cache(service: Service) -> _Runs:
    service._cache = CacheActor(
        registry=service.registry,
        config=service.config.app.cache,
        now_ms=service.clock.now_ms,
        listener=service._watch,
    )
    return service._cache


@_part
async def watch(service: Service) -> _Runs:
    settings = service.config.app.watch
    service._watch = WatchActor(
        versions=service.elasticsearch.versions,
        max_waiters=settings.max_waiters,
        max_waiters_per_storage=settings.max_waiters_per_storage,
        poll_interval_s=settings.poll_interval_s,
    )
    return service._watch


@_part
async def storage(service: Service) -> _Runs:
    service._storage = StorageActor(
        data=service.data,
        history=service.history,
        scans=service.scans,
        batch_limits=service.config.elasticsearch.batch,
        changes=service._watch,
    )
    return service._storage


@_part
async def key_listing(service: Service) -> _Runs:
    service._key_listing = KeyListingActor(
        keys=service.elasticsearch.keys,
        data=service.data,
        scans=service.scans,
        recheck_s=service.config.app.cache.update_time_s,
        batch_limits=service.config.elasticsearch.batch,
    )
    return service._key_listing


@_part
async def history_query(service: Service) -> _Runs:
    service._history_query = HistoryQueryActor(
        cache=service.cache,
        store=service.elasticsearch.history,
        keys=service.elasticsearch.signing_keys,
    )
    return service._history_query


@_part
async def lifecycle(service: Service) -> _Runs:
    """With the cache and the history pipeline when they run (the service), without them in a
    command (there is no cache to keep, nor buffered history to discard)."""
    access = service.elasticsearch
    service._lifecycle = LifecycleActor(
        registry=access.registry,
        indices=access.indices,
        cache=service._cache,
        history_buffer=service._history,
        retry_for_s=service.config.app.request_timeout_s,
        now_ms=access.clock.now_ms,
        layout=service.config.elasticsearch.layout,
        copy=access.copy,
        revocation_s=revocation_s(service.config.app),
    )
    if access.clock.due:
        await access.clock.sync()  # a command's TEMP expirations start from the cluster's time
    return service._lifecycle


@_part
async def expiry(service: Service) -> _Runs:
    app = service.config.app
    access, names = service.elasticsearch, service.names
    client = access.client
    service._expiry = ExpirySweep(
        registry=access.registry,
        changes=access.registry_changes,
        indices=access.indices,
        lifecycle=service.lifecycle,
        lease=Lease(client, names, name="expiry", duration_s=3 * app.expiry_interval_s),
        progress=lambda shard: Mark(client, names, name=f"expiry-swept-seq-no-{shard}"),
        interval_s=app.expiry_interval_s,
        drop_delay_s=drop_delay_s(app) if service.drop_delay_s is None else service.drop_delay_s,
        now_ms=access.clock.now_ms,
    )
    return service._expiry


@_part
async def registry_poll(service: Service) -> _Runs:
    service._registry_poll = RegistryPoll(
        changes=service.elasticsearch.registry_changes,
        cache=service.cache,
        update_time_s=service.config.app.cache.update_time_s,
        clock=service.clock,
    )
    await service._registry_poll.begin()
    return service._registry_poll


@asynccontextmanager
async def start_up_check(service: Service) -> AsyncIterator[None]:
    """``kv-storage serve``'s one probe of Elasticsearch, logged (``kv_storage.startup``)."""
    await check_elasticsearch(service.config, service.client, service.names)
    yield


HTTP_SERVICE: Sequence[Part] = (
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

SERVE: Sequence[Part] = (elasticsearch, start_up_check, *HTTP_SERVICE[1:])
"""``kv-storage serve``'s: the service's, with the start-up probe of Elasticsearch."""

COMMAND: Sequence[Part] = (elasticsearch, lifecycle)
"""A storage command's parts (``kv-storage storage ...``): no cache, no history, no jobs."""

INIT: Sequence[Part] = (elasticsearch,)
"""``kv-storage init``'s: the client only."""


@asynccontextmanager
async def running(service: Service, wanted: Sequence[Part]) -> AsyncIterator[Service]:
    """Starts ``wanted`` in order in one ``AsyncExitStack``; stops what started in reverse,
    whatever fails."""
    async with AsyncExitStack() as stack:
        for part in wanted:
            await stack.enter_async_context(part(service))
        yield service
