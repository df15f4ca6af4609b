"""The storage actor: carries out key/value operations and records their history.

Handlers send it typed commands about a storage whose holder the caller proved to be (the
handlers' access check, before any body is read). It does the Elasticsearch work through the
data access layer and hands every successful change to the history sink, without waiting
for history. It also bounds the scans (list, clear) in progress, and each storage's share of
them: each holds a scroll context in Elasticsearch, which allows only a few hundred per node.

Gets, sets and deletes, single and multi, of any storages, go in batches
(``kv_storage.actors.batching`` decides which go together and when): the batches in flight
and the operations waiting for one are this actor's state. Each operation is encoded by the
data access layer as it arrives, and gets exactly its own outcome back: a failure of one of
its items fails it alone, a failure of the whole request every operation in it. A write is
answered once Elasticsearch acknowledged the request that carried it.
"""

import asyncio
import functools
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from kv_storage.actors.batch_runner import BatchRunner
from kv_storage.actors.batching import Kind, keys_of
from kv_storage.actors.shares import SharedPool
from kv_storage.config import BatchLimits
from kv_storage.errors import (
    ConflictError,
    NotFoundError,
    PreconditionFailedError,
    ServiceUnavailableError,
)
from kv_storage.es.batches import Found, ReadOutcome, Reads, WriteOutcome, Writes
from kv_storage.es.data import ClosedStorageError, DataStore
from kv_storage.es.errors import ItemError
from kv_storage.logs import request_id
from kv_storage.model import Condition, Storage, Version
from pipeline.mailbox import Actor, Ask
from pipeline.records import HistoryRecord, Operation
from pipeline.sink import HistorySink


@dataclass(frozen=True, slots=True)
class _Command:
    storage: Storage


@dataclass(frozen=True, slots=True)
class GetValue(_Command, Ask[Found]):
    """Its value and version (its ETag)."""

    key: str


@dataclass(frozen=True, slots=True)
class GetValues(_Command, Ask[dict[str, str | None]]):
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetValue(_Command, Ask[Version | None]):
    """Answers the version written (``None`` if Elasticsearch did not say)."""

    key: str
    value: str
    received_ms: int
    condition: Condition | None = None


@dataclass(frozen=True, slots=True)
class SetValues(_Command, Ask[set[str]]):
    pairs: Mapping[str, str]
    """Only pairs that passed validation; the handler answers ``false`` for the others."""
    received_ms: int


@dataclass(frozen=True, slots=True)
class DeleteValue(_Command, Ask[None]):
    key: str
    received_ms: int
    condition: Condition | None = None


@dataclass(frozen=True, slots=True)
class DeleteValues(_Command, Ask[set[str]]):
    keys: tuple[str, ...]
    received_ms: int


@dataclass(frozen=True, slots=True)
class ListKeys(_Command, Ask["KeyScan"]):
    pass


@dataclass(frozen=True, slots=True)
class Clear(_Command, Ask[None]):
    received_ms: int


_WRITES = (SetValue, SetValues, DeleteValue, DeleteValues, Clear)
_MOVING_RETRY_AFTER_S = 2
"""A move's writes wait longer than ``errors.RETRY_SOON_S``: a move takes seconds, not a
request's time."""

StorageCommand = (
    GetValue | GetValues | SetValue | SetValues | DeleteValue | DeleteValues | ListKeys | Clear
)

AnswerT = TypeVar("AnswerT")


class ChangeListener(Protocol):
    """Who wants to know at once that keys changed through this instance (the watch actor:
    blocking reads)."""

    def changed(self, storage_id: str, keys: Sequence[str] | None) -> None:
        """``keys`` ``None``: any key of the storage may have changed (a clear). Must not
        block or raise."""


class _NobodyListens:
    def changed(self, storage_id: str, keys: Sequence[str] | None) -> None:
        return None


class StorageActor(Actor[StorageCommand]):
    def __init__(
        self,
        *,
        data: DataStore,
        history: HistorySink,
        scans: SharedPool,
        batch_limits: BatchLimits,
        changes: "ChangeListener | None" = None,
    ) -> None:
        """``scans``: the instance's pool of open scans (``shares.SCANS``), which the key
        listing's full scans draw from too."""
        super().__init__(name="storage")
        self._data = data
        self._history = history
        self._changes = changes or _NobodyListens()
        self.scans = scans
        self._batches = BatchRunner[Any, Any](
            batch_limits, {Kind.READ: data.read, Kind.WRITE: data.write}, name="storage"
        )

    async def handle(self, message: StorageCommand) -> Any:
        storage = message.storage
        if storage.moving and isinstance(message, _WRITES):
            raise ServiceUnavailableError(
                f"storage {storage.id} is being moved into the shared indices; it is read as "
                "usual, and written again once the move is done",
                retry_after_s=_MOVING_RETRY_AFTER_S,
            )
        match message:
            case GetValue(key=key):
                (found,) = await self._read(storage, (key,))
                if found is None or found.value is None:
                    raise NotFoundError(f"storage {storage.id} has no key {key!r}")
                return found
            case GetValues(keys=keys):
                part = self._data.reads(storage.location, keys)
                values = cast(list[str | None], await self._read_part(storage.id, part))
                return dict(zip(part.ids, values, strict=True))
            case SetValue(key=key, value=value, received_ms=received_ms, condition=condition):
                writes = (
                    self._data.sets(storage.location, {key: value}, versioned=True)
                    if condition is None
                    else self._data.conditional_set(storage.location, key, value, condition)
                )
                outcome = self._checked(storage, await self._write(storage.id, writes), key)
                self._changed(storage, [key])
                self._record(storage, [(key, value)], Operation.SET, received_ms)
                return outcome.versions.get(key)
            case SetValues(pairs=pairs, received_ms=received_ms):
                writes = self._data.sets(storage.location, pairs)
                failed = _open(storage, await self._write(storage.id, writes)).failed
                written = [k for k in pairs if k not in failed]
                self._changed(storage, written)
                self._record(storage, [(k, pairs[k]) for k in written], Operation.SET, received_ms)
                return set(written)
            case DeleteValue(key=key, received_ms=received_ms, condition=condition):
                writes = (
                    self._data.deletes(storage.location, (key,))
                    if condition is None
                    else self._data.conditional_delete(storage.location, key, condition)
                )
                self._checked(storage, await self._write(storage.id, writes), key)
                self._changed(storage, [key])
                self._record(storage, [(key, None)], Operation.DELETE, received_ms)
                return None
            case DeleteValues(keys=keys, received_ms=received_ms):
                deletes = self._data.deletes(storage.location, keys)
                failed = _open(storage, await self._write(storage.id, deletes)).failed
                deleted = [key for key in deletes.ids if key not in failed]
                self._changed(storage, deleted)
                self._record(storage, [(k, None) for k in deleted], Operation.DELETE, received_ms)
                return set(deleted)
            case ListKeys():
                return await self._list(storage)
            case Clear(received_ms=received_ms):
                self.scans.take(storage.id)
                try:
                    cleared = await self._data.clear(storage.location)
                except ClosedStorageError as closed:
                    raise StorageClosedError(storage.id, closed.cause) from None
                finally:
                    self.scans.give_back(storage.id)
                if cleared.conflicts:
                    raise ConflictError(
                        f"{cleared.conflicts} keys changed while storage {storage.id} was being "
                        f"cleared and were kept; {cleared.deleted} keys were deleted, so the "
                        "storage may have been cleared partially"
                    )
                self._changes.changed(storage.id, None)
                self._record(storage, [(None, None)], Operation.CLEAR, received_ms)
                return None

    def answer_at_once(self, message: Ask[AnswerT]) -> Awaitable[AnswerT] | None:
        """Every command runs in the caller's task, as a plain call: a get, set or delete only
        adds to the batches (the actor's state, changed without awaiting) and waits for its
        outcome; a list or a clear takes a slot of the scans (changed without awaiting too)
        and then waits for Elasticsearch, and gives it back when its list is closed (at
        once: a list closed and a list asked for next must find the slot free). Nothing of
        that needs the mailbox to serialise it, so the mailbox takes no messages: the actor's
        task only outlives the batches at a stop."""
        return cast(Awaitable[AnswerT], self.handle(cast(StorageCommand, message)))

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Operations handed over are answered first (within ``timeout_s``); batches still
        out then are cancelled, which fails their operations."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        await super().stop(timeout_s)
        await self._batches.drain(deadline)

    # Batches ----------------------------------------------------------------------------------

    async def _read(self, storage: Storage, keys: tuple[str, ...]) -> list[Found | None]:
        """Values with their versions (what a single get answers: the value and its ETag)."""
        part = self._data.reads(storage.location, keys, versioned=True)
        return cast(list[Found | None], await self._read_part(storage.id, part))

    async def _read_part(
        self, storage_id: str, part: Reads
    ) -> list[Found | None] | list[str | None]:
        """``Found`` for a ``versioned`` part, values alone for another."""
        if not part.ids:
            return []
        outcome: ReadOutcome = await self._submit(Kind.READ, storage_id, part)
        if isinstance(outcome, ItemError):
            raise outcome
        return outcome

    async def _write(self, storage_id: str, part: Writes) -> WriteOutcome:
        """What Elasticsearch did with ``part``: versions written, keys refused or failed."""
        if not part.ids:
            return WriteOutcome({}, {})
        outcome: WriteOutcome = await self._submit(Kind.WRITE, storage_id, part)
        return outcome

    @staticmethod
    def _checked(storage: Storage, outcome: WriteOutcome, key: str) -> WriteOutcome:
        """A single-key write: its condition did not hold (412), its storage was deleted
        meanwhile (404) or it failed (500)."""
        _open(storage, outcome)
        if key in outcome.refused:
            raise PreconditionFailedError(
                f"the precondition of {key!r} does not hold (If-Match: the key is at another "
                "version or gone; If-None-Match: * : it exists); nothing was changed"
            )
        if key in outcome.failed:
            raise ItemError(outcome.failed[key])
        return outcome

    def _changed(self, storage: Storage, keys: Sequence[str]) -> None:
        """Who waits for these keys learns at once (blocking reads through this instance)."""
        if keys:
            self._changes.changed(storage.id, keys)

    async def _submit(self, kind: Kind, storage_id: str, part: Reads | Writes) -> Any:
        keys = keys_of(storage_id, part.ids)
        return await self._batches.submit(kind, storage_id, keys, part, size=len(part.body))

    @property
    def refused_for_share(self) -> int:
        """Operations and scans refused because their storage held its share (429)."""
        return self._batches.refused + self.scans.refused_for_share

    async def _list(self, storage: Storage) -> "KeyScan":
        self.scans.take(storage.id)
        pages = self._data.key_pages(storage.location)
        try:
            # The first page now: a failure surfaces before the answer has begun.
            first = await anext(pages, None)
        except BaseException:
            self.scans.give_back(storage.id)
            await pages.aclose()
            raise
        return KeyScan(first, pages, on_close=functools.partial(self._scan_ended, storage.id))

    def _scan_ended(self, storage_id: str) -> None:
        self.scans.give_back(storage_id)

    def _record(
        self,
        storage: Storage,
        changes: list[tuple[str | None, str | None]],
        operation: Operation,
        received_ms: int,
    ) -> None:
        if storage.keeps_history and changes:
            self._history.record(
                [
                    HistoryRecord(
                        storage.id,
                        key,
                        value,
                        operation,
                        received_ms,
                        request_id.get(),
                        storage.layout.value,
                    )
                    for key, value in changes
                ]
            )


class StorageClosedError(Exception):
    """A write met the storage's index closed to writes: the storage was deleted, most
    likely through another instance whose deletion this one has not seen yet. Whoever
    authorised the request asks the registry again (``handlers.access``)."""

    def __init__(self, storage_id: str, cause: ItemError) -> None:
        super().__init__(str(cause))
        self.storage_id = storage_id
        self.cause = cause


def _open(storage: Storage, outcome: WriteOutcome) -> WriteOutcome:
    """``outcome``, unless its storage's indices were closed to writes."""
    if outcome.closed:
        failed = next(iter(outcome.failed.values()))
        raise StorageClosedError(storage.id, ItemError(failed))
    return outcome


class KeyScan:
    """The pages of a ``list`` in progress: its scroll in Elasticsearch and its slot among the
    open scans are held until ``close``, which the handler calls whatever happens. Should the
    handler never get it (the request ran out of time meanwhile), dropping it frees the slot,
    and asyncio closes the scan, which releases the scroll."""

    def __init__(
        self,
        first: list[str] | None,
        pages: AsyncGenerator[list[str], None],
        *,
        on_close: Callable[[], None],
    ) -> None:
        self._first = first
        self._pages = pages
        self._release = weakref.finalize(self, on_close)

    async def __aiter__(self) -> AsyncIterator[list[str]]:
        if self._first is None:
            return
        yield self._first
        async for page in self._pages:
            yield page

    async def close(self) -> None:
        try:
            await self._pages.aclose()
        finally:
            self._release()
