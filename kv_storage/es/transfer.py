"""A storage's documents read out and written back, for ``kv-storage export`` and ``import``
(and the move between layouts, ``es.moving``): scans of its data and history, a page at a
time, and bulk writes that can be done again without harm.

Writing again is what makes an import resumable: a page cut short (the process killed, the
node gone) is sent again whole. Keys are written with ``index`` (``overwrite``) or ``create``
(``skip``: a key the storage has keeps its value); under ``fail`` the page's keys are read
first, and one the storage holds with another value stops the import before the page is
written, while one holding the very value imported (an earlier attempt wrote it) is no
conflict. History records keep their ids and are created: one already there is a record an
earlier attempt imported.
"""

import contextlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import orjson
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_scan

from kv_storage.es.batches import BULK_ANSWER, as_sent
from kv_storage.es.errors import ItemError
from kv_storage.es.placement import STORAGE_FIELD, Placement


class OnConflict(StrEnum):
    """What an import does with a key the storage already holds with another value."""

    FAIL = "fail"
    SKIP = "skip"
    OVERWRITE = "overwrite"


@dataclass(frozen=True, slots=True)
class KeysWritten:
    written: int
    skipped: int = 0
    """Keys the storage held already (``skip``), left as they were."""


@dataclass(frozen=True, slots=True)
class RecordsWritten:
    created: int
    present: int
    """Records with an id the storage's history holds already (an earlier attempt's)."""


class ConflictingKeysError(Exception):
    """Under ``fail``: keys the storage holds with other values; nothing of their page was
    written."""

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__(f"{len(keys)} key(s) exist with other values, first {keys[0]!r}")
        self.keys = list(keys)


async def document_pages(
    client: AsyncElasticsearch, where: Placement, index: str, *, page_size: int
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """Every document of the storage at ``where`` in ``index`` (after a refresh), by a scroll,
    ``page_size`` at a time."""
    await client.indices.refresh(index=index, ignore_unavailable=True)
    options = where.search_options(index)
    hits = cast(
        AsyncGenerator[dict[str, Any], None],
        async_scan(
            client,
            query={"query": where.query(), "sort": ["_doc"]},
            size=page_size,
            clear_scroll=True,
            ignore_unavailable=True,
            **options,
        ),
    )
    page: list[dict[str, Any]] = []
    async with contextlib.aclosing(hits):
        async for hit in hits:
            page.append(hit)
            if len(page) >= page_size:
                yield page
                page = []
    if page:
        yield page


def key_of(hit: Mapping[str, Any]) -> str:
    """A data document's key: its ``key`` field, or its id if written before layout version 2
    (per-storage only: a shared document's id is a digest)."""
    return str((hit.get("_source") or {}).get("key", hit["_id"]))


def record_of(hit: Mapping[str, Any]) -> dict[str, Any]:
    """A history document's record, without the shared layout's storage field."""
    source = dict(hit.get("_source") or {})
    source.pop(STORAGE_FIELD, None)
    return source


class StorageTransfer:
    def __init__(self, client: AsyncElasticsearch, *, page_size: int) -> None:
        self._client = client
        self.page_size = page_size

    async def key_pages(self, where: Placement) -> AsyncGenerator[list[tuple[str, Any]], None]:
        """The storage's keys with their values, a page at a time."""
        async for hits in document_pages(
            self._client, where, where.data_index, page_size=self.page_size
        ):
            yield [(key_of(hit), (hit.get("_source") or {}).get("value")) for hit in hits]

    async def record_pages(
        self, where: Placement
    ) -> AsyncGenerator[list[tuple[str, dict[str, Any]]], None]:
        """The storage's history records with their ids, a page at a time."""
        async for hits in document_pages(
            self._client, where, where.history_index, page_size=self.page_size
        ):
            yield [(hit["_id"], record_of(hit)) for hit in hits]

    async def write_keys(
        self, where: Placement, pairs: Sequence[tuple[str, str]], on_conflict: OnConflict
    ) -> KeysWritten:
        if not pairs:
            return KeysWritten(0)
        if on_conflict is OnConflict.FAIL:
            await self._refuse_conflicts(where, pairs)
        action = "create" if on_conflict is OnConflict.SKIP else "index"
        lines: list[bytes] = []
        for key, value in pairs:
            target = {"_index": where.data_index, "_id": where.data_id(key)}
            if where.routing is not None:
                target["routing"] = where.routing
            lines += [
                orjson.dumps({action: target}),
                orjson.dumps(where.tagged({"key": key, "value": value})),
            ]
        statuses = await self._bulk(lines, allowed=frozenset({200, 201, 409}))
        skipped = statuses.count(409)
        return KeysWritten(len(statuses) - skipped, skipped)

    async def _refuse_conflicts(self, where: Placement, pairs: Sequence[tuple[str, str]]) -> None:
        ids = [where.data_id(key) for key, _ in pairs]
        options: dict[str, Any] = {"routing": where.routing} if where.routing else {}
        found = await self._client.mget(
            index=where.data_index, ids=ids, realtime=True, source=["value"], **options
        )
        conflicts = [
            key
            for (key, value), document in zip(pairs, found["docs"], strict=True)
            if document.get("found") and (document.get("_source") or {}).get("value") != value
        ]
        if conflicts:
            raise ConflictingKeysError(conflicts)

    async def write_records(
        self, where: Placement, records: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> RecordsWritten:
        lines: list[bytes] = []
        for record_id, record in records:
            target = {"_index": where.history_index, "_id": record_id}
            if where.routing is not None:
                target["routing"] = where.routing
            lines += [orjson.dumps({"create": target}), orjson.dumps(where.tagged(record))]
        statuses = await self._bulk(lines, allowed=frozenset({201, 409}))
        present = statuses.count(409)
        return RecordsWritten(len(statuses) - present, present)

    async def refresh(self, where: Placement) -> None:
        """Makes what was written visible to searches (lists by prefix, history pages)."""
        await self._client.indices.refresh(
            index=[where.data_index, where.history_index], ignore_unavailable=True
        )

    async def _bulk(self, lines: list[bytes], *, allowed: frozenset[int]) -> list[int]:
        """Each item's status; the first item of another status fails the whole call."""
        if not lines:
            return []
        answer = await self._client.bulk(
            operations=as_sent(b"\n".join(lines) + b"\n"), filter_path=BULK_ANSWER
        )
        items = [next(iter(wrapped.values())) for wrapped in answer.body.get("items", [])]
        failed = [item for item in items if item.get("status", 500) not in allowed]
        if failed:
            raise ItemError(failed[0])
        return [int(item["status"]) for item in items]
