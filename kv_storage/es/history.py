"""History records: one ``storage-history-<id>`` index per storage, in the original's layout.

Written by the history actor in bulk; searched, paged and scrolled by the history API.
"""

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from elastic_transport import ObjectApiResponse
from elasticsearch import ApiError, AsyncElasticsearch
from elasticsearch.helpers import async_bulk

from kv_storage.es.data import BULK_ANSWER
from kv_storage.es.errors import describe, is_elasticsearch_error
from kv_storage.es.names import IndexNames
from kv_storage.model import HistoryQuery
from pipeline.actor import WriteFailedError
from pipeline.records import HistoryRecord

logger = logging.getLogger(__name__)

MAX_BULK_BYTES = 10 * 1024 * 1024
"""Most bytes of one history bulk request (a single larger record goes alone): far below
Elasticsearch's ``http.max_content_length`` (100 MB)."""
BULK_TIMEOUT_S = 30.0
"""How long one history bulk request may take: not the API's request timeout (3 s), which
a request of ``MAX_BULK_BYTES`` to a busy node may well exceed, failing it again and again."""
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
    def __init__(
        self,
        client: AsyncElasticsearch,
        names: IndexNames,
        *,
        max_bulk_bytes: int = MAX_BULK_BYTES,
        bulk_timeout_s: float = BULK_TIMEOUT_S,
    ) -> None:
        self._client = client
        self._names = names
        self._max_bulk_bytes = max_bulk_bytes
        self._bulk_timeout_s = bulk_timeout_s

    async def write(self, batch: Sequence[tuple[str, HistoryRecord]]) -> set[str]:
        """Writes records of any storages; answers the ids that failed.

        ``async_bulk`` sends the batch in as few bulk requests as fit ``max_bulk_bytes`` each:
        two values of many megabytes in one request could pass Elasticsearch's
        ``http.max_content_length`` and fail the whole batch on every attempt, healthy records
        with it. A request that Elasticsearch refuses as a whole fails only its own records;
        only when every record was refused that way, or Elasticsearch gave no answer, is the
        write a failure as a whole (``WriteFailedError``), which pauses the writer.
        """
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
        if not actions:
            return set()
        # Its own timeout: a request of max_bulk_bytes to a busy node may take longer than the
        # API's requests, and nobody waits for it.
        client = self._client.options(request_timeout=self._bulk_timeout_s)
        try:
            _, errors = await async_bulk(
                client,
                actions,
                chunk_size=len(actions),
                max_chunk_bytes=self._max_bulk_bytes,
                raise_on_error=False,
                raise_on_exception=False,
                stats_only=False,
                filter_path=BULK_ANSWER,
            )
        except Exception as error:  # no answer at all (unreachable, timed out)
            if is_elasticsearch_error(error):
                raise WriteFailedError(describe(error)) from error
            raise
        assert isinstance(errors, list)  # stats_only=False: the failed items themselves
        failed = [next(iter(error.values())) for error in errors]
        refused = [item["exception"] for item in failed if "exception" in item]
        if refused and len(refused) == len(actions):
            raise WriteFailedError(describe(refused[0])) from refused[0]
        if refused:
            logger.warning(
                "history: %d records went in bulk requests refused as a whole (%s); they go again",
                len(refused),
                describe(refused[0]),
            )
        return {str(item.get("_id")) for item in failed}

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
