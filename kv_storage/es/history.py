"""History records: one ``storage-history-<id>`` index per storage, in the original's layout.

Written by the history actor in bulk; searched, paged and scrolled by the history API.
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from elastic_transport import ObjectApiResponse
from elasticsearch import ApiError, AsyncElasticsearch
from elasticsearch.helpers import async_bulk

from kv_storage.es.errors import describe, is_elasticsearch_error
from kv_storage.es.names import IndexNames
from kv_storage.model import HistoryQuery
from pipeline.actor import WriteFailedError
from pipeline.records import HistoryRecord

_NO_CHUNK_LIMIT = 2**62
_STARTING_SHARD_ATTEMPTS = 4


def _query(where: HistoryQuery) -> dict[str, Any]:
    clauses: list[dict[str, Any]] = []
    if where.keys:
        clauses.append({"terms": {"key": list(where.keys)}})
    if where.operations:
        clauses.append({"terms": {"operation": list(where.operations)}})
    bounds = {"gte": where.start_ms, "lte": where.end_ms}
    if any(bound is not None for bound in bounds.values()):
        clauses.append({"range": {"timestamp": {k: v for k, v in bounds.items() if v is not None}}})
    return {"bool": {"filter": clauses}}


def _sort(where: HistoryQuery) -> list[dict[str, Any]]:
    """``unmapped_type`` lets a storage with no history index yet sort (and find nothing)."""
    return [
        {field: {"order": "desc" if descending else "asc", "unmapped_type": "keyword"}}
        for field, descending in where.sort or (("timestamp", False),)
    ]


@dataclass(frozen=True, slots=True)
class HistoryPage:
    total: int
    items: list[dict[str, Any]]
    scroll_id: str | None = None


class HistoryStore:
    def __init__(self, client: AsyncElasticsearch, names: IndexNames) -> None:
        self._client = client
        self._names = names

    async def write(self, batch: Sequence[tuple[str, HistoryRecord]]) -> set[str]:
        """One bulk request for records of any storages; answers the ids that failed."""
        actions = [
            {
                "_op_type": "index",
                "_index": self._names.history(record.storage_id),
                "_id": record_id,
                "key": record.key,
                "value": record.value,
                "operation": record.operation.value,
                "timestamp": record.timestamp_ms,
            }
            for record_id, record in batch
        ]
        try:
            _, errors = await async_bulk(
                self._client,
                actions,
                chunk_size=max(len(actions), 1),
                max_chunk_bytes=_NO_CHUNK_LIMIT,
                raise_on_error=False,
                stats_only=False,
            )
        except Exception as error:
            if is_elasticsearch_error(error):
                raise WriteFailedError(describe(error)) from error
            raise
        assert isinstance(errors, list)
        return {str(next(iter(error.values())).get("_id")) for error in errors}

    async def drop(self, storage_id: str) -> None:
        await self._client.indices.delete(
            index=self._names.history(storage_id), ignore_unavailable=True
        )

    async def search(
        self, storage_id: str, where: HistoryQuery, *, offset: int, size: int
    ) -> HistoryPage:
        return await self._search(storage_id, where, size=size, from_=offset)

    async def open_scroll(
        self, storage_id: str, where: HistoryQuery, *, size: int, keep_alive_ms: int
    ) -> HistoryPage:
        return await self._search(storage_id, where, size=size, scroll=f"{keep_alive_ms}ms")

    async def _search(
        self, storage_id: str, where: HistoryQuery, *, size: int, **window: Any
    ) -> HistoryPage:
        """A page (``from_``) or the first batch of a scroll (``scroll``)."""
        index = self._names.history(storage_id)
        answer = await self._when_started(
            index,
            lambda: self._client.search(
                index=index,
                query=_query(where),
                sort=_sort(where),
                size=size,
                track_total_hits=True,
                ignore_unavailable=True,
                **window,
            ),
        )
        return _page(answer)

    async def _when_started(
        self, index: str, search: Callable[[], Awaitable[ObjectApiResponse[Any]]]
    ) -> ObjectApiResponse[Any]:
        """A history index is created by its first record's write; a search that comes while
        its shard is still starting fails as a whole (503). Wait for the shard, search again."""
        for _ in range(_STARTING_SHARD_ATTEMPTS - 1):
            try:
                return await search()
            except ApiError as error:
                if error.meta.status != 503:
                    raise
            await self._client.options(ignore_status=408).cluster.health(
                index=index, wait_for_status="yellow", timeout="2s"
            )
        return await search()

    async def continue_scroll(self, scroll_id: str, *, keep_alive_ms: int) -> HistoryPage:
        answer = await self._client.scroll(scroll_id=scroll_id, scroll=f"{keep_alive_ms}ms")
        return _page(answer)

    async def release_scroll(self, scroll_id: str) -> None:
        await self._client.options(ignore_status=404).clear_scroll(scroll_id=scroll_id)


def _page(answer: ObjectApiResponse[Any]) -> HistoryPage:
    hits = answer["hits"]
    total = hits["total"]
    total = total["value"] if isinstance(total, Mapping) else total
    items = [
        {
            "key": source.get("key"),
            "value": source.get("value"),
            "operation": source.get("operation"),
            "timestamp": source.get("timestamp"),
        }
        for source in (hit.get("_source", {}) for hit in hits["hits"])
    ]
    return HistoryPage(total=int(total), items=items, scroll_id=answer.get("_scroll_id"))
