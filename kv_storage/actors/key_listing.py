"""The key listing actor: a storage's keys by prefix, in pages.

A page of a migrated storage is one search on the ``key`` field (``kv_storage.es.keys``).
Searches go in batches, as the storage actor's reads do (``kv_storage.actors.batching``):
one that arrives while a slot is free goes at once, alone; while every slot is taken they
wait, and go together as one ``_msearch`` when a batch is answered. Many clients paging at
once so cost Elasticsearch few requests, and a lone client's page costs what a search does.

A storage whose data may still lack the field (an upgraded deployment before ``kv-storage
init --migrate`` reached it) is answered from a full scan filtered here: the same page,
slower. The actor owns what it learnt of the migration: a storage found migrated stays so; a
storage found not migrated is asked about again after ``recheck_s``. Full scans hold a scroll
context each: they take slots of the instance's pool of open scans, which lists and clears
share (more than it holds answer 503, more than a storage's share 429).
"""

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TypeVar, cast

from kv_storage.actors.batch_runner import BatchRunner
from kv_storage.actors.batching import Kind
from kv_storage.actors.shares import SharedPool
from kv_storage.config import BatchLimits
from kv_storage.es.data import DataStore
from kv_storage.es.errors import ItemError
from kv_storage.es.keys import (
    KeyIndex,
    KeyPage,
    KeyRange,
    KeySearch,
    KeySearchOutcome,
    filtered,
    page_of,
    page_size,
)
from kv_storage.model import Layout, Location, Storage
from pipeline.mailbox import Actor, Ask

AnswerT = TypeVar("AnswerT")


@dataclass(frozen=True, slots=True)
class ListKeyPage(Ask[KeyPage]):
    storage: Storage
    """Authorised by its secret (the handlers' access check)."""
    where: KeyRange
    limit: int


class KeyListingActor(Actor[ListKeyPage]):
    def __init__(
        self,
        *,
        keys: KeyIndex,
        data: DataStore,
        scans: SharedPool,
        recheck_s: float,
        batch_limits: BatchLimits,
    ) -> None:
        """``scans``: the instance's pool of open scans, the storage actor's too (its
        refusals are counted there)."""
        super().__init__(name="key-listing")
        self._keys = keys
        self._data = data
        self._recheck_s = recheck_s
        self._migrated: set[str] = set()
        self._not_migrated_until: dict[str, float] = {}
        self._scans = scans
        self._batches = BatchRunner[bytes, KeySearchOutcome](
            batch_limits, {Kind.READ: self._keys.search}, name="key-listing"
        )

    async def handle(self, message: ListKeyPage) -> KeyPage:
        location = message.storage.location
        storage_id = location.storage_id
        if location.layout is Layout.SHARED or await self._is_migrated(storage_id):
            return await self._page(location, message.where, message.limit)
        self._scans.take(storage_id)
        try:
            pages = self._data.key_pages(location)
            try:
                return await filtered(pages, message.where, limit=message.limit)
            finally:
                await pages.aclose()
        finally:
            self._scans.give_back(storage_id)

    @property
    def refused_for_share(self) -> int:
        """Pages refused because their storage held its share (429); the scans' refusals
        are the storage actor's count (one pool)."""
        return self._batches.refused

    def answer_at_once(self, message: Ask[AnswerT]) -> Awaitable[AnswerT] | None:
        """Every page is a plain call in the caller's task: a search only adds to the batches
        (without awaiting) and waits for the outcome; a full scan of a storage not migrated
        takes a slot of the scans and reads. What they change (which storages are migrated)
        is changed without awaiting: nothing here needs the mailbox to serialise it."""
        return cast(Awaitable[AnswerT], self.handle(cast(ListKeyPage, message)))

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Pages asked for are answered first (within ``timeout_s``); searches still out then
        are cancelled, which fails their pages."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        await super().stop(timeout_s)
        await self._batches.drain(deadline)

    async def _page(self, location: Location, where: KeyRange, limit: int) -> KeyPage:
        keys = await self._search(KeySearch(location, where, page_size(limit)))
        page = page_of(keys, limit)
        if page is None:  # as many keys as one search answers: does any follow?
            following = await self._search(KeySearch(location, replace(where, after=keys[-1]), 1))
            page = KeyPage(keys, more=bool(following))
        return page

    async def _search(self, search: KeySearch) -> list[str]:
        """The keys of ``search``, searched in the next batch. A search has no keys to order
        by; it counts the keys it asks for against the batch's bound."""
        encoded = self._keys.encode(search)
        keys = await self._batches.submit(
            Kind.READ,
            search.location.storage_id,
            frozenset(),
            encoded,
            size=len(encoded),
            weight=search.size,
        )
        if isinstance(keys, ItemError):
            raise keys
        return keys

    async def _is_migrated(self, storage_id: str) -> bool:
        if storage_id in self._migrated:
            return True
        now = asyncio.get_running_loop().time()
        if self._not_migrated_until.get(storage_id, 0.0) > now:
            return False
        if await self._keys.migrated(storage_id):
            self._migrated.add(storage_id)
            self._not_migrated_until.pop(storage_id, None)
            return True
        self._not_migrated_until[storage_id] = now + self._recheck_s
        return False
