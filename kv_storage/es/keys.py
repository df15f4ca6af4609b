"""Keys of a storage by prefix, in pages: one search each, on the ``key`` field; searches
made at the same time go to Elasticsearch as one ``_msearch`` (the key listing actor decides
which).

Elasticsearch refuses to sort or prefix-search ``_id``, so data documents carry the key in a
``keyword`` field too (layout version 2). A keyword sorts by the bytes of its UTF-8, which is
the order this API promises; ``search_after`` on it goes on strictly after a key, whatever
the storage's size, and holds no context in Elasticsearch.

Documents written before the field existed lack it until ``kv-storage init --migrate`` has
filled it in (``kv_storage.es.migration``); for a storage not migrated yet, ``filtered``
answers the same pages from a full scan, filtered here.
"""

from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from elasticsearch import AsyncElasticsearch

from kv_storage.es.batches import as_sent
from kv_storage.es.errors import ItemError
from kv_storage.es.migration import migrated
from kv_storage.es.names import IndexNames
from kv_storage.es.placement import place
from kv_storage.model import Location

MAX_WINDOW = 10_000
"""Elasticsearch's default ``index.max_result_window``: the most one search answers."""


@dataclass(frozen=True, slots=True)
class KeyPage:
    keys: list[str]
    more: bool
    """Keys follow the last one of this page."""


@dataclass(frozen=True, slots=True)
class KeyRange:
    prefix: str = ""
    after: str | None = None
    """Only keys strictly after this one (in the bytes of their UTF-8)."""

    def holds(self, key: str) -> bool:
        if not key.startswith(self.prefix):
            return False
        return self.after is None or key.encode() > self.after.encode()


@dataclass(frozen=True, slots=True)
class KeySearch:
    """One search of a storage's keys: at most ``size`` keys of ``where``, in order."""

    location: Location
    where: KeyRange
    size: int


_ANSWERED = ["responses.status", "responses.error", "responses.hits.hits.sort"]
"""What the service reads of an ``_msearch`` answer: each search's status (which is always
there, so the answers keep their places), its error, and the sort value of each hit, which is
its key; not the index name and score of every hit, which would cost more to parse than the
rest."""

KeySearchOutcome = list[str] | ItemError
"""A search's keys, or what Elasticsearch said when it refused that search alone."""


def page_size(limit: int) -> int:
    """The keys to ask for a page of ``limit``: one more, to learn whether more follow (a
    search answers at most 10,000)."""
    return min(limit + 1, MAX_WINDOW)


def page_of(keys: list[str], limit: int) -> KeyPage | None:
    """The page that the keys of a search of ``page_size(limit)`` make; ``None`` when that
    search could not tell whether more follow (a page of 10,000: ask for one more key)."""
    if len(keys) > limit:
        return KeyPage(keys[:limit], more=True)
    if len(keys) == limit == MAX_WINDOW:
        return None
    return KeyPage(keys, more=False)


class KeyIndex:
    def __init__(self, client: AsyncElasticsearch, names: IndexNames) -> None:
        self._client = client
        self._names = names

    def encode(self, search: KeySearch) -> bytes:
        """``search``'s part of an ``_msearch`` body (two lines of NDJSON), encoded once, when
        the page is asked for; its length counts against the batches' bound."""
        header, body = self._lines(search)
        return orjson.dumps(header) + b"\n" + orjson.dumps(body) + b"\n"

    async def search(self, encoded: Sequence[bytes]) -> list[KeySearchOutcome]:
        """Every search of ``encoded`` (each from ``encode``) as one ``_msearch``: each gets its
        own outcome (a storage never written has no keys); a failure of the request as a whole
        raises."""
        answer = await self._client.msearch(
            searches=as_sent(b"".join(encoded)), filter_path=_ANSWERED
        )
        responses = answer["responses"]
        if len(responses) != len(encoded):
            raise ItemError(
                {"error": f"_msearch answered {len(responses)} of {len(encoded)} searches"},
                what="_msearch answer",
            )
        return [_outcome(response) for response in responses]

    def _lines(self, search: KeySearch) -> tuple[dict[str, Any], dict[str, Any]]:
        where = search.where
        # Only documents that carry the key field: one without it (written by an instance
        # older than layout version 2) has no place in the order, nor a sort value to answer.
        matching = (
            {"prefix": {"key": where.prefix}} if where.prefix else {"exists": {"field": "key"}}
        )
        placement = place(self._names, search.location)
        query: dict[str, Any] = {
            "query": placement.query(matching),
            "sort": [{"key": {"order": "asc", "unmapped_type": "keyword"}}],
            "size": search.size,
            # The keys come back as the hits' sort values, which the query phase already read
            # from the field's doc values: no stored field (_id, _source) is loaded per hit,
            # which was a third of what a page cost Elasticsearch.
            "stored_fields": "_none_",
            "track_total_hits": False,
        }
        if where.after is not None:
            query["search_after"] = [where.after]
        return placement.search_options(placement.data_index), query

    async def migrated(self, storage_id: str) -> bool:
        """Whether every data document of the storage carries the key field."""
        return await migrated(self._client, self._names, storage_id)


def _outcome(response: Mapping[str, Any]) -> KeySearchOutcome:
    error = response.get("error")
    if error is None:
        return [hit["sort"][0] for hit in response.get("hits", {}).get("hits", ())]
    if isinstance(error, Mapping) and error.get("type") == "index_not_found_exception":
        return []  # never written: no keys
    return ItemError(response, what="search")


async def filtered(pages: AsyncIterable[list[str]], where: KeyRange, *, limit: int) -> KeyPage:
    """The page ``KeyIndex.page`` would answer, from every key of the storage (a storage whose
    documents may lack the key field): all are read, the first ``limit`` + 1 are kept."""
    kept: list[bytes] = []
    async for page in pages:
        kept.extend(key.encode() for key in page if where.holds(key))
        if len(kept) > 2 * (limit + 1):
            kept = sorted(kept)[: limit + 1]
    kept.sort()
    return KeyPage([key.decode() for key in kept[:limit]], more=len(kept) > limit)
