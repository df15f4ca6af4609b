"""The expiry sweep: every interval, if it holds the lease, marks expired TEMP storages
deleted and removes the indices of deleted storages.

Expired TEMP storages already answer 404 as soon as they expire (by Elasticsearch's clock,
on every instance); this work frees their space and records the deletion in the registry. Of
many instances only the lease holder works; the others take over when it stops renewing (it
stopped, or died).

Deletions are found by the registry's sequence numbers, not by the deleter's clock
(``kv_storage.es.registry_changes``). A deleted storage's indices were closed to writes at its
deletion (``kv_storage.es.retirement``); the sweep closes those of deletions made elsewhere
(the CloudStack plugin), and removes them ``drop_delay_s`` after it first saw the deletion,
once no late write can come any more: so a late write is refused, never re-creates an
index, and no write that was answered 200 is removed by a sweep. How far the sweeps got is
kept in the lock index, per registry shard, so that a new lease holder goes on from there
instead of visiting every deletion ever.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kv_storage.actors.lifecycle import ExpireTemp, LifecycleActor
from kv_storage.actors.periodic import PeriodicJob
from kv_storage.config import AppConfig, revocation_s
from kv_storage.es.errors import describe
from kv_storage.es.history import BULK_TIMEOUT_S as HISTORY_BULK_TIMEOUT_S
from kv_storage.es.lease import Lease, Mark
from kv_storage.es.registry import Registry
from kv_storage.es.registry_changes import Deletion, Position, RegistryChanges
from kv_storage.es.retirement import StorageIndices
from kv_storage.model import Layout

logger = logging.getLogger(__name__)

_BATCH = 500
_MAX_PER_RUN = 5_000


def drop_delay_s(app: AppConfig) -> float:
    """How long after a deletion its indices stay, closed to writes, before they go.

    Until then a late write may come: another instance writes through its cached lookup until
    its next registry poll (``cache.update-time``), a request already under way ends within
    ``request-timeout``, and a history batch that left before the deletion may be retried
    ``retry-limit`` times, ``flush-timeout`` apart, each attempt taking up to its own bound
    (``HISTORY_BULK_TIMEOUT_S``, longer than the API's ``request-timeout``, which may be
    longer still). Every one of them meets the write block; once the indices are gone, one
    would re-create them.
    """
    history = app.history
    attempt_s = max(HISTORY_BULK_TIMEOUT_S, app.request_timeout_s)
    late_history_s = (history.retry_limit + 1) * (history.flush_timeout_s + attempt_s)
    late_writes_s = revocation_s(app)
    return late_writes_s + late_history_s


@dataclass(frozen=True, slots=True)
class _Pending:
    """A deletion whose indices are closed and go at ``due_s`` (monotonic time)."""

    deletion: Deletion
    due_s: float


@dataclass(frozen=True, slots=True)
class ExpiryStats:
    holds_lease: bool
    runs: int
    expired: int
    pending: int = 0
    """Deleted storages whose data waits to be removed (the drop delay)."""
    purged: int = 0
    """Documents of shared-layout storages removed so far."""


class ExpirySweep(PeriodicJob):
    def __init__(
        self,
        *,
        registry: Registry,
        changes: RegistryChanges,
        indices: StorageIndices,
        lifecycle: LifecycleActor,
        lease: Lease,
        progress: Callable[[int], Mark],
        interval_s: float,
        drop_delay_s: float,
        now_ms: Callable[[], int],
    ) -> None:
        """``progress``: the mark of one registry shard, by its number. ``now_ms``: the time
        expirations are judged by (the cluster's clock)."""
        super().__init__(name="expiry", interval_s=interval_s)
        self._registry = registry
        self._changes = changes
        self._indices = indices
        self._lifecycle = lifecycle
        self._lease = lease
        self._progress = progress
        self._drop_delay_s = drop_delay_s
        self._now_ms = now_ms
        self._position: Position | None = None
        """Deletions up to here were seen; ``None`` until read from the marks."""
        self._pending: dict[str, _Pending] = {}
        self._runs = self._expired = self._purged = 0

    @property
    def stats(self) -> ExpiryStats:
        """What ``/metrics`` reports of the sweep."""
        return ExpiryStats(
            self._lease.held, self._runs, self._expired, len(self._pending), self._purged
        )

    async def on_stop(self) -> None:
        try:
            await self._lease.release()
        except Exception as error:
            logger.warning("expiry: releasing the lease failed: %s", describe(error))

    async def iteration(self) -> None:
        try:
            if not await self._lease.acquire():
                # Another holder sweeps on: read its marks when the lease comes back.
                self._position = None
                self._pending.clear()
                return
            self._runs += 1
            await self._expire()
            await self._sweep()
        except Exception as error:
            logger.warning(
                "expiry: run failed, next in %g s: %s", self._interval_s, describe(error)
            )

    async def _expire(self) -> None:
        now = self._now_ms()
        for entry in await self._registry.expired_temp(now, size=_BATCH):
            if await self._lifecycle.ask(ExpireTemp(entry.id, now)) is not None:
                self._expired += 1
                logger.info("expiry: TEMP storage %s expired and was deleted", entry.id)

    async def _sweep(self) -> None:
        current = await self._changes.position()
        if self._position is None or not current.follows(self._position):
            self._position = await self._marked(current)
        self._position = await self._close_new_deletions(self._position, current)
        now_s = time.monotonic()
        for storage_id, pending in list(self._pending.items()):
            if pending.due_s <= now_s:
                await self._remove(pending.deletion)
                del self._pending[storage_id]
        await self._mark(self._position)

    async def _remove(self, deletion: Deletion) -> None:
        """A deleted storage's data, once no late write can come: its own indices, or its
        documents in the shared ones (purged page by page; a purge cut short is done over by
        the next run, since the storage stays pending and its mark below it)."""
        if deletion.layout is Layout.PER_STORAGE:
            await self._indices.drop(deletion.storage_id)
            return
        purged = await self._indices.purge(deletion.storage_id, page_size=_BATCH)
        self._purged += purged
        logger.info(
            "expiry: storage %s purged from the shared indices (%d documents)",
            deletion.storage_id,
            purged,
        )

    async def _close_new_deletions(self, seen: Position, current: Position) -> Position:
        """Closes the indices of deletions after ``seen``, at most ``_MAX_PER_RUN`` of them
        (the first sweep after an upgrade visits every deletion ever, a run at a time, well
        within the lease); answers how far it got."""
        reached = dict(seen.seq_nos)
        visited = 0
        due_s = time.monotonic() + self._drop_delay_s
        async for page in self._changes.deletions(seen, page_size=_BATCH):
            for deletion in page:
                if deletion.storage_id not in self._pending:
                    if deletion.layout is Layout.PER_STORAGE:
                        # Closed already if deleted through an instance; not if elsewhere.
                        await self._indices.close_to_writes(
                            deletion.storage_id, create_missing=False
                        )
                    self._pending[deletion.storage_id] = _Pending(deletion, due_s)
                reached[deletion.shard] = deletion.seq_no
                visited += 1
            if visited >= _MAX_PER_RUN:
                return Position(current.index_uuid, reached)
        return current

    async def _marked(self, current: Position) -> Position:
        """Where the last holder's sweeps got, per shard (-1: nowhere yet; a mark beyond the
        shard's checkpoint is of an index that was since re-created)."""
        seq_nos: dict[int, int] = {}
        for shard, checkpoint in current.seq_nos.items():
            marked = await self._progress(shard).read()
            seq_nos[shard] = marked if marked is not None and marked <= checkpoint else -1
        return Position(current.index_uuid, seq_nos)

    async def _mark(self, current: Position) -> None:
        """Per shard: every deletion at or below the mark has had its indices removed."""
        for shard, checkpoint in current.seq_nos.items():
            waiting = [
                p.deletion.seq_no for p in self._pending.values() if p.deletion.shard == shard
            ]
            await self._progress(shard).set(min(waiting) - 1 if waiting else checkpoint)
