"""A deployment of the original service, read over plain HTTP: its registry, and each
storage's data and history indices as the original's ``init.sh`` and code made them
(docs/operations.md, "Coming from the original").

Plain HTTP (``aiohttp``), not the Elasticsearch client: the original ran Elasticsearch 6.2,
whose answers the 8.x client refuses (it asks for a compatible-with-8 media type), and whose
indices Elasticsearch 8 cannot open; a search with a scroll is answered alike by 6.x to 8.x.
What the original wrote (SPEC-NOTES, "What a deployment of the original holds"): registry
documents with the storage's id as ``_id``; data documents with the key as ``_id`` and one
field, ``value``; history documents with automatic ids and ``key``, ``value``, ``timestamp``,
``operation``.
"""

from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from kv_storage.es.names import DATA_TEMPLATE, HISTORY_TEMPLATE, REGISTRY

SCROLL_KEEP_ALIVE = "2m"


class SourceError(Exception):
    """The source cluster answered something other than what a search asks for."""


class OriginalDeployment:
    def __init__(
        self, session: aiohttp.ClientSession, url: str, *, prefix: str = "", page_size: int
    ) -> None:
        self._session = session
        self._url = url.rstrip("/")
        self._prefix = prefix
        self.page_size = page_size

    async def storages(self) -> AsyncGenerator[list[tuple[str, dict[str, Any]]], None]:
        """The registry's documents (``_id``, source), a page at a time, deleted ones too."""
        async for hits in self._pages(f"{self._prefix}{REGISTRY}", required=True):
            yield [(hit["_id"], dict(hit.get("_source") or {})) for hit in hits]

    async def key_pages(self, storage_id: str) -> AsyncGenerator[list[tuple[str, Any]], None]:
        index = f"{self._prefix}{DATA_TEMPLATE}-{storage_id}"
        async for hits in self._pages(index):
            yield [(str(hit["_id"]), (hit.get("_source") or {}).get("value")) for hit in hits]

    async def record_pages(
        self, storage_id: str
    ) -> AsyncGenerator[list[tuple[str, dict[str, Any]]], None]:
        index = f"{self._prefix}{HISTORY_TEMPLATE}-{storage_id}"
        async for hits in self._pages(index):
            yield [
                (
                    str(hit["_id"]),
                    {
                        name: (hit.get("_source") or {}).get(name)
                        for name in ("key", "value", "operation", "timestamp")
                    },
                )
                for hit in hits
            ]

    async def _pages(
        self, index: str, *, required: bool = False
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Every document of ``index`` by a scroll; a missing index has none (a storage that
        never had a key or a record), unless ``required``."""
        answer = await self._post(
            f"/{quote(index, safe='')}/_search?scroll={SCROLL_KEEP_ALIVE}",
            {"size": self.page_size, "sort": ["_doc"]},
            missing_ok=not required,
        )
        if answer is None:
            return
        scroll_id = answer.get("_scroll_id")
        try:
            while hits := answer["hits"]["hits"]:
                yield hits
                answer = await self._post(
                    "/_search/scroll", {"scroll": SCROLL_KEEP_ALIVE, "scroll_id": scroll_id}
                ) or {"hits": {"hits": []}}
                scroll_id = answer.get("_scroll_id", scroll_id)
        finally:
            if scroll_id:
                async with self._session.delete(
                    f"{self._url}/_search/scroll", json={"scroll_id": scroll_id}
                ):
                    pass

    async def _post(
        self, path: str, body: Mapping[str, Any], *, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        async with self._session.post(f"{self._url}{path}", json=body) as response:
            if response.status == 404 and missing_ok:
                return None
            if response.status != 200:
                text = (await response.text())[:300]
                raise SourceError(f"{self._url}{path.split('?')[0]}: {response.status} {text}")
            answer: dict[str, Any] = await response.json()
            return answer
