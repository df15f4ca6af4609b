"""The indices of a deleted storage: closed to writes at its deletion, removed later.

Another instance may still take the storage for live until its next registry poll, and a
history batch may still be on its way. Were the indices removed at the deletion, such a late
write would re-create them through the templates and be answered 200, then lost when the
sweep removes them again. So a deletion puts Elasticsearch's write block on them instead
(``index.blocks.write``; a missing index is created with it): every late write is refused,
item by item, and answered 404. The expiry sweep removes the indices once no late write can
come any more (``kv_storage.actors.expiry``).
"""

import logging
from collections.abc import Mapping
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError

from kv_storage.es.errors import describe
from kv_storage.es.names import IndexNames

logger = logging.getLogger(__name__)

_BLOCKED = "cluster_block_exception"
_WRITE_BLOCK = "index write (api)"
"""How Elasticsearch names the write block in a refusal; the disk watermark's block, which
refuses writes too, is another."""


def refused_by_write_block(item: Mapping[str, Any]) -> bool:
    """Whether a ``_bulk`` item was refused by its index's write block: its storage was
    deleted, most likely (or an operator closed the index to writes)."""
    error = item.get("error")
    return (
        isinstance(error, Mapping)
        and error.get("type") == _BLOCKED
        and _WRITE_BLOCK in str(error.get("reason", ""))
    )


_ALREADY_EXISTS = "resource_already_exists_exception"
_ATTEMPTS = 3


class StorageIndices:
    def __init__(self, client: AsyncElasticsearch, names: IndexNames) -> None:
        self._client = client
        self._names = names

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
