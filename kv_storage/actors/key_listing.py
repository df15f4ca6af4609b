"""The key listing actor: a storage's keys by prefix, in pages.

A page of a migrated storage is one search on the ``key`` field (``kv_storage.es.keys``). A
storage whose data may still lack the field (an upgraded deployment before ``kv-storage
init --migrate`` reached it) is answered from a full scan filtered here: the same page,
slower. The actor owns what it learnt of the migration: a storage found migrated stays so; a
storage found not migrated is asked about again after ``recheck_s``. Full scans hold a scroll
context each, so at most ``max_open_scans`` run at once (more answer 503).
"""

import asyncio
from dataclasses import dataclass

from kv_storage.actors.base import Actor, Ask
from kv_storage.errors import ServiceUnavailableError
from kv_storage.es.data import DataStore
from kv_storage.es.keys import KeyIndex, KeyPage, KeyRange, filtered
from kv_storage.model import Storage

_SCAN_RETRY_AFTER_S = 1


@dataclass(frozen=True, slots=True)
class ListKeyPage(Ask[KeyPage]):
    storage: Storage
    """Authorised by its secret (the handlers' access check)."""
    where: KeyRange
    limit: int


class KeyListingActor(Actor[ListKeyPage]):
    def __init__(
        self, *, keys: KeyIndex, data: DataStore, max_open_scans: int, recheck_s: float
    ) -> None:
        super().__init__(name="key-listing", max_concurrency=1024)
        self._keys = keys
        self._data = data
        self._max_open_scans = max_open_scans
        self._recheck_s = recheck_s
        self._migrated: set[str] = set()
        self._not_migrated_until: dict[str, float] = {}
        self._open_scans = 0

    async def handle(self, message: ListKeyPage) -> KeyPage:
        storage_id = message.storage.id
        if await self._is_migrated(storage_id):
            return await self._keys.page(storage_id, message.where, limit=message.limit)
        if self._open_scans >= self._max_open_scans:
            raise ServiceUnavailableError(
                f"{self._open_scans} key listings of storages not migrated yet are scanning "
                "on this instance, the most it runs at once (elasticsearch.scroll.max-open); "
                "try again shortly",
                headers={"Retry-After": str(_SCAN_RETRY_AFTER_S)},
            )
        self._open_scans += 1
        try:
            pages = self._data.key_pages(storage_id)
            try:
                return await filtered(pages, message.where, limit=message.limit)
            finally:
                await pages.aclose()
        finally:
            self._open_scans -= 1

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
