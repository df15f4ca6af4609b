"""The cache actor: owns the storage lookups (existence, type, history flag, secret).

Lookups are kept in an aiocache memory cache for ``app.cache.expiration-time``, at most
``app.cache.max-size`` of them: the least recently used is dropped first (the memory cache
has no bound of its own). Misses (ids of no live storage) are kept too, in a small cache of
their own. Concurrent lookups of one uncached storage share a single registry read, and
concurrent lookups of different ones go to the registry together, as one ``_mget`` (the
group commit of the key/value operations: ``actors.batch_runner``), so that many active
storages missing the cache at once cost a few requests, not one each.

A TEMP storage whose expiration has passed is no live storage: its lookup answers ``None``
from that moment, judged by Elasticsearch's clock (``kv_storage.es.cluster_clock``), so that
every instance sees it expire at once whatever its own clock says.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, TypeVar, cast

from aiocache import SimpleMemoryCache

from kv_storage.actors.batch_runner import BatchRunner
from kv_storage.actors.batching import Kind
from kv_storage.config import BatchLimits, CacheConfig
from kv_storage.es.registry import Registry
from kv_storage.es.waits import waiting
from kv_storage.model import Storage
from pipeline.mailbox import Actor, ActorStoppedError, Ask


@dataclass(frozen=True, slots=True)
class LookUp(Ask[Storage | None]):
    storage_id: str


@dataclass(frozen=True, slots=True)
class Forget(Ask[None]):
    storage_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ForgetAll(Ask[None]):
    pass


@dataclass(frozen=True, slots=True)
class GetCacheStats(Ask["CacheStats"]):
    pass


@dataclass(frozen=True, slots=True)
class _Load(Ask["asyncio.Future[Storage | None]"]):
    """A lookup that missed: the future its answer comes in (a registry read, shared by every
    lookup of that storage until it is back)."""

    storage_id: str


@dataclass(frozen=True, slots=True)
class _Loaded:
    """A registry read is back: ``storage``, or the ``error`` it failed with."""

    storage_id: str
    loading: "asyncio.Future[Storage | None]"
    storage: Storage | None = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    entries: int


CacheMessage = LookUp | Forget | ForgetAll | GetCacheStats | _Load | _Loaded
CacheAnswer: TypeAlias = "Storage | CacheStats | asyncio.Future[Storage | None] | None"


@dataclass(frozen=True, slots=True)
class _Entry:
    storage: Storage | None
    """``None``: the registry has no live storage of that id (a cached miss)."""


class _BoundedCache:
    """An aiocache memory cache of at most ``max_size`` entries, least recently used out
    first (the memory cache has no bound of its own)."""

    def __init__(self, *, max_size: int, ttl_s: float) -> None:
        # In memory nothing blocks: no per-call timeout (aiocache would wrap each call in a task).
        self._cache = SimpleMemoryCache(timeout=None)
        self._recency: OrderedDict[str, None] = OrderedDict()
        self._max_size = max_size
        self._ttl_s = ttl_s

    async def live_entries(self) -> int:
        """Entries not expired yet. The memory cache removes an entry when its TTL passes;
        the recency list learns of that only here (or at the next ``get``)."""
        for storage_id in list(self._recency):
            if not await self._cache.exists(storage_id):
                del self._recency[storage_id]
        return len(self._recency)

    async def get(self, storage_id: str) -> _Entry | None:
        entry = await self._cache.get(storage_id)
        if not isinstance(entry, _Entry):
            self._recency.pop(storage_id, None)  # expired, if it was ever here
            return None
        self._recency.move_to_end(storage_id)
        return entry

    async def put(self, storage_id: str, entry: _Entry) -> None:
        await self._cache.set(storage_id, entry, ttl=self._ttl_s)
        self._recency[storage_id] = None
        self._recency.move_to_end(storage_id)
        while len(self._recency) > self._max_size:
            oldest, _ = self._recency.popitem(last=False)
            await self._cache.delete(oldest)

    async def delete(self, storage_id: str) -> None:
        self._recency.pop(storage_id, None)
        await self._cache.delete(storage_id)

    async def clear(self) -> None:
        self._recency.clear()
        await self._cache.clear()


AnswerT = TypeVar("AnswerT")

_REGISTRY_READS = BatchLimits(
    max_operations=1000, max_bytes=1 << 20, max_in_flight=1, max_keys_per_storage=1 << 30
)
"""One ``_mget`` of the registry at a time, of up to 1,000 storages: those that missed the
cache meanwhile go in the next one."""
MAX_CACHED_MISSES = 256
"""Unknown storage ids remembered at once: enough to spare the registry a client that
retries, too few to matter, and apart from the storages that exist, so that requests for
random ids cannot push real storages out of the cache."""


def _local_now_ms() -> int:
    return time.time_ns() // 1_000_000


class RegistryListener(Protocol):
    """Who wants to know that storages changed in the registry (the watch actor: blocking
    reads check their storage again)."""

    def registry_changed(self, storage_ids: Sequence[str]) -> None:
        """Must not block or raise."""


class _NobodyListens:
    def registry_changed(self, storage_ids: Sequence[str]) -> None:
        return None


class CacheActor(Actor[CacheMessage]):
    def __init__(
        self,
        *,
        registry: Registry,
        config: CacheConfig,
        now_ms: Callable[[], int] = _local_now_ms,
        listener: RegistryListener | None = None,
    ) -> None:
        """``now_ms``: the time expirations are judged by (the service passes the cluster's
        clock). ``listener`` hears of every storage the cache is told to forget."""
        super().__init__(name="storage-cache")
        self._registry = registry
        self._now_ms = now_ms
        self._listener = listener or _NobodyListens()
        ttl_s = config.expiration_time_s
        self._found = _BoundedCache(max_size=config.max_size, ttl_s=ttl_s)
        self._missing = _BoundedCache(max_size=min(MAX_CACHED_MISSES, config.max_size), ttl_s=ttl_s)
        self._loading: dict[str, asyncio.Future[Storage | None]] = {}
        self._reading: set[asyncio.Task[None]] = set()
        self._reads = BatchRunner[str, Storage | None](
            _REGISTRY_READS, {Kind.READ: registry.find_many}, name="storage-cache"
        )
        self._hits = self._misses = 0

    async def look_up(self, storage_id: str) -> Storage | None:
        """The live storage of that id: ``None`` when there is none, it was deleted, or it
        is a TEMP storage past its expiration."""
        storage = await self.ask(LookUp(storage_id))
        return None if storage is None or storage.expired(self._now_ms()) else storage

    def answer_at_once(self, message: Ask[AnswerT]) -> Awaitable[AnswerT] | None:
        """A lookup is a plain call in the caller's task: a hit is answered from the cache
        (aiocache's memory cache and the recency order, touched without awaiting anything but
        the memory cache); a miss asks the mailbox for the read's future and waits for it
        there. The mailbox serialises what changes the entries: loads begun and ended,
        forgetting, statistics, one message at a time."""
        if isinstance(message, LookUp):
            return cast(Awaitable[AnswerT], self._cached_or_loaded(message.storage_id))
        return None

    async def _cached_or_loaded(self, storage_id: str) -> Storage | None:
        entry = await self._found.get(storage_id) or await self._missing.get(storage_id)
        if entry is not None:
            self._hits += 1
            return entry.storage
        # A registry read (this request's, or another's it shares): waiting for
        # Elasticsearch, in the caller's task, until the answer is back (what a request that
        # runs out of time meanwhile names as the cause).
        with waiting():
            loading = await self.ask_in_turn(_Load(storage_id))
            return await asyncio.shield(loading)

    async def handle(self, message: CacheMessage) -> CacheAnswer:
        match message:
            case LookUp():
                # In the mailbox it would wait for its own _Loaded, which comes in turn.
                raise RuntimeError("a lookup is answered in its caller's task, not in turn")
            case _Load(storage_id):
                return await self._load(storage_id)
            case _Loaded():
                await self._loaded(message)
            case Forget(storage_ids):
                for storage_id in storage_ids:
                    await self._forget(storage_id)
                self._listener.registry_changed(storage_ids)
            case ForgetAll():
                self._loading.clear()
                await self._found.clear()
                await self._missing.clear()
            case GetCacheStats():
                entries = await self._found.live_entries() + await self._missing.live_entries()
                return CacheStats(self._hits, self._misses, entries)
        return None

    async def _load(self, storage_id: str) -> "asyncio.Future[Storage | None]":
        """The future of a read of ``storage_id``: one under way, or one begun now."""
        loop = asyncio.get_running_loop()
        entry = await self._found.get(storage_id) or await self._missing.get(storage_id)
        if entry is not None:  # loaded while this message waited
            self._hits += 1
            done: asyncio.Future[Storage | None] = loop.create_future()
            done.set_result(entry.storage)
            return done
        self._misses += 1
        loading = self._loading.get(storage_id)
        if loading is None:
            loading = self._loading[storage_id] = loop.create_future()
            read = asyncio.create_task(self._read(storage_id, loading), name="registry-read")
            self._reading.add(read)
            read.add_done_callback(self._reading.discard)
        return loading

    async def _read(self, storage_id: str, loading: "asyncio.Future[Storage | None]") -> None:
        """Reads the registry (in a batch with the other misses) and hands the outcome to the
        mailbox, which keeps it; if the actor stopped meanwhile, to the waiting lookups."""
        try:
            storage = await self._reads.submit(
                Kind.READ, storage_id, frozenset(), storage_id, size=len(storage_id)
            )
            loaded = _Loaded(storage_id, loading, storage=storage)
        except Exception as error:
            loaded = _Loaded(storage_id, loading, error=error)
        except BaseException as error:  # cancelled: the lookups waiting must not hang
            _settle(_Loaded(storage_id, loading, error=ActorStoppedError(repr(error))))
            raise
        if self.accepting:
            self.send(loaded)
        else:
            _settle(loaded)

    async def _loaded(self, loaded: _Loaded) -> None:
        # A Forget during the read means the answer may be stale: hand it out, keep it not.
        storage_id = loaded.storage_id
        if self._loading.get(storage_id) is loaded.loading:
            del self._loading[storage_id]
            if loaded.error is None:
                kept_in = self._found if loaded.storage is not None else self._missing
                await kept_in.put(storage_id, _Entry(loaded.storage))
        _settle(loaded)

    async def stop(self, timeout_s: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        await super().stop(timeout_s)
        await self._reads.drain(deadline)

    async def _forget(self, storage_id: str) -> None:
        self._loading.pop(storage_id, None)
        await self._found.delete(storage_id)
        await self._missing.delete(storage_id)


def _settle(loaded: _Loaded) -> None:
    """Hands the outcome of a registry read to the lookups waiting for it."""
    if loaded.loading.done():
        return
    if loaded.error is not None:
        loaded.loading.set_exception(loaded.error)
        loaded.loading.exception()  # retrieved: waiters get it; nobody waiting is fine too
    else:
        loaded.loading.set_result(loaded.storage)
