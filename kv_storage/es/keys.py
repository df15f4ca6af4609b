"""Keys of a storage by prefix, in pages: one search each, on the ``key`` field.

Elasticsearch refuses to sort or prefix-search ``_id``, so data documents carry the key in a
``keyword`` field too (layout version 2). A keyword sorts by the bytes of its UTF-8, which is
the order this API promises; ``search_after`` on it goes on strictly after a key, whatever
the storage's size, and holds no context in Elasticsearch.

Documents written before the field existed lack it until ``kv-storage init --migrate`` has
filled it in (``kv_storage.es.migration``); for a storage not migrated yet, ``filtered``
answers the same pages from a full scan, filtered here.
"""

from collections.abc import AsyncIterable
from dataclasses import dataclass, replace
from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from kv_storage.es.migration import migrated
from kv_storage.es.names import IndexNames

_MAX_WINDOW = 10_000
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


class KeyIndex:
    def __init__(self, client: AsyncElasticsearch, names: IndexNames) -> None:
        self._client = client
        self._names = names

    async def page(self, storage_id: str, where: KeyRange, *, limit: int) -> KeyPage:
        """At most ``limit`` keys of ``where``, in order: one search (two for a page of
        10,000, the most one search may answer, to learn whether more follow)."""
        keys = await self._search(storage_id, where, size=min(limit + 1, _MAX_WINDOW))
        if len(keys) > limit:
            return KeyPage(keys[:limit], more=True)
        if len(keys) == limit == _MAX_WINDOW:
            following = replace(where, after=keys[-1])
            return KeyPage(keys, more=bool(await self._search(storage_id, following, size=1)))
        return KeyPage(keys, more=False)

    async def _search(self, storage_id: str, where: KeyRange, *, size: int) -> list[str]:
        clauses: list[dict[str, Any]] = []
        if where.prefix:
            clauses.append({"prefix": {"key": where.prefix}})
        options: dict[str, Any] = {}
        if where.after is not None:
            options["search_after"] = [where.after]
        try:
            answer = await self._client.search(
                index=self._names.data(storage_id),
                query={"bool": {"filter": clauses}},
                sort=[{"key": {"order": "asc", "unmapped_type": "keyword"}}],
                size=size,
                source=False,
                track_total_hits=False,
                **options,
            )
        except NotFoundError:  # never written: no keys
            return []
        return [hit["_id"] for hit in answer["hits"]["hits"]]

    async def migrated(self, storage_id: str) -> bool:
        """Whether every data document of the storage carries the key field."""
        return await migrated(self._client, self._names, storage_id)


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
