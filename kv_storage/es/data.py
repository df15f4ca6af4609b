"""Keys and values of storages: one ``storage-data-<id>`` index per storage, ``_id`` = key.

Documents carry the key in a ``key`` field too (layout version 2): ``_id`` cannot be sorted
or prefix-searched, the field can (``kv_storage.es.keys``).

Writes do not refresh: ``get`` and ``mget`` are real-time in Elasticsearch, so the next read
sees a write as soon as it is acknowledged. Scans (list, clear) refresh the index first, so
they see every write acknowledged before they began.
"""

import contextlib
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from elasticsearch import AsyncElasticsearch, NotFoundError
from elasticsearch.helpers import async_scan

from kv_storage.es.batches import (
    BULK_ANSWER,
    BULK_ANSWER_VERSIONED,
    MGET_ANSWER,
    MGET_ANSWER_VERSIONED,
    ReadOutcome,
    Reads,
    WriteOutcome,
    Writes,
    as_sent,
    bulk_body,
    encode_conditional_delete,
    encode_conditional_set,
    encode_deletes,
    encode_reads,
    encode_sets,
    mget_body,
    read_outcomes,
    write_outcomes,
)
from kv_storage.es.errors import ItemError
from kv_storage.es.names import IndexNames
from kv_storage.es.retirement import refused_by_write_block
from kv_storage.model import Condition


@dataclass(frozen=True, slots=True)
class ScanSettings:
    page_size: int
    keep_alive: str
    """Scroll keep-alive in Elasticsearch's notation, such as ``60000ms``."""


class ClosedStorageError(Exception):
    """The storage's index is closed to writes: the storage was deleted, most likely."""

    def __init__(self, cause: ItemError) -> None:
        super().__init__(str(cause))
        self.cause = cause


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

    # Operations, encoded when they arrive; batches of them, sent as one request each.

    def reads(self, storage_id: str, keys: Iterable[str], *, versioned: bool = False) -> Reads:
        """``versioned``: the outcome carries each value's version (an ETag to answer)."""
        return encode_reads(self._names.data(storage_id), keys, versioned=versioned)

    def sets(self, storage_id: str, pairs: Mapping[str, str], *, versioned: bool = False) -> Writes:
        """``versioned``: the outcome carries the versions written (an ETag to answer)."""
        return encode_sets(self._names.data(storage_id), pairs, versioned=versioned)

    def deletes(self, storage_id: str, keys: Iterable[str]) -> Writes:
        """Deleting a key that is not there succeeds: deletion is idempotent."""
        return encode_deletes(self._names.data(storage_id), keys)

    def conditional_set(
        self, storage_id: str, key: str, value: str, condition: Condition
    ) -> Writes:
        return encode_conditional_set(self._names.data(storage_id), key, value, condition)

    def conditional_delete(self, storage_id: str, key: str, condition: Condition) -> Writes:
        return encode_conditional_delete(self._names.data(storage_id), key, condition)

    async def read(self, parts: Sequence[Reads]) -> list[ReadOutcome]:
        """One ``_mget`` of every part (real-time: it sees every acknowledged write). A key
        of a storage never written (no index) is a missing key, like any other."""
        if not any(part.ids for part in parts):
            return [[] for _ in parts]
        wanted = MGET_ANSWER_VERSIONED if any(part.versioned for part in parts) else MGET_ANSWER
        answer = await self._client.mget(body=mget_body(parts), filter_path=wanted)
        return read_outcomes(parts, answer.body)

    async def write(self, parts: Sequence[Writes]) -> list[WriteOutcome]:
        """One ``_bulk`` of every part. Actions on one key are carried out in the order sent:
        a storage's index has one shard, and a bulk request keeps the order of each shard's
        actions."""
        if not any(part.ids for part in parts):
            return [WriteOutcome({}, {}) for _ in parts]
        wanted = BULK_ANSWER_VERSIONED if any(part.versioned for part in parts) else BULK_ANSWER
        answer = await self._client.bulk(operations=bulk_body(parts), filter_path=wanted)
        return write_outcomes(parts, answer.body)

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
        blocked = [item for item in unexpected if refused_by_write_block(item)]
        if blocked:
            raise ClosedStorageError(ItemError(blocked[0]))
        if unexpected:
            raise ItemError(unexpected[0])
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

    async def _failed_items(self, actions: list[dict[str, Any]]) -> list[Mapping[str, Any]]:
        """One bulk request for all ``actions`` (one dict each: ``_op_type``, ``_index``,
        ``_id`` and the action's parameters); the items Elasticsearch did not carry out."""
        lines = [
            orjson.dumps({action["_op_type"]: {k: v for k, v in action.items() if k != "_op_type"}})
            for action in actions
        ]
        answer = await self._client.bulk(
            operations=as_sent(b"\n".join(lines) + b"\n"), filter_path=BULK_ANSWER
        )
        if not answer.body.get("errors"):
            return []
        items = (next(iter(wrapped.values())) for wrapped in answer.body.get("items", []))
        return [item for item in items if item.get("status", 500) >= 300]
