"""Keys and values of storages: one ``storage-data-<id>`` index per storage, ``_id`` = key.

Documents carry the key in a ``key`` field too (layout version 2): ``_id`` cannot be sorted
or prefix-searched, the field can (``kv_storage.es.keys``).

Writes do not refresh: ``get`` and ``mget`` are real-time in Elasticsearch, so the next read
sees a write as soon as it is acknowledged. Scans (list, clear) refresh the index first, so
they see every write acknowledged before they began.
"""

import contextlib
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from elasticsearch import AsyncElasticsearch, NotFoundError
from elasticsearch.helpers import async_bulk, async_scan

from kv_storage.es.errors import BulkItemError
from kv_storage.es.names import IndexNames

_NO_CHUNK_LIMIT = 2**62
"""async_bulk splits requests by count and size; ours must go as one request each."""

BULK_ANSWER = ["errors", "items.*.status", "items.*._id", "items.*.error"]
"""All a bulk answer needs to say: per item, whether it failed and why (a fraction of the
full answer, which Elasticsearch must write and the client parse)."""


@dataclass(frozen=True, slots=True)
class ScanSettings:
    page_size: int
    keep_alive: str
    """Scroll keep-alive in Elasticsearch's notation, such as ``60000ms``."""


@dataclass(frozen=True, slots=True)
class ClearOutcome:
    deleted: int
    conflicts: int
    """Keys that changed between being read and being deleted; they were left alone."""


class DataStore:
    def __init__(self, client: AsyncElasticsearch, names: IndexNames, scan: ScanSettings) -> None:
        self._client = client
        self._names = names
        self._scan = scan

    async def get(self, storage_id: str, key: str) -> str | None:
        if not _travels_in_path(key):
            return (await self.get_many(storage_id, [key]))[key]
        try:
            document = await self._client.get(index=self._names.data(storage_id), id=key)
        except NotFoundError:  # no such key, or the storage was never written
            return None
        return _value(document.get("_source"))

    async def get_many(self, storage_id: str, keys: Iterable[str]) -> dict[str, str | None]:
        ids = list(dict.fromkeys(keys))
        if not ids:
            return {}
        found = await self._client.mget(index=self._names.data(storage_id), ids=ids)
        values: dict[str, str | None] = dict.fromkeys(ids)
        for document in found["docs"]:
            if document.get("found"):
                values[document["_id"]] = _value(document.get("_source"))
        return values

    async def put(self, storage_id: str, key: str, value: str) -> None:
        if not _travels_in_path(key):
            action = {"_op_type": "index", "_index": self._names.data(storage_id), "_id": key}
            document = {**action, "key": key, "value": value}
            await self._single_bulk_item(document, ok_statuses=frozenset())
            return
        await self._client.index(
            index=self._names.data(storage_id), id=key, document={"key": key, "value": value}
        )

    async def put_many(self, storage_id: str, pairs: Mapping[str, str]) -> set[str]:
        """Writes in one bulk request; answers the keys Elasticsearch acknowledged."""
        index = self._names.data(storage_id)
        actions = [
            {"_op_type": "index", "_index": index, "_id": key, "key": key, "value": value}
            for key, value in pairs.items()
        ]
        return await self._bulk(actions, ok_statuses=frozenset())

    async def delete(self, storage_id: str, key: str) -> None:
        if not _travels_in_path(key):
            action = {"_op_type": "delete", "_index": self._names.data(storage_id), "_id": key}
            await self._single_bulk_item(action, ok_statuses=frozenset({404}))
            return
        # Deleting what is not there succeeds: deletion is idempotent.
        with contextlib.suppress(NotFoundError):
            await self._client.delete(index=self._names.data(storage_id), id=key)

    async def delete_many(self, storage_id: str, keys: Iterable[str]) -> set[str]:
        """Deletes in one bulk request; a key that was not there counts as deleted."""
        index = self._names.data(storage_id)
        actions = [
            {"_op_type": "delete", "_index": index, "_id": key} for key in dict.fromkeys(keys)
        ]
        return await self._bulk(actions, ok_statuses=frozenset({404}))

    async def drop(self, storage_id: str) -> None:
        await self._client.indices.delete(
            index=self._names.data(storage_id), ignore_unavailable=True
        )

    async def key_pages(self, storage_id: str) -> AsyncGenerator[list[str], None]:
        """Every key, a page at a time; memory holds one page, whatever the storage's size.

        Closing it early releases the scroll in Elasticsearch at once.
        """
        async with contextlib.aclosing(self._pages(storage_id, with_versions=False)) as pages:
            async for page in pages:
                yield [hit["_id"] for hit in page]

    async def clear(self, storage_id: str) -> ClearOutcome:
        """Deletes every key that has not changed since it was read (core APIs only).

        Each page of a scan becomes one bulk of deletes conditional on the ``_seq_no`` and
        ``_primary_term`` the scan saw: a key written in between is not deleted and is
        counted as a conflict.
        """
        deleted = conflicts = 0
        async with contextlib.aclosing(self._pages(storage_id, with_versions=True)) as pages:
            async for page in pages:
                deleted_here, conflicts_here = await self._delete_unchanged(page)
                deleted += deleted_here
                conflicts += conflicts_here
        return ClearOutcome(deleted=deleted, conflicts=conflicts)

    async def _delete_unchanged(self, page: list[Any]) -> tuple[int, int]:
        """Deletes a page of keys unless they changed since they were read: (deleted, kept)."""
        actions = [
            {
                "_op_type": "delete",
                "_index": hit["_index"],
                "_id": hit["_id"],
                "if_seq_no": hit["_seq_no"],
                "if_primary_term": hit["_primary_term"],
            }
            for hit in page
        ]
        failed = await self._failed_items(actions)
        unexpected = [item for item in failed if item.get("status") not in (404, 409)]
        if unexpected:
            raise BulkItemError(unexpected[0])
        conflicts = sum(1 for item in failed if item.get("status") == 409)
        return len(actions) - len(failed), conflicts

    async def _pages(
        self, storage_id: str, *, with_versions: bool
    ) -> AsyncGenerator[list[Any], None]:
        index = self._names.data(storage_id)
        try:
            await self._client.indices.refresh(index=index)
        except NotFoundError:
            return  # never written: no keys
        page: list[Any] = []
        # An async generator, typed as an iterable: closing it releases the scroll.
        hits = cast(
            AsyncGenerator[dict[str, Any], None],
            async_scan(
                self._client,
                index=index,
                query={"query": {"match_all": {}}, "sort": ["_doc"]},
                size=self._scan.page_size,
                scroll=self._scan.keep_alive,
                _source=False,
                seq_no_primary_term=with_versions,
                clear_scroll=True,
            ),
        )
        try:
            async with contextlib.aclosing(hits):
                async for hit in hits:
                    page.append(hit)
                    if len(page) >= self._scan.page_size:
                        yield page
                        page = []
        except NotFoundError as error:
            # The index deleted while we read it means no keys; anything else missing (an
            # expired or released scroll) would silently cut the keys short, so it is an error.
            if error.error != "index_not_found_exception":
                raise
            return
        if page:
            yield page

    async def _bulk(
        self, actions: list[dict[str, Any]], *, ok_statuses: frozenset[int]
    ) -> set[str]:
        if not actions:
            return set()
        failed = {
            str(item.get("_id"))
            for item in await self._failed_items(actions)
            if item.get("status") not in ok_statuses
        }
        return {str(action["_id"]) for action in actions} - failed

    async def _single_bulk_item(
        self, action: dict[str, Any], *, ok_statuses: frozenset[int]
    ) -> None:
        for item in await self._failed_items([action]):
            if item.get("status") not in ok_statuses:
                raise BulkItemError(item)

    async def _failed_items(self, actions: list[dict[str, Any]]) -> list[Mapping[str, Any]]:
        """One bulk request for all ``actions``; the items Elasticsearch did not carry out."""
        _, errors = await async_bulk(
            self._client,
            actions,
            chunk_size=len(actions),
            max_chunk_bytes=_NO_CHUNK_LIMIT,
            raise_on_error=False,
            stats_only=False,
            filter_path=BULK_ANSWER,
        )
        assert isinstance(errors, list)  # stats_only=False: the failed items themselves
        return [_item(error) for error in errors]


def _item(error: Mapping[str, Any]) -> Mapping[str, Any]:
    """async_bulk reports a failed item as ``{op_type: item}``."""
    item: Mapping[str, Any] = next(iter(error.values()))
    return item


def _travels_in_path(key: str) -> bool:
    """``.`` and ``..`` are dot segments: in a URL path they would be resolved away (PUT
    ``/index/_doc/..`` becomes a request on the index itself), so they go in a request body."""
    return key not in (".", "..")


def _value(source: Mapping[str, Any] | None) -> str | None:
    if not source:
        return None
    value = source.get("value")
    return value if isinstance(value, str) or value is None else str(value)
