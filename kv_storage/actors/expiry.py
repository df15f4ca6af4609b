"""The expiry actor: every interval, if it holds the lease, marks expired TEMP storages
deleted and removes the indices of deleted storages.

Expired TEMP storages already answer 404 as soon as they expire; this work frees their space
and records the deletion in the registry. Of many instances only the lease holder works; the
others take over when it stops renewing (it stopped, or died).
"""

import asyncio
import logging
from dataclasses import dataclass

from kv_storage.actors.base import Actor
from kv_storage.actors.lifecycle import ExpireTemp, LifecycleActor
from kv_storage.es.errors import describe, is_elasticsearch_error
from kv_storage.es.lease import Lease
from kv_storage.es.registry import Registry, now_ms

logger = logging.getLogger(__name__)

_BATCH = 500
_SWEEP_OVERLAP_MS = 60_000
"""Deleted storages are swept again for this long, in case a deletion's index removal failed."""


@dataclass(frozen=True, slots=True)
class RunNow:
    pass


@dataclass(frozen=True, slots=True)
class ExpiryStats:
    holds_lease: bool
    runs: int
    expired: int


@dataclass(frozen=True, slots=True)
class GetExpiryStats:
    pass


class ExpiryActor(Actor[RunNow | GetExpiryStats]):
    def __init__(
        self, *, registry: Registry, lifecycle: LifecycleActor, lease: Lease, interval_s: float
    ) -> None:
        super().__init__(name="expiry")
        self._registry = registry
        self._lifecycle = lifecycle
        self._lease = lease
        self._interval_s = interval_s
        self._next_run: float | None = None
        self._swept_until_ms = 0
        self._runs = self._expired = 0

    async def handle(self, message: RunNow | GetExpiryStats) -> ExpiryStats | None:
        match message:
            case RunNow():
                await self._work()
            case GetExpiryStats():
                return ExpiryStats(self._lease.held, self._runs, self._expired)
        return None

    def next_deadline(self) -> float | None:
        if self._next_run is None:
            self._next_run = asyncio.get_running_loop().time() + self._interval_s
        return self._next_run

    async def on_deadline(self) -> None:
        await self._work()

    async def stop(self, timeout_s: float = 10.0) -> None:
        await super().stop(timeout_s)
        try:
            await self._lease.release()
        except Exception as error:
            logger.warning("expiry: releasing the lease failed: %s", _describe(error))

    async def _work(self) -> None:
        self._next_run = asyncio.get_running_loop().time() + self._interval_s
        try:
            if not await self._lease.acquire():
                return
            self._runs += 1
            await self._expire()
            await self._sweep()
        except Exception as error:
            logger.warning(
                "expiry: run failed, next in %g s: %s", self._interval_s, _describe(error)
            )

    async def _expire(self) -> None:
        now = now_ms()
        for entry in await self._registry.expired_temp(now, size=_BATCH):
            if await self._lifecycle.ask(ExpireTemp(entry.id, now)) is not None:
                self._expired += 1
                logger.info("expiry: TEMP storage %s expired and was deleted", entry.id)

    async def _sweep(self) -> None:
        started = now_ms()
        since = max(0, self._swept_until_ms - _SWEEP_OVERLAP_MS)
        for entry in await self._registry.deleted_since(since, size=_BATCH):
            await self._lifecycle.drop_indices(entry.id)
        self._swept_until_ms = started


def _describe(error: BaseException) -> str:
    return describe(error) if is_elasticsearch_error(error) else repr(error)
