"""The expiry sweep: every interval, if it holds the lease, marks expired TEMP storages
deleted and removes the indices of deleted storages.

Expired TEMP storages already answer 404 as soon as they expire; this work frees their space
and records the deletion in the registry. Of many instances only the lease holder works; the
others take over when it stops renewing (it stopped, or died).
"""

import logging
from dataclasses import dataclass

from kv_storage.actors.lifecycle import ExpireTemp, LifecycleActor
from kv_storage.actors.periodic import PeriodicJob
from kv_storage.clock import now_ms
from kv_storage.config import AppConfig
from kv_storage.es.errors import describe
from kv_storage.es.history import BULK_TIMEOUT_S as HISTORY_BULK_TIMEOUT_S
from kv_storage.es.lease import Lease, Mark
from kv_storage.es.registry import Registry

logger = logging.getLogger(__name__)

_BATCH = 500
_MIN_SWEEP_OVERLAP_S = 60.0


def sweep_overlap_s(app: AppConfig) -> float:
    """How long after its deletion a storage's indices are removed again, by every sweep.

    A deleted storage's index can come back after the deletion removed it: another instance
    writes through its cached lookup until its next registry poll (``cache.update-time``),
    a request already under way ends within ``request-timeout``, and a history batch that
    left before the deletion may be retried ``retry-limit`` times, ``flush-timeout`` apart,
    each attempt taking up to its own bound (``HISTORY_BULK_TIMEOUT_S``, longer than the API's
    ``request-timeout``, which may be longer still). The overlap covers all of that, and at
    least a minute in case an index removal itself failed.
    """
    history = app.history
    attempt_s = max(HISTORY_BULK_TIMEOUT_S, app.request_timeout_s)
    late_history_s = (history.retry_limit + 1) * (history.flush_timeout_s + attempt_s)
    late_writes_s = app.cache.update_time_s + app.request_timeout_s
    return max(_MIN_SWEEP_OVERLAP_S, late_writes_s + late_history_s)


@dataclass(frozen=True, slots=True)
class ExpiryStats:
    holds_lease: bool
    runs: int
    expired: int


class ExpiryActor(PeriodicJob):
    def __init__(
        self,
        *,
        registry: Registry,
        lifecycle: LifecycleActor,
        lease: Lease,
        swept_until: Mark,
        interval_s: float,
        sweep_overlap_s: float = _MIN_SWEEP_OVERLAP_S,
    ) -> None:
        super().__init__(name="expiry", interval_s=interval_s)
        self._registry = registry
        self._lifecycle = lifecycle
        self._lease = lease
        self._swept_until = swept_until
        self._sweep_overlap_ms = int(sweep_overlap_s * 1000)
        self._swept_until_ms: int | None = None
        """How far the sweeps got; ``None`` until read from the mark the last holder left."""
        self._runs = self._expired = 0

    @property
    def stats(self) -> ExpiryStats:
        return ExpiryStats(self._lease.held, self._runs, self._expired)

    async def on_stop(self) -> None:
        try:
            await self._lease.release()
        except Exception as error:
            logger.warning("expiry: releasing the lease failed: %s", describe(error))

    async def iteration(self) -> None:
        try:
            if not await self._lease.acquire():
                self._swept_until_ms = None  # another holder sweeps on: read its mark later
                return
            self._runs += 1
            await self._expire()
            await self._sweep()
        except Exception as error:
            logger.warning(
                "expiry: run failed, next in %g s: %s", self._interval_s, describe(error)
            )

    async def _expire(self) -> None:
        now = now_ms()
        for entry in await self._registry.expired_temp(now, size=_BATCH):
            if await self._lifecycle.ask(ExpireTemp(entry.id, now)) is not None:
                self._expired += 1
                logger.info("expiry: TEMP storage %s expired and was deleted", entry.id)

    async def _sweep(self) -> None:
        """Removes the indices of storages deleted since the last sweep (less the overlap).

        How far the sweeps got is kept in the lock index, so a new lease holder (after a
        restart, or a takeover) goes on from there instead of visiting every storage ever
        deleted; where no mark exists yet, the first sweep visits them all once.
        """
        started = now_ms()
        if self._swept_until_ms is None:
            self._swept_until_ms = await self._swept_until.read() or 0
        since = max(0, self._swept_until_ms - self._sweep_overlap_ms)
        async for page in self._registry.deleted_since(since, size=_BATCH):
            for entry in page:
                await self._lifecycle.drop_indices(entry.id)
        await self._swept_until.set(started)  # only once every page was swept
        self._swept_until_ms = started
