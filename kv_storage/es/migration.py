"""``kv-storage init --migrate``: fills in the ``key`` field of data documents written before
layout version 2, so that every storage can be listed by prefix in pages.

Page by page: a search for documents without the field (their ``_seq_no`` and
``_primary_term`` with them), then one ``_bulk`` of partial updates, each conditional on the
version it read. A document written meanwhile (by a service that writes the field itself) or
deleted is left alone, so a write is never lost nor a value rolled back, and the migration can
run while the service serves. It is resumable: each round asks again for what still lacks the
field, and a storage found complete is marked done in the lock index (``key-field:<id>``), as
the expiry sweep keeps its progress; once every storage is done, so is the whole
(``key-field``), and storages created from then on need nothing.

The service reads the marks (``migrated``) to choose between paging by the field and a full
scan filtered in the service.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from kv_storage.clock import now_ms
from kv_storage.es.errors import ItemError
from kv_storage.es.lease import Mark
from kv_storage.es.names import DATA_TEMPLATE, IndexNames

_PAGE = 1000
_ALL = "key-field"


@dataclass
class Progress:
    storages: int = 0
    storages_done: int = 0
    updated: int = 0
    skipped: int = 0
    """Changed or deleted by a writer between the read and the update: left alone."""


class KeyFieldMigration:
    def __init__(self, client: AsyncElasticsearch, names: IndexNames) -> None:
        self._client = client
        self._names = names

    async def run(self, on_progress: Callable[[Progress], None] | None = None) -> Progress:
        """Every storage not marked done, then the mark of the whole."""
        progress = Progress()
        storages = await self._storages()
        progress.storages = len(storages)
        for storage_id in storages:
            if await self._mark(storage_id).read() is None:
                await self.migrate(storage_id, progress, on_progress)
            progress.storages_done += 1
            if on_progress is not None:
                on_progress(progress)
        await Mark(self._client, self._names, name=_ALL).set(now_ms())
        return progress

    async def migrate(
        self,
        storage_id: str,
        progress: Progress,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        index = self._names.data(storage_id)
        while True:
            try:
                await self._client.indices.refresh(index=index)
                answer = await self._client.search(
                    index=index,
                    query={"bool": {"must_not": [{"exists": {"field": "key"}}]}},
                    size=_PAGE,
                    source=False,
                    seq_no_primary_term=True,
                    track_total_hits=False,
                )
            except NotFoundError:
                break  # the storage was deleted meanwhile: nothing left to migrate
            hits = answer["hits"]["hits"]
            if not hits:
                break
            updated, skipped = await self._fill_in(index, hits)
            progress.updated += updated
            progress.skipped += skipped
            if on_progress is not None:
                on_progress(progress)
        await self._mark(storage_id).set(now_ms())

    async def _fill_in(self, index: str, hits: list[dict[str, Any]]) -> tuple[int, int]:
        operations: list[dict[str, Any]] = []
        for hit in hits:
            operations.append(
                {
                    "update": {
                        "_index": index,
                        "_id": hit["_id"],
                        "if_seq_no": hit["_seq_no"],
                        "if_primary_term": hit["_primary_term"],
                    }
                }
            )
            operations.append({"doc": {"key": hit["_id"]}})
        answer = await self._client.bulk(
            operations=operations, filter_path=["items.*.status", "items.*.error", "items.*._id"]
        )
        skipped = 0
        for item in answer.get("items", []):
            result = next(iter(item.values()))
            status = result.get("status", 200)
            if status in (404, 409):  # deleted, or written anew (with the field) meanwhile
                skipped += 1
            elif status >= 300:
                raise ItemError(result)
        return len(hits) - skipped, skipped

    async def _storages(self) -> list[str]:
        """The storages that have a data index."""
        prefix = f"{self._names.prefix}{DATA_TEMPLATE}-"
        found = await self._client.indices.get(
            index=f"{prefix}*", expand_wildcards="open", allow_no_indices=True
        )
        return sorted(name.removeprefix(prefix) for name in found)

    def _mark(self, storage_id: str) -> Mark:
        return Mark(self._client, self._names, name=f"{_ALL}:{storage_id}")


async def migrated(client: AsyncElasticsearch, names: IndexNames, storage_id: str) -> bool:
    """Whether every data document of the storage carries the key field: the whole migration
    is done (or was never needed), or this storage's part of it."""
    for name in (_ALL, f"{_ALL}:{storage_id}"):
        if await Mark(client, names, name=name).read() is not None:
            return True
    return False


async def needs_migration(client: AsyncElasticsearch, names: IndexNames) -> bool:
    """For ``init``: whether stored data may lack the key field. A cluster without data
    indices (a new deployment) has nothing to migrate, which is marked so."""
    marked = Mark(client, names, name=_ALL)
    if await marked.read() is not None:
        return False
    prefix = f"{names.prefix}{DATA_TEMPLATE}-"
    found = await client.indices.get(
        index=f"{prefix}*", expand_wildcards="all", allow_no_indices=True
    )
    if found:
        return True
    await marked.set(now_ms())
    return False
