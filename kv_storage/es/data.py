"""Keys and values of storages: one ``storage-data-<id>`` index per storage, ``_id`` = key,
or the shared data index, routed by storage (``kv_storage.es.placement``).

Documents carry the key in a ``key`` field too (layout version 2): ``_id`` cannot be sorted
or prefix-searched, the field can (``kv_storage.es.keys``).

Writes do not refresh: ``get`` and ``mget`` are real-time in Elasticsearch, so the next read
sees a write as soon as it is acknowledged. Scans (list, clear) refresh the index first, so
they see every write acknowledged before they began; scans at once share refreshes
(``kv_storage.es.refreshes``).
"""

import contextlib
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from elasticsearch import AsyncElasticsearch, NotFoundError
from elasticsearch.helpers import async_scan

from kv_storage.config import ScrollConfig
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
from kv_storage.es.errors import ItemError, refused_by_write_block
from kv_storage.es.names import IndexNames
from kv_storage.es.placement import Placement, place
from kv_storage.es.refreshes import Refreshes
from kv_storage.model import Condition, Location


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
    def __init__(self, client: AsyncElasticsearch, names: IndexNames, scroll: ScrollConfig) -> None:
        self._client = client
        self._names = names
        self._scroll = scroll
        self._refreshes = Refreshes(lambda index: client.indices.refresh(index=index))

    # Operations, encoded when they arrive; batches of them, sent as one request each.

    def reads(self, where: Location, keys: Iterable[str], *, versioned: bool = False) -> Reads:
        """``versioned``: the outcome carries each value's version (an ETag to answer)."""
        return encode_reads(place(self._names, where), keys, versioned=versioned)

    def sets(self, where: Location, pairs: Mapping[str, str], *, versioned: bool = False) -> Writes:
        """``versioned``: the outcome carries the versions written (an ETag to answer)."""
        return encode_sets(place(self._names, where), pairs, versioned=versioned)

    def deletes(self, where: Location, keys: Iterable[str]) -> Writes:
        """Deleting a key that is not there succeeds: deletion is idempotent."""
        return encode_deletes(place(self._names, where), keys)

    def conditional_set(
        self, where: Location, key: str, value: str, condition: Condition
    ) -> Writes:
        return encode_conditional_set(place(self._names, where), key, value, condition)

    def conditional_delete(self, where: Location, key: str, condition: Condition) -> Writes:
        return encode_conditional_delete(place(self._names, where), key, condition)

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

    async def key_pages(self, where: Location) -> AsyncGenerator[list[str], None]:
        """Every key, a page at a time; memory holds one page, whatever the storage's size.

        Closing it early releases the scroll in Elasticsearch at once. A per-storage index's
        keys are its documents' ids (documents written before layout version 2 have no key
        field); a shared index's are their key fields.
        """
        placement = place(self._names, where)
        pages = self._pages(placement, with_versions=False)
        async with contextlib.aclosing(pages):
            async for page in pages:
                if placement.shared:
                    yield [hit["fields"]["key"][0] for hit in page]
                else:
                    yield [hit["_id"] for hit in page]

    async def clear(self, where: Location) -> ClearOutcome:
        """Deletes every key that has not changed since it was read (core APIs only).

        Each page of a scan becomes one bulk of deletes conditional on the ``_seq_no`` and
        ``_primary_term`` the scan saw: a key written in between is not deleted and is
        counted as a conflict.
        """
        placement = place(self._names, where)
        deleted = conflicts = 0
        async with contextlib.aclosing(self._pages(placement, with_versions=True)) as pages:
            async for page in pages:
                deleted_here, conflicts_here = await self._delete_unchanged(placement, page)
                deleted += deleted_here
                conflicts += conflicts_here
        return ClearOutcome(deleted=deleted, conflicts=conflicts)

    async def _delete_unchanged(self, placement: Placement, page: list[Any]) -> tuple[int, int]:
        """Deletes a page of keys unless they changed since they were read: (deleted, kept)."""
        routing = {"routing": placement.routing} if placement.shared else {}
        actions = [
            {
                "_op_type": "delete",
                "_index": hit["_index"],
                "_id": hit["_id"],
                "if_seq_no": hit["_seq_no"],
                "if_primary_term": hit["_primary_term"],
                **routing,
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
        self, placement: Placement, *, with_versions: bool
    ) -> AsyncGenerator[list[Any], None]:
        index = placement.data_index
        try:
            await self._refreshes.refresh(index)
        except NotFoundError:
            return  # never written: no keys
        page: list[Any] = []
        # The keys of a shared index's documents are in their key field (doc values).
        keys = {"docvalue_fields": ["key"]} if placement.shared else {}
        # An async generator, typed as an iterable: closing it releases the scroll.
        hits = cast(
            AsyncGenerator[dict[str, Any], None],
            async_scan(
                self._client,
                query={"query": placement.query(), "sort": ["_doc"], **keys},
                size=self._scroll.page_size,
                # Elasticsearch's notation: whole milliseconds, such as 60000ms.
                scroll=f"{round(self._scroll.keep_alive_s * 1000)}ms",
                _source=False,
                seq_no_primary_term=with_versions,
                clear_scroll=True,
                **placement.search_options(index),
            ),
        )
        try:
            async with contextlib.aclosing(hits):
                async for hit in hits:
                    page.append(hit)
                    if len(page) >= self._scroll.page_size:
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
