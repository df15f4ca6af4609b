"""The indices of a storage in the per-storage layout (made with it, closed to writes at its
deletion, removed later), and the purge of a deleted storage's documents from the shared ones.

A per-storage storage's indices are made when it is created, not by its first write: the
cluster's shard limit then refuses the creation, naming the limit, rather than a write long
after (``ShardLimitError``).

Another instance may still take the storage for live until its next registry poll, and a
history batch may still be on its way. Were the indices removed at the deletion, such a late
write would re-create them through the templates and be answered 200, then lost when the
sweep removes them again. So a deletion puts Elasticsearch's write block on them instead
(``index.blocks.write``; a missing index is created with it): every late write is refused,
item by item, and answered 404. The expiry sweep removes the indices once no late write can
come any more (``kv_storage.actors.expiry``).
"""

import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any, cast

import orjson
from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError
from elasticsearch.helpers import async_scan

from kv_storage.es.batches import BULK_ANSWER, as_sent
from kv_storage.es.errors import ItemError, describe
from kv_storage.es.names import IndexNames
from kv_storage.es.placement import place
from kv_storage.model import Layout, Location

logger = logging.getLogger(__name__)

_ALREADY_EXISTS = "resource_already_exists_exception"
_ATTEMPTS = 3


class ShardLimitError(Exception):
    """The cluster would have more shards open than ``cluster.max_shards_per_node`` allows."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_SHARD_LIMIT = "maximum normal shards open"
"""How Elasticsearch words a refusal for the shard limit."""


class StorageIndices:
    def __init__(self, client: AsyncElasticsearch, names: IndexNames) -> None:
        self._client = client
        self._names = names

    async def make(self, storage_id: str, *, keeps_history: bool) -> None:
        """The indices of a new per-storage storage (an index there already is kept: the
        CloudStack plugin makes its own). The shard limit raises ``ShardLimitError``, and
        what this call made of them is removed again."""
        indices = [self._names.data(storage_id)]
        if keeps_history:
            indices.append(self._names.history(storage_id))
        made: list[str] = []
        for index in indices:
            try:
                await self._client.indices.create(index=index)
            except ApiError as error:
                if error.error == _ALREADY_EXISTS:
                    continue
                if made:
                    await self._client.indices.delete(index=",".join(made), ignore_unavailable=True)
                reason = _reason(error)
                if _SHARD_LIMIT in reason:
                    raise ShardLimitError(reason) from None
                raise
            made.append(index)

    async def close_to_writes(
        self, storage_id: str, *, create_missing: bool, keeps_history: bool = False
    ) -> None:
        """Puts the write block on the storage's indices. ``create_missing``: an index that
        does not exist is made, with the block, so that no late write can make it without
        (the data index, and the history index of a storage that ``keeps_history``). The
        deletion does this; the sweep, which visits deletions of long ago, does not."""
        data, history = self._names.data(storage_id), self._names.history(storage_id)
        if not create_missing:  # one request, whichever of them exist
            await self._client.indices.add_block(
                index=f"{data},{history}", block="write", ignore_unavailable=True
            )
            return
        await self._close(data, create_missing=True)
        await self._close(history, create_missing=keeps_history)

    async def drop(self, storage_id: str) -> None:
        indices = [self._names.data(storage_id), self._names.history(storage_id)]
        await self._client.indices.delete(index=",".join(indices), ignore_unavailable=True)

    async def purge(self, storage_id: str, *, page_size: int) -> int:
        """Deletes every document of a shared-layout storage, its keys and its history: a
        scan of its shard (routing) for its documents, and a ``_bulk`` of deletes per page,
        core APIs only (no delete-by-query). Answers how many went. Safe to run again: an
        interrupted purge is done over by the next sweep."""
        placement = place(self._names, Location(storage_id, Layout.SHARED))
        purged = 0
        for index in (placement.data_index, placement.history_index):
            await self._client.indices.refresh(index=index, ignore_unavailable=True)
            hits = cast(
                AsyncGenerator[dict[str, Any], None],
                async_scan(
                    self._client,
                    query={"query": placement.query(), "sort": ["_doc"]},
                    size=page_size,
                    _source=False,
                    clear_scroll=True,
                    ignore_unavailable=True,
                    **placement.search_options(index),
                ),
            )
            page: list[str] = []
            async with contextlib.aclosing(hits):
                async for hit in hits:
                    page.append(hit["_id"])
                    if len(page) >= page_size:
                        purged += await self._delete(index, placement.routing, page)
                        page = []
            if page:
                purged += await self._delete(index, placement.routing, page)
        return purged

    async def _delete(self, index: str, routing: str | None, ids: list[str]) -> int:
        lines = [
            orjson.dumps({"delete": {"_index": index, "_id": doc_id, "routing": routing}})
            for doc_id in ids
        ]
        answer = await self._client.bulk(
            operations=as_sent(b"\n".join(lines) + b"\n"), filter_path=BULK_ANSWER
        )
        items = (next(iter(wrapped.values())) for wrapped in answer.body.get("items", []))
        failed = [item for item in items if item.get("status", 500) not in (200, 404)]
        if failed:
            raise ItemError(failed[0])
        return len(ids)

    async def _close(self, index: str, *, create_missing: bool) -> None:
        for _ in range(_ATTEMPTS):
            if await self._block(index) or not create_missing or await self._create_blocked(index):
                return
            # A late write made the index between the two requests: block it now.

    async def _block(self, index: str) -> bool:
        """Whether the index exists (now blocked)."""
        try:
            await self._client.indices.add_block(index=index, block="write")
        except NotFoundError:
            return False
        return True

    async def _create_blocked(self, index: str) -> bool:
        """Whether the index was made here (blocked); ``False``: it existed already."""
        try:
            await self._client.indices.create(
                index=index, settings={"index": {"blocks": {"write": True}}}
            )
        except ApiError as error:
            if error.error == _ALREADY_EXISTS:
                return False
            # Say a cluster at its shard limit: the deletion stands, a late write may not be
            # refused (it would make the index, which the sweep removes).
            logger.warning("creating %s closed to writes failed: %s", index, describe(error))
        return True


def _reason(error: ApiError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    detail = body.get("error")
    return str(detail.get("reason", "")) if isinstance(detail, dict) else str(detail or "")
