"""Copies a storage from its own indices into the shared ones: its keys, with their values,
and its history records, page by page (a scan of each of its indices, a ``_bulk`` per page).

The copy is idempotent, so that a move cut short is simply done again: a key is written
over with the same value (its ``_id`` in the shared index is derived from storage and key),
a record is created under the id it had (one already there is a 409, and counts as copied).
Documents written before layout version 2 have no ``key`` field: their key is their ``_id``.
"""

from dataclasses import dataclass

import orjson
from elasticsearch import AsyncElasticsearch

from kv_storage.es.batches import BULK_ANSWER, as_sent
from kv_storage.es.errors import ItemError
from kv_storage.es.names import IndexNames
from kv_storage.es.placement import Placement, place
from kv_storage.es.transfer import document_pages, key_of
from kv_storage.model import Layout, Location

_COPIED = frozenset({200, 201, 409})
"""A 409 is a history record created by an earlier attempt of this move."""


@dataclass(frozen=True, slots=True)
class Copied:
    keys: int
    records: int


class StorageCopy:
    def __init__(self, client: AsyncElasticsearch, names: IndexNames, *, page_size: int) -> None:
        self._client = client
        self._names = names
        self._page_size = page_size

    async def into_shared(self, storage_id: str) -> Copied:
        own = place(self._names, Location(storage_id, Layout.PER_STORAGE))
        shared = place(self._names, Location(storage_id, Layout.SHARED))
        keys = records = 0
        async for hits in document_pages(
            self._client, own, own.data_index, page_size=self._page_size
        ):
            lines: list[bytes] = []
            for hit in hits:
                source = hit.get("_source") or {}
                key = key_of(hit)
                target = {"_index": shared.data_index, "_id": shared.data_id(key)}
                lines += [
                    orjson.dumps({"index": {**target, "routing": storage_id}}),
                    orjson.dumps(shared.tagged({"key": key, "value": source.get("value")})),
                ]
            keys += await self._bulk(lines)
        async for hits in document_pages(
            self._client, own, own.history_index, page_size=self._page_size
        ):
            lines = []
            for hit in hits:
                target = {"_index": shared.history_index, "_id": hit["_id"]}
                lines += [
                    orjson.dumps({"create": {**target, "routing": storage_id}}),
                    orjson.dumps(shared.tagged(hit.get("_source") or {})),
                ]
            records += await self._bulk(lines)
        return Copied(keys, records)

    async def count(self, where: Placement, *, history: bool) -> int:
        """Documents of the storage at ``where`` (after a refresh)."""
        index = where.history_index if history else where.data_index
        await self._client.indices.refresh(index=index, ignore_unavailable=True)
        answer = await self._client.count(
            query=where.query(), ignore_unavailable=True, **where.search_options(index)
        )
        return int(answer["count"])

    async def _bulk(self, lines: list[bytes]) -> int:
        if not lines:
            return 0
        answer = await self._client.bulk(
            operations=as_sent(b"\n".join(lines) + b"\n"), filter_path=BULK_ANSWER
        )
        items = [next(iter(wrapped.values())) for wrapped in answer.body.get("items", [])]
        failed = [item for item in items if item.get("status", 500) not in _COPIED]
        if failed:
            raise ItemError(failed[0])
        return len(items)
