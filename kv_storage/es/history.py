"""History records: one ``storage-history-<id>`` index per storage, in the original's layout.

Written by the history actor in bulk; searched, paged and scrolled by the history API.
"""

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from elastic_transport import ObjectApiResponse
from elasticsearch import ApiError, AsyncElasticsearch, BadRequestError

from kv_storage.es.batches import BULK_ANSWER, as_sent
from kv_storage.es.errors import describe, is_elasticsearch_error, refused_by_write_block
from kv_storage.es.names import IndexNames
from kv_storage.es.placement import place
from kv_storage.model import HistoryQuery, Layout, Location
from pipeline.records import HistoryRecord
from pipeline.writer import WriteFailedError, WriteResult

logger = logging.getLogger(__name__)


class HistoryIndexError(Exception):
    """A history search answered records that are not of the storage's own history index."""


class BeyondResultWindowError(Exception):
    """A page reaches past the index's ``index.max_result_window`` (10,000 by default)."""

    def __init__(self, window: int) -> None:
        super().__init__(f"paging reaches only the first {window} records")
        self.window = window


MAX_BULK_BYTES = 10 * 1024 * 1024
"""Most bytes of one history bulk request (a single larger record goes alone): far below
Elasticsearch's ``http.max_content_length`` (100 MB)."""
BULK_TIMEOUT_S = 30.0
"""How long one history bulk request may take: not the API's request timeout (3 s), which
a request of ``MAX_BULK_BYTES`` to a busy node may well exceed, failing it again and again."""
_STARTING_SHARD_ATTEMPTS = 4
_WRITTEN = frozenset({200, 201, 409})
"""Statuses of a written record; 409 is a create of a record id that exists: an earlier
attempt of this write landed."""
_CAUSE_MAX_CHARS = 200


def without_values(text: str) -> str:
    """An Elasticsearch reason fit for the log: Elasticsearch quotes values and document ids
    in single quotes (``Preview of field's value: '...'``, ``the first immense term is:
    '...'``) and names indices and fields in brackets, so the text is cut at the first quote,
    and kept short."""
    kept = text.split("'", 1)[0].rstrip()
    if len(kept) > _CAUSE_MAX_CHARS:
        return kept[: _CAUSE_MAX_CHARS - 3] + "..."
    return kept + ("..." if len(kept) < len(text) else "")


def _item_cause(status: object, error: object) -> str:
    if not isinstance(error, Mapping):
        return f"refused ({status})"
    reason = without_values(str(error.get("reason") or ""))
    return f"{error.get('type', 'refused')} ({status})" + (f": {reason}" if reason else "")


@dataclass(slots=True)
class _Sorted:
    """The refused records of a write, sorted as they are built up, chunk by chunk."""

    retry: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)
    causes: Counter[str] = field(default_factory=Counter)

    def refused(self, ids: Sequence[str], cause: str) -> None:
        self.retry.update(ids)
        self.causes[cause] += len(ids)

    def answered(self, ids: Sequence[str], answer: Mapping[str, Any]) -> None:
        """The records of one bulk request that are not written: to retry, or gone."""
        if not answer.get("errors"):
            return
        items = answer.get("items") or []
        if len(items) != len(ids):  # an answer that cannot be matched: every record goes again
            self.refused(ids, "a bulk answer whose items do not match the request")
            return
        for record_id, wrapped in zip(ids, items, strict=True):
            item = next(iter(wrapped.values()))
            status = item.get("status", 500)
            if status in _WRITTEN:
                continue
            error = item.get("error") or {}
            # The deletion's write block (``kv_storage.es.retirement``); other blocks, such
            # as a full disk's, are lifted again: their records are retried.
            if refused_by_write_block(item):
                self.gone.add(record_id)
            else:
                self.refused([record_id], _item_cause(status, error))

    def result(self) -> WriteResult:
        return WriteResult(frozenset(self.retry), frozenset(self.gone), dict(self.causes))


def _clauses(where: HistoryQuery) -> list[dict[str, Any]]:
    clauses: list[dict[str, Any]] = []
    if where.keys:
        clauses.append({"terms": {"key": list(where.keys)}})
    if where.operations:
        clauses.append({"terms": {"operation": list(where.operations)}})
    bounds = {"gte": where.start_ms, "lte": where.end_ms}
    if any(bound is not None for bound in bounds.values()):
        clauses.append({"range": {"timestamp": {k: v for k, v in bounds.items() if v is not None}}})
    return clauses


def _sort(where: HistoryQuery) -> list[dict[str, Any]]:
    """The requested order, then ``_seq_no``: unique among the records of a history index
    (one shard, records written once), so that the order is total and paging by
    ``search_after`` neither skips nor repeats a record. ``unmapped_type`` lets a storage with
    no history index yet sort (and find nothing)."""
    return [
        *(
            {field: {"order": "desc" if descending else "asc", "unmapped_type": "keyword"}}
            for field, descending in where.sort or (("timestamp", False),)
        ),
        {"_seq_no": {"order": "asc"}},
    ]


@dataclass(frozen=True, slots=True)
class HistoryPage:
    total: int
    items: list[dict[str, Any]]
    last_sort: list[Any] | None = None
    """The sort values of the last item: where the next batch of a scroll begins."""
    seq_no_bound: int | None = None
    """The highest ``_seq_no`` among the matches when a scroll began (``None``: none)."""


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

    async def write(self, batch: Sequence[tuple[str, HistoryRecord]]) -> WriteResult:
        """Writes records of any storages; answers which were refused, and of what kind.

        The batch goes in as few bulk requests as fit ``max_bulk_bytes`` each, their bodies
        built as NDJSON bytes: two values of many megabytes in one request could pass
        Elasticsearch's ``http.max_content_length`` and fail the whole batch on every attempt,
        healthy records with it. A request that Elasticsearch refuses as a whole fails only
        its own records; only when every record was refused that way, or Elasticsearch gave
        no answer, is the write a failure as a whole (``WriteFailedError``), which pauses the
        writer.

        A record refused by a write block belongs to a deleted storage (``gone``: never
        retried); any other refusal may pass (``retry``), and its cause goes to the log.
        """
        if not batch:
            return WriteResult()
        # Its own timeout: a request of max_bulk_bytes to a busy node may take longer than the
        # API's requests, and nobody waits for it.
        client = self._client.options(request_timeout=self._bulk_timeout_s)
        outcome = _Sorted()
        refused: list[ApiError] = []
        for ids, body in self._chunks(batch):
            try:
                answer = await client.bulk(operations=as_sent(body), filter_path=BULK_ANSWER)
            except ApiError as error:  # this request refused as a whole (too large, overloaded)
                refused.append(error)
                outcome.refused(ids, f"the bulk request refused: {without_values(describe(error))}")
                continue
            except Exception as error:  # no answer at all (unreachable, timed out)
                if is_elasticsearch_error(error):
                    raise WriteFailedError(describe(error)) from error
                raise
            outcome.answered(ids, answer.body)
        if refused and len(outcome.retry) == len(batch):
            raise WriteFailedError(describe(refused[0])) from refused[0]
        return outcome.result()

    def _chunks(
        self, batch: Sequence[tuple[str, HistoryRecord]]
    ) -> Iterator[tuple[list[str], bytes]]:
        """Record ids and NDJSON bodies of at most ``max_bulk_bytes`` (a larger record alone).

        Created, never overwritten: a record whose write is retried after its first attempt
        landed (the answer was lost) keeps the place (_seq_no) a scroll may have passed."""
        ids: list[str] = []
        lines: list[bytes] = []
        size = 0
        for record_id, record in batch:
            placement = place(self._names, Location(record.storage_id, Layout(record.layout)))
            target = {"_index": placement.history_index, "_id": record_id}
            if placement.routing is not None:
                target["routing"] = placement.routing
            action = orjson.dumps({"create": target})
            source = orjson.dumps(
                placement.tagged(
                    {
                        "key": record.key,
                        "value": record.value,
                        "operation": record.operation.value,
                        "timestamp": record.timestamp_ms,
                    }
                )
            )
            length = len(action) + len(source) + 2
            if ids and size + length > self._max_bulk_bytes:
                yield ids, b"".join(lines)
                ids, lines, size = [], [], 0
            ids.append(record_id)
            lines += (action, b"\n", source, b"\n")
            size += length
        if ids:
            yield ids, b"".join(lines)

    async def search(
        self, storage: Location, where: HistoryQuery, *, offset: int, size: int
    ) -> HistoryPage:
        """A page of ``size`` records from ``offset`` (at most 10,000 records deep)."""
        try:
            return await self._search(storage, where, size=size, from_=offset)
        except BadRequestError as error:
            window = _result_window(error)
            if window is None:
                raise
            raise BeyondResultWindowError(window) from None

    async def first_batch(
        self, storage: Location, where: HistoryQuery, *, size: int
    ) -> HistoryPage:
        """The first batch of a scroll, with the bound that keeps later records out of it."""
        return await self._search(
            storage, where, size=size, aggs={"seq_no_bound": {"max": {"field": "_seq_no"}}}
        )

    async def next_batch(
        self,
        storage: Location,
        where: HistoryQuery,
        *,
        size: int,
        after: list[Any],
        seq_no_bound: int,
    ) -> HistoryPage:
        """The batch after the record whose sort values are ``after``; nothing newer than the
        scroll's beginning. No context is held in Elasticsearch between batches. (``_seq_no``
        is a shard's: a storage's records are all on one shard, in either layout.)"""
        return await self._search(
            storage,
            where,
            {"range": {"_seq_no": {"lte": seq_no_bound}}},
            size=size,
            search_after=after,
            track_total_hits=False,
        )

    async def _search(
        self,
        storage: Location,
        where: HistoryQuery,
        *clauses: Mapping[str, Any],
        size: int,
        **options: Any,
    ) -> HistoryPage:
        placement = place(self._names, storage)
        index = placement.history_index
        answer = await self._when_started(
            index,
            lambda: self._client.search(
                query=placement.query(*_clauses(where), *clauses),
                sort=_sort(where),
                size=size,
                ignore_unavailable=True,
                **placement.search_options(index),
                **{"track_total_hits": True, **options},
            ),
        )
        return _page(answer, index) if answer is not None else HistoryPage(total=0, items=[])

    async def _when_started(
        self, index: str, search: Callable[[], Awaitable[ObjectApiResponse[Any]]]
    ) -> ObjectApiResponse[Any] | None:
        """A history index is created by its first record's write; a search that comes while
        its shard is still starting fails as a whole (503). Wait for the shard and search
        again; if it is still starting after that (a busy node), the index has nothing to
        show yet: ``None``, as if the search had come just before the write. A shard that
        is not starting but failed stays a failure."""
        for _ in range(_STARTING_SHARD_ATTEMPTS):
            try:
                return await search()
            except ApiError as error:
                if error.meta.status != 503:
                    raise
                failure = error
            health = await self._client.options(ignore_status=408).cluster.health(
                index=index, wait_for_status="yellow", timeout="2s"
            )
        if health.get("initializing_shards", 0) > 0:
            return None
        raise failure


def _result_window(error: BadRequestError) -> int | None:
    """The window Elasticsearch names when it refuses a page beyond it, else ``None``."""
    text = str(error)
    if "result window is too large" not in text.lower():
        return None
    marker = "less than or equal to: ["
    window = text.split(marker, 1)[1].split("]", 1)[0] if marker in text else ""
    return int(window) if window.isdigit() else 10_000


def _page(answer: ObjectApiResponse[Any], index: str) -> HistoryPage:
    hits = answer["hits"]
    total = hits.get("total")
    total = total["value"] if isinstance(total, Mapping) else total
    found = hits["hits"]
    foreign = {hit.get("_index") for hit in found} - {index}
    if foreign:
        # Only an alias named like the history index could do this: never hand such records out.
        raise HistoryIndexError(f"a search of {index} answered records of {sorted(foreign)}")
    items = [
        {
            "key": source.get("key"),
            "value": source.get("value"),
            "operation": source.get("operation"),
            "timestamp": source.get("timestamp"),
        }
        for source in (hit.get("_source", {}) for hit in found)
    ]
    bound = answer.get("aggregations", {}).get("seq_no_bound", {}).get("value")
    return HistoryPage(
        total=int(total) if total is not None else 0,
        items=items,
        last_sort=found[-1].get("sort") if found else None,
        seq_no_bound=int(bound) if bound is not None else None,
    )
