"""The watch actor: blocking reads that wait for a key to change.

A client that sends ``GET /get/<id>/<key>?wait=<duration>`` with ``If-None-Match: <etag>``
waits until the key's version is no longer that one, or the wait ends. The actor owns every
waiter: the handler gets a ``Waiter`` at once, awaits its ``woken`` future, and says
``Unwatch`` when it stops waiting for any reason (answered, timed out, its client gone), so
nothing is left behind.

A change made through this instance wakes the key's waiters at once (the storage actor calls
``changed``). Registering a waiter and hearing of a change run in the caller's task
(``answer_at_once``, and ``changed`` as the storage actor's listener): neither awaits, and a
write, which happens thousands of times a second with nobody waiting, then costs one lookup
instead of a message through the mailbox.

A change made anywhere else (another instance, another writer) is seen at the next poll:
every ``poll-interval``, while anyone waits, one request asks Elasticsearch for the versions
of every watched key together (``VersionReader``), however many waiters there are. At most
``max-waiters`` wait at once (more are refused: 503), of them at most
``max-waiters-per-storage`` for one storage (more of that storage: 429). When the service
stops, every waiter is answered (``WakeAll``) before it goes.
"""

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, cast

from kv_storage.actors.shares import PoolNames, SharedPool
from kv_storage.model import DocumentKey, Version
from pipeline.mailbox import Actor, ActorStoppedError, Ask

logger = logging.getLogger(__name__)

_WAITERS = PoolNames(
    held="requests waiting for changes",
    capacity_property="app.watch.max-waiters",
    share_property="app.watch.max-waiters-per-storage",
)


class VersionReader(Protocol):
    async def versions(self, keys: Sequence[DocumentKey]) -> dict[DocumentKey, Version | None]:
        """The current version of each key (``None``: no such key), in one request."""


SHUTDOWN = "shutdown"
REGISTRY = "registry"
"""The cause of a wake-up by a change of the storage in the registry."""
"""What wakes every waiter when the service stops: answer now, as unchanged."""


@dataclass(eq=False)
class Waiter:
    where: DocumentKey
    version: Version | None
    """The version the client has; ``None``: it saw no such key."""
    woken: "asyncio.Future[str]" = field(repr=False)
    """Set to what woke it: ``write`` (through this instance), ``poll`` (seen changed
    elsewhere) or ``SHUTDOWN``; then read the key again and answer."""


@dataclass(frozen=True, slots=True)
class Watch(Ask[Waiter]):
    where: DocumentKey
    version: Version | None


@dataclass(frozen=True, slots=True)
class Unwatch:
    """The handler stops waiting (sent, not asked: also from a request being cancelled)."""

    waiter: Waiter


@dataclass(frozen=True, slots=True)
class WakeAll(Ask[None]):
    """The service stops: answer every waiter now."""


@dataclass(frozen=True, slots=True)
class WatchStats:
    waiters: int
    wakeups: dict[str, int]
    """By cause: ``write`` (through this instance), ``poll`` (seen changed elsewhere),
    ``registry`` (the storage changed), ``shutdown``."""
    refused_for_share: int = 0
    """Waits refused because their storage had its share of the waiters (429)."""


@dataclass(frozen=True, slots=True)
class GetWatchStats(Ask[WatchStats]):
    pass


@dataclass(frozen=True, slots=True)
class _Rearm:
    """Someone waits now where nobody did: the loop times its next poll."""


@dataclass(frozen=True, slots=True)
class _Polled:
    """The versions a poll found, for the keys watched when it began."""

    current: dict[DocumentKey, Version | None]


WatchMessage = Watch | Unwatch | WakeAll | GetWatchStats | _Rearm | _Polled

AnswerT = TypeVar("AnswerT")


class WatchActor(Actor[WatchMessage]):
    def __init__(
        self,
        *,
        versions: VersionReader,
        max_waiters: int,
        poll_interval_s: float,
        max_waiters_per_storage: int | None = None,
    ) -> None:
        """``max_waiters_per_storage``: a storage's share of the waiters (``None``: all)."""
        super().__init__(name="watch")
        self._versions = versions
        self._waiters = SharedPool(
            capacity=max_waiters, share=max_waiters_per_storage or max_waiters, names=_WAITERS
        )
        self._poll_interval_s = poll_interval_s
        self._waiting: dict[DocumentKey, list[Waiter]] = {}
        self._watched_storages: Counter[str] = Counter()
        """Keys watched per storage: a change of a storage nobody watches costs a lookup, not
        one per key it changed (a multi-set of 1,000 keys, with nobody waiting)."""
        self._wakeups: Counter[str] = Counter()
        self._next_poll: float | None = None
        self._polling: asyncio.Task[None] | None = None

    async def handle(self, message: WatchMessage) -> Waiter | WatchStats | None:
        match message:
            case Watch(where, version):
                return self._watch(where, version)
            case Unwatch(waiter):
                self._unwatch(waiter)
            case _Rearm():
                pass  # handled: the loop asks next_deadline again
            case _Polled(current):
                self._polling = None
                for where, version in current.items():
                    for waiter in self._waiting.get(where, []):
                        if waiter.version != version:
                            self._settle(waiter, "poll")
            case WakeAll():
                for waiters in self._waiting.values():
                    for waiter in waiters:
                        self._settle(waiter, SHUTDOWN)
            case GetWatchStats():
                return WatchStats(
                    self._waiters.held, dict(self._wakeups), self._waiters.refused_for_share
                )
        return None

    def answer_at_once(self, message: Ask[AnswerT]) -> Awaitable[AnswerT] | None:
        """A waiter is registered in the caller's task: it is watching as soon as the ask
        returns, before any write that follows could happen."""
        if isinstance(message, Watch):
            return cast(Awaitable[AnswerT], self._watch_now(message))
        return None

    async def _watch_now(self, message: Watch) -> Waiter:
        was_idle = not self._waiting
        waiter = self._watch(message.where, message.version)
        if was_idle:
            with contextlib.suppress(ActorStoppedError):
                self.send(_Rearm())
        return waiter

    def next_deadline(self) -> float | None:
        """The next poll, while anyone waits and no poll is under way."""
        if not self._waiting or self._polling is not None:
            return None
        if self._next_poll is None:
            self._next_poll = asyncio.get_running_loop().time() + self._poll_interval_s
        return self._next_poll

    async def on_deadline(self) -> None:
        self._next_poll = None
        watched = list(self._waiting)
        self._polling = asyncio.create_task(self._poll(watched), name="watch-poll")

    async def _poll(self, watched: list[DocumentKey]) -> None:
        """In a task of its own: the actor goes on with its messages meanwhile. Whatever it
        finds (nothing, when Elasticsearch failed) comes back as a message, which also says
        the poll is over, so that the next one is timed."""
        current: dict[DocumentKey, Version | None] = {}
        try:
            current = await self._versions.versions(watched)
        except Exception as error:
            logger.warning("watch: checking %d keys for changes failed: %r", len(watched), error)
        with contextlib.suppress(ActorStoppedError):
            self.send(_Polled(current))

    def _watch(self, where: DocumentKey, version: Version | None) -> Waiter:
        self._waiters.take(where.storage_id)
        waiter = Waiter(where, version, asyncio.get_running_loop().create_future())
        waiters = self._waiting.setdefault(where, [])
        if not waiters:
            self._watched_storages[where.storage_id] += 1
        waiters.append(waiter)
        return waiter

    def _unwatch(self, waiter: Waiter) -> None:
        waiters = self._waiting.get(waiter.where)
        if waiters is None or waiter not in waiters:
            return
        waiters.remove(waiter)
        self._waiters.give_back(waiter.where.storage_id)
        if not waiters:
            del self._waiting[waiter.where]
            self._watched_storages[waiter.where.storage_id] -= 1
            if not self._watched_storages[waiter.where.storage_id]:
                del self._watched_storages[waiter.where.storage_id]
        if not waiter.woken.done():
            waiter.woken.cancel()

    def _settle(self, waiter: Waiter, cause: str) -> None:
        if not waiter.woken.done():
            waiter.woken.set_result(cause)
            self._wakeups[cause] += 1

    # As the storage actor's ChangeListener ----------------------------------------------------

    def changed(self, storage_id: str, keys: Sequence[str] | None) -> None:
        """Wakes the waiters of ``keys`` (``None``: of every key of the storage, a clear), in
        the writer's task: no await, so never a reply to wait for; never raises into the
        write that caused it."""
        if storage_id not in self._watched_storages:
            return
        if keys is None:  # a clear: rare, so a pass over every waiter
            self._wake_storage(storage_id, "write")
            return
        for key in keys:
            for waiter in self._waiting.get(DocumentKey(storage_id, key), ()):
                self._settle(waiter, "write")

    # As the cache's RegistryListener ----------------------------------------------------------

    def registry_changed(self, storage_ids: Sequence[str]) -> None:
        """Storages changed in the registry (rotated, deleted, expired, re-configured): their
        waiters wake, and each handler checks its storage and secret again before it waits
        on, so a revoked secret ends its blocking reads within the revocation bound too."""
        for storage_id in storage_ids:
            if storage_id in self._watched_storages:
                self._wake_storage(storage_id, REGISTRY)

    def _wake_storage(self, storage_id: str, cause: str) -> None:
        """Rare (a clear, a registry change): a pass over every waiter."""
        for where, waiters in self._waiting.items():
            if where.storage_id == storage_id:
                for waiter in waiters:
                    self._settle(waiter, cause)
