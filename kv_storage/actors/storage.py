"""The storage actor: authorises each key/value operation, carries it out, records history.

Handlers send it typed commands. It asks the cache actor for the storage, checks the
``Secret-Key`` in constant time, does the Elasticsearch work through the data access layer
and hands every successful change to the history sink, without waiting for history.
"""

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kv_storage.actors.access import authorise
from kv_storage.actors.base import Actor
from kv_storage.actors.cache import CacheActor
from kv_storage.errors import ConflictError, NotFoundError
from kv_storage.es.data import DataStore
from kv_storage.logs import request_id
from kv_storage.model import Storage
from pipeline.records import HistoryRecord, Operation
from pipeline.sink import HistorySink


@dataclass(frozen=True, slots=True)
class _Command:
    storage_id: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class GetValue(_Command):
    key: str


@dataclass(frozen=True, slots=True)
class GetValues(_Command):
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetValue(_Command):
    key: str
    value: str
    received_ms: int


@dataclass(frozen=True, slots=True)
class SetValues(_Command):
    pairs: Mapping[str, str]
    """Only pairs that passed validation; the handler answers ``false`` for the others."""
    received_ms: int


@dataclass(frozen=True, slots=True)
class DeleteValue(_Command):
    key: str
    received_ms: int


@dataclass(frozen=True, slots=True)
class DeleteValues(_Command):
    keys: tuple[str, ...]
    received_ms: int


@dataclass(frozen=True, slots=True)
class ListKeys(_Command):
    pass


@dataclass(frozen=True, slots=True)
class Clear(_Command):
    received_ms: int


StorageCommand = (
    GetValue | GetValues | SetValue | SetValues | DeleteValue | DeleteValues | ListKeys | Clear
)

_OPERATION_CONCURRENCY = 4096
"""Commands in progress at once; the Elasticsearch client's connection pool is the real limit."""


class StorageActor(Actor[StorageCommand]):
    def __init__(
        self, *, cache: CacheActor, data: DataStore, history: HistorySink, index_prefix: str
    ) -> None:
        super().__init__(name="storage", max_concurrency=_OPERATION_CONCURRENCY)
        self._cache = cache
        self._data = data
        self._history = history
        self._index_prefix = index_prefix

    async def handle(self, message: StorageCommand) -> Any:
        storage = await self._authorise(message)
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
                return await _first_page_fetched(self._data.key_pages(storage.id))
            case Clear(received_ms=received_ms):
                outcome = await self._data.clear(storage.id)
                if outcome.conflicts:
                    raise ConflictError(
                        f"{outcome.conflicts} keys changed while storage {storage.id} was being "
                        f"cleared and were kept; {outcome.deleted} keys were deleted, so the "
                        "storage may have been cleared partially"
                    )
                self._record(storage, [(None, None)], Operation.CLEAR, received_ms)
                return None

    async def _authorise(self, command: _Command) -> Storage:
        return await authorise(
            self._cache, command.storage_id, command.secret_key, index_prefix=self._index_prefix
        )

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


class KeyPages:
    """A storage's keys, a page at a time, the first page read already, so that a failure
    surfaces before the answer has begun.

    ``aclose`` releases what the remaining pages hold in Elasticsearch (a scroll), also when
    they were never iterated: a HEAD answers the GET's status and wants no keys.
    """

    def __init__(self, first: list[str] | None, rest: AsyncGenerator[list[str]]) -> None:
        self._first = first
        self._rest = rest

    async def __aiter__(self) -> AsyncIterator[list[str]]:
        if self._first is None:
            return
        yield self._first
        async for page in self._rest:
            yield page

    async def aclose(self) -> None:
        await self._rest.aclose()


async def _first_page_fetched(pages: AsyncGenerator[list[str]]) -> KeyPages:
    return KeyPages(await anext(pages, None), pages)
