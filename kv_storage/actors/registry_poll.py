"""The registry poll: asks the registry for storages changed by anyone (another instance,
the command line, the CloudStack plugin) and makes the cache forget them.

Changes are found by the registry's sequence numbers (``kv_storage.es.registry_changes``),
which Elasticsearch assigns in the order it applies them, never by ``last_updated``, which
each writer stamps with its own clock: a writer whose clock is behind cannot hide a change.
So a rotation, deletion or expiry made anywhere reaches this instance within one
``app.cache.update-time`` plus the poll's own time (at most ``app.request-timeout``).

The position is read once before the service answers (``begin``); a poll without one (that
read failed), and one after the registry was re-created, empties the cache: there is no
earlier position to compare with. A failed poll empties it too, since anything may have
changed, and the next poll starts again from the last position that was read in full. No
failure ends the polling: a poll that fails is logged and the next comes on time. The poll
also keeps the cluster's clock current, which TEMP expirations are judged by.
"""

import logging

from kv_storage.actors.cache import CacheActor, Forget, ForgetAll
from kv_storage.actors.periodic import PeriodicJob
from kv_storage.es.cluster_clock import ClusterClock
from kv_storage.es.errors import describe
from kv_storage.es.registry_changes import Position, RegistryChanges

logger = logging.getLogger(__name__)


class RegistryPoll(PeriodicJob):
    def __init__(
        self,
        *,
        changes: RegistryChanges,
        cache: CacheActor,
        update_time_s: float,
        clock: ClusterClock | None = None,
        max_changed_ids: int = 10_000,
    ) -> None:
        """``max_changed_ids``: more changed storages than this in one poll are not listed;
        the cache forgets everything instead."""
        super().__init__(name="registry-poll", interval_s=update_time_s)
        self._changes = changes
        self._cache = cache
        self._clock = clock
        self._max_changed_ids = max_changed_ids
        self._position: Position | None = None
        """Every change up to here has been seen; ``None`` before the first poll."""

    async def begin(self) -> None:
        """Reads where the registry stands before the service answers anything: the cache
        is empty, so the first poll need not empty it. A failure is logged; the first poll
        then empties the cache instead."""
        try:
            self._position = await self._changes.position()
        except Exception as error:
            logger.warning(
                "cache update: reading the registry's position failed: %s", describe(error)
            )

    async def iteration(self) -> None:
        if self._clock is not None and self._clock.due:
            await self._clock.sync()
        try:
            position = await self._changes.position()
            await self._forget_changed(position)
        except Exception as error:
            logger.warning(
                "cache update: polling the registry failed (%s); cache emptied", describe(error)
            )
            await self._forget_all()
            return  # the next poll starts again from the last position read in full
        self._position = position

    async def _forget_changed(self, position: Position) -> None:
        """Forgets what changed between the last position and ``position``."""
        previous = self._position
        if previous is None or not position.follows(previous):
            if previous is not None:
                logger.info("cache update: the registry index was re-created; cache emptied")
            await self._cache.ask(ForgetAll())
            return
        changed = await self._changes.changed_ids(previous, limit=self._max_changed_ids)
        if changed is None:
            logger.info(
                "cache update: more than %d storages changed; cache emptied", self._max_changed_ids
            )
            await self._cache.ask(ForgetAll())
        elif changed:
            await self._cache.ask(Forget(tuple(changed)))

    async def _forget_all(self) -> None:
        try:
            await self._cache.ask(ForgetAll())
        except Exception as error:
            logger.error("cache update: emptying the cache failed too: %r", error)
