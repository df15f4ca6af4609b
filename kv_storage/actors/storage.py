"""The storage actor: carries out key/value operations and records their history.

Handlers send it typed commands about a storage whose holder the caller proved to be (the
handlers' access check, before any body is read). It does the Elasticsearch work through the
data access layer and hands every successful change to the history sink, without waiting
for history. It also bounds the scans (list, clear) in progress: each holds a scroll context
in Elasticsearch, which allows only a few hundred per node.
"""

import contextlib
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kv_storage.actors.base import Actor, ActorStoppedError, Ask
from kv_storage.errors import ConflictError, NotFoundError, ServiceUnavailableError
from kv_storage.es.data import DataStore
from kv_storage.logs import request_id
from kv_storage.model import Storage
from pipeline.records import HistoryRecord, Operation
from pipeline.sink import HistorySink


@dataclass(frozen=True, slots=True)
class _Command:
    storage: Storage


@dataclass(frozen=True, slots=True)
class GetValue(_Command, Ask[str]):
    key: str


@dataclass(frozen=True, slots=True)
class GetValues(_Command, Ask[dict[str, str | None]]):
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetValue(_Command, Ask[None]):
    key: str
    value: str
    received_ms: int


@dataclass(frozen=True, slots=True)
class SetValues(_Command, Ask[set[str]]):
    pairs: Mapping[str, str]
    """Only pairs that passed validation; the handler answers ``false`` for the others."""
    received_ms: int


@dataclass(frozen=True, slots=True)
class DeleteValue(_Command, Ask[None]):
    key: str
    received_ms: int


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


@dataclass(frozen=True, slots=True)
class _ScanEnded:
    """A list's pages were closed: its slot among the open scans is free again."""


StorageCommand = (
    GetValue
    | GetValues
    | SetValue
    | SetValues
    | DeleteValue
    | DeleteValues
    | ListKeys
    | Clear
    | _ScanEnded
)

_OPERATION_CONCURRENCY = 4096
"""Commands in progress at once; the Elasticsearch client's connection pool is the real limit."""

_SCAN_RETRY_AFTER_S = 1
"""What a list or clear refused for want of a free scan slot is told to wait, in seconds."""


class StorageActor(Actor[StorageCommand]):
    def __init__(self, *, data: DataStore, history: HistorySink, max_open_scans: int) -> None:
        super().__init__(name="storage", max_concurrency=_OPERATION_CONCURRENCY)
        self._data = data
        self._history = history
        self._max_open_scans = max_open_scans
        self._open_scans = 0

    async def handle(self, message: StorageCommand) -> Any:
        if isinstance(message, _ScanEnded):
            self._open_scans -= 1
            return None
        storage = message.storage
        match message:
            case GetValue(key=key):
                value = await self._data.get(storage.id, key)
                if value is None:
                    raise NotFoundError(f"storage {storage.id} has no key {key!r}")
                return value
            case GetValues(keys=keys):
                return await self._data.get_many(storage.id, keys)
            case SetValue(key=key, value=value, received_ms=received_ms):
                await self._data.put(storage.id, key, value)
                self._record(storage, [(key, value)], Operation.SET, received_ms)
                return None
            case SetValues(pairs=pairs, received_ms=received_ms):
                written = await self._data.put_many(storage.id, pairs)
                self._record(
                    storage,
                    [(k, v) for k, v in pairs.items() if k in written],
                    Operation.SET,
                    received_ms,
                )
                return written
            case DeleteValue(key=key, received_ms=received_ms):
                await self._data.delete(storage.id, key)
                self._record(storage, [(key, None)], Operation.DELETE, received_ms)
                return None
            case DeleteValues(keys=keys, received_ms=received_ms):
                deleted = await self._data.delete_many(storage.id, keys)
                self._record(
                    storage,
                    [(k, None) for k in dict.fromkeys(keys) if k in deleted],
                    Operation.DELETE,
                    received_ms,
                )
                return deleted
            case ListKeys():
                return await self._list(storage)
            case Clear(received_ms=received_ms):
                self._open_scan()
                try:
                    outcome = await self._data.clear(storage.id)
                finally:
                    self._open_scans -= 1
                if outcome.conflicts:
                    raise ConflictError(
                        f"{outcome.conflicts} keys changed while storage {storage.id} was being "
                        f"cleared and were kept; {outcome.deleted} keys were deleted, so the "
                        "storage may have been cleared partially"
                    )
                self._record(storage, [(None, None)], Operation.CLEAR, received_ms)
                return None

    def _open_scan(self) -> None:
        """Takes one of the ``max_open_scans`` slots, or answers 503 when none is free."""
        if self._open_scans >= self._max_open_scans:
            raise ServiceUnavailableError(
                f"{self._open_scans} lists and clears are in progress on this instance, the "
                "most it runs at once (elasticsearch.scroll.max-open); try again shortly",
                headers={"Retry-After": str(_SCAN_RETRY_AFTER_S)},
            )
        self._open_scans += 1

    async def _list(self, storage: Storage) -> "KeyScan":
        self._open_scan()
        pages = self._data.key_pages(storage.id)
        try:
            # The first page now: a failure surfaces before the answer has begun.
            first = await anext(pages, None)
        except BaseException:
            self._open_scans -= 1
            await pages.aclose()
            raise
        return KeyScan(first, pages, on_close=self._scan_ended)

    def _scan_ended(self) -> None:
        with contextlib.suppress(ActorStoppedError):  # stopping: nobody counts any more
            self.send(_ScanEnded())

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
                    HistoryRecord(storage.id, key, value, operation, received_ms, request_id.get())
                    for key, value in changes
                ]
            )


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
