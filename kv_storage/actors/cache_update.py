"""The cache-update actor: polls the registry for storages changed by anyone (another
instance, the CloudStack plugin) and makes the cache forget them.

Every ``app.cache.update-time`` it asks for documents whose ``last_updated`` is at least the
previous poll's start minus ``app.request-timeout`` (a write in flight at the previous poll
is not missed); a failed poll empties the whole cache, since anything may have changed.
"""

import asyncio
import logging

from kv_storage.actors.base import Actor
from kv_storage.actors.cache import CacheActor, Forget, ForgetAll
from kv_storage.es.errors import describe, is_elasticsearch_error
from kv_storage.es.registry import Registry, now_ms

logger = logging.getLogger(__name__)


class CacheUpdateActor(Actor[None]):
    def __init__(
        self,
        *,
        registry: Registry,
        cache: CacheActor,
        update_time_s: float,
        request_timeout_s: float,
    ) -> None:
        super().__init__(name="cache-update")
        self._registry = registry
        self._cache = cache
        self._update_time_s = update_time_s
        self._overlap_ms = int(request_timeout_s * 1000)
        self._previous_poll_ms = now_ms()
        self._next_poll: float | None = None

    async def handle(self, message: None) -> None:
        return None

    def next_deadline(self) -> float | None:
        if self._next_poll is None:
            self._next_poll = asyncio.get_running_loop().time() + self._update_time_s
        return self._next_poll

    async def on_deadline(self) -> None:
        self._next_poll = asyncio.get_running_loop().time() + self._update_time_s
        started = now_ms()
        try:
            changed = await self._registry.changed_since(self._previous_poll_ms - self._overlap_ms)
        except Exception as error:
            reason = describe(error) if is_elasticsearch_error(error) else repr(error)
            logger.warning("cache update: polling the registry failed (%s); cache emptied", reason)
            await self._cache.ask(ForgetAll())
            return
        if changed is None:
            await self._cache.ask(ForgetAll())
        elif changed:
            await self._cache.ask(Forget(tuple(changed)))
        self._previous_poll_ms = started
