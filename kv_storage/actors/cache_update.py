"""The registry poll: asks the registry for storages changed by anyone (another instance,
the CloudStack plugin) and makes the cache forget them.

Every ``app.cache.update-time`` it asks for documents whose ``last_updated`` is at least the
previous poll's start minus ``app.request-timeout`` (a write in flight at the previous poll
is not missed); a failed poll empties the whole cache, since anything may have changed. No
failure ends the polling: a poll that fails is logged and the next comes on time.
"""

import logging

from kv_storage.actors.cache import CacheActor, Forget, ForgetAll
from kv_storage.actors.periodic import PeriodicJob
from kv_storage.clock import now_ms
from kv_storage.es.errors import describe
from kv_storage.es.registry import Registry

logger = logging.getLogger(__name__)


class CacheUpdateActor(PeriodicJob):
    def __init__(
        self,
        *,
        registry: Registry,
        cache: CacheActor,
        update_time_s: float,
        request_timeout_s: float,
        max_changed_ids: int = 10_000,
    ) -> None:
        """``max_changed_ids``: more changed storages than this in one poll are not listed;
        the cache forgets everything instead."""
        super().__init__(name="cache-update", interval_s=update_time_s)
        self._registry = registry
        self._cache = cache
        self._max_changed_ids = max_changed_ids
        self._overlap_ms = int(request_timeout_s * 1000)
        self._previous_poll_ms = now_ms()

    async def iteration(self) -> None:
        started = now_ms()
        try:
            await self._poll(self._previous_poll_ms - self._overlap_ms)
        except Exception as error:
            logger.warning(
                "cache update: polling the registry failed (%s); cache emptied", describe(error)
            )
            await self._forget_all()
            return  # the next poll starts again from the previous successful one
        self._previous_poll_ms = started

    async def _poll(self, since_ms: int) -> None:
        changed = await self._registry.changed_since(since_ms, limit=self._max_changed_ids)
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
