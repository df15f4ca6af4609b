"""Changes made elsewhere reach a running service within one cache update period: through
another service process (two behind a load balancer), or written into the registry by the
CloudStack plugin. And the registry poll behind that survives its failures."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage.actors.cache import (
    CacheActor,
    CacheAnswer,
    CacheMessage,
    Forget,
    ForgetAll,
    GetCacheStats,
)
from kv_storage.actors.registry_poll import RegistryPoll
from kv_storage.app import create_app
from kv_storage.app_keys import SERVICE
from kv_storage.config import CacheConfig, Config
from kv_storage.es.names import IndexNames
from kv_storage.es.registry import Registry
from kv_storage.es.registry_changes import RegistryChanges
from tests.conftest import StorageFactory, StorageRef
from tests.helpers import ClientFactory, get
from tests.processes import service_process
from tests.waiting import wait_until

pytestmark = pytest.mark.slow  # service processes and registry polls

TOKEN = "two-instances-admin-token-0123456789"
UPDATE_TIME_S = 1.0
POLL_MARGIN_S = 0.5
"""Time for the poll's own requests (a refresh and a search) and for the request asking."""


@asynccontextmanager
async def instance(es_url: str, index_prefix: str, port: int) -> AsyncIterator[str]:
    environ = {
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
        "KV_STORAGE_ADMIN_TOKEN": TOKEN,
        "KV_STORAGE_APP_CACHE_UPDATE_TIME": f"{UPDATE_TIME_S}s",
        "KV_STORAGE_APP_CACHE_EXPIRATION_TIME": "1 hour",
    }
    async with service_process(environ, port) as (_, base):
        yield base


@pytest.fixture
async def two_instances(
    es_url: str, index_prefix: str, initialised_config: Config, unused_tcp_port_factory: object
) -> AsyncIterator[tuple[str, str]]:
    ports = [unused_tcp_port_factory() for _ in range(2)]  # type: ignore[operator]
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(instance(es_url, index_prefix, ports[0]))
        second = await stack.enter_async_context(instance(es_url, index_prefix, ports[1]))
        yield first, second


async def test_a_change_through_one_instance_is_seen_by_the_other(
    two_instances: tuple[str, str],
) -> None:
    first, second = two_instances
    admin = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{first}/admin/storages",
            json={"type": "ACCOUNT", "account": "a", "name": "n"},
            headers=admin,
        ) as response:
            assert response.status == 201
            created = await response.json()
        storage_id, old_secret = created["id"], created["secretKey"]

        async def status_on_second(secret: str) -> int:
            async with session.get(
                f"{second}/get/{storage_id}/k", headers={"Secret-Key": secret}
            ) as answer:
                return answer.status

        assert await status_on_second(old_secret) == 404  # no key yet: cached as a live storage

        async with session.post(
            f"{first}/admin/storages/{storage_id}/secret-key", headers=admin
        ) as response:
            new_secret = (await response.json())["secretKey"]

        async def old_secret_refused() -> bool:
            return await status_on_second(old_secret) == 401

        started = asyncio.get_running_loop().time()
        await wait_until(
            old_secret_refused, timeout_s=4 * UPDATE_TIME_S, what="the old secret refused"
        )
        assert asyncio.get_running_loop().time() - started <= UPDATE_TIME_S + POLL_MARGIN_S
        assert await status_on_second(new_secret) == 404

        async with session.delete(
            f"{first}/admin/storages/{storage_id}", headers=admin
        ) as response:
            assert response.status == 200

        async def gone() -> bool:
            async with session.get(
                f"{second}/list/{storage_id}", headers={"Secret-Key": new_secret}
            ) as answer:
                return answer.status == 404

        await wait_until(gone, timeout_s=4 * UPDATE_TIME_S, what="the deleted storage refused")


async def test_a_storage_the_plugin_creates_after_a_cached_miss_is_served_after_one_period(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    api = await aiohttp_client(
        create_app(
            make_config(
                KV_STORAGE_APP_CACHE_UPDATE_TIME=f"{UPDATE_TIME_S}s",
                KV_STORAGE_APP_CACHE_EXPIRATION_TIME="1 hour",
            )
        )
    )
    storage_id = str(uuid.uuid4())
    status, body = await get(api, StorageRef(storage_id, "s"), "k")
    assert status == 404
    assert "does not exist" in body  # now cached as missing
    # The plugin writes the registry document itself, with last_updated.
    storage = await create_storage(storage_id=storage_id)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def served() -> bool:
        status, body = await get(api, storage, "k")
        return status == 404 and "does not exist" not in body  # a live storage without the key

    await wait_until(served, timeout_s=4 * UPDATE_TIME_S, what="the new storage served")
    assert loop.time() - started <= UPDATE_TIME_S + POLL_MARGIN_S


async def _cache_entries(cache: CacheActor) -> int:
    entries: int = (await cache.ask(GetCacheStats())).entries
    return entries


async def test_a_failed_registry_poll_empties_the_cache_and_polling_goes_on(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    api = await aiohttp_client(
        create_app(
            make_config(
                KV_STORAGE_APP_CACHE_UPDATE_TIME="200ms",
                KV_STORAGE_APP_CACHE_EXPIRATION_TIME="1 hour",
            )
        )
    )
    cache = api.app[SERVICE].cache
    registry_index = IndexNames(index_prefix).registry
    storage = await create_storage()
    assert (await get(api, storage, "k"))[0] == 404  # cached, with its secret
    # A closed index fails every request, the poll's among them.
    await es.indices.close(index=registry_index)
    try:

        async def emptied() -> bool:
            return await _cache_entries(cache) == 0

        await wait_until(emptied, what="the cache emptied after a failed poll")
    finally:
        await es.indices.open(index=registry_index)
        await es.cluster.health(index=registry_index, wait_for_status="yellow", timeout="30s")
    # The next lookup reads the registry again.
    rekeyed = StorageRef(storage.id, uuid.uuid4().hex)
    await es.update(index=registry_index, id=storage.id, doc={"secret_key": rekeyed.secret_key})
    assert (await get(api, storage, "k"))[0] == 401
    assert (await get(api, rekeyed, "k"))[0] == 404
    # And polling goes on: a change written now is seen.
    await es.update(
        index=registry_index,
        id=storage.id,
        doc={"secret_key": storage.secret_key, "last_updated": int(time.time() * 1000)},
    )

    async def old_secret_back() -> bool:
        return (await get(api, storage, "k"))[0] == 404

    await wait_until(old_secret_back, what="a change after the failed poll seen")


class _CacheFailingOnce(CacheActor):
    """A cache whose first Forget fails: a fault of the service's own, which no state of the
    Elasticsearch node can cause."""

    failed = False

    async def handle(self, message: CacheMessage) -> CacheAnswer:
        if isinstance(message, Forget | ForgetAll) and not self.failed:
            self.failed = True
            raise RuntimeError("the cache failed")
        return await super().handle(message)


def _poller(
    es: AsyncElasticsearch,
    index_prefix: str,
    cache_type: type[CacheActor],
    *,
    max_changed_ids: int = 10_000,
) -> tuple[Registry, CacheActor, RegistryPoll]:
    registry = Registry(es, IndexNames(index_prefix))
    cache = cache_type(registry=registry, config=CacheConfig(100, 3600.0, 0.1))
    update = RegistryPoll(
        changes=RegistryChanges(es, IndexNames(index_prefix)),
        cache=cache,
        update_time_s=0.1,
        max_changed_ids=max_changed_ids,
    )
    return registry, cache, update


async def test_a_failing_cache_does_not_end_the_polling(
    es: AsyncElasticsearch,
    initialised_config: Config,
    index_prefix: str,
    create_storage: StorageFactory,
) -> None:
    _, cache, update = _poller(es, index_prefix, _CacheFailingOnce)
    storage = await create_storage()
    cache.start()
    update.start()
    try:
        found = await cache.look_up(storage.id)
        assert found is not None
        assert found.accepts(storage.secret_key)
        for _ in range(2):  # the first change meets the failing cache, the second does not
            secret = uuid.uuid4().hex
            await es.update(
                index=IndexNames(index_prefix).registry,
                id=storage.id,
                doc={"secret_key": secret, "last_updated": int(time.time() * 1000)},
            )

            async def new_secret_seen(secret: str = secret) -> bool:
                found = await cache.look_up(storage.id)
                return found is not None and found.accepts(secret)

            await wait_until(new_secret_seen, what="the changed secret seen")
        assert update.running
    finally:
        await update.stop()
        await cache.stop()


async def test_too_many_changes_for_one_poll_empty_the_cache(
    es: AsyncElasticsearch,
    initialised_config: Config,
    index_prefix: str,
    create_storage: StorageFactory,
) -> None:
    unchanged, *changed = [await create_storage() for _ in range(4)]
    _, cache, update = _poller(es, index_prefix, CacheActor, max_changed_ids=2)
    cache.start()
    update.start()
    try:
        await update.run_now()  # the first poll: a position to compare with
        for storage in [unchanged, *changed]:
            await cache.look_up(storage.id)
        assert await _cache_entries(cache) == 4
        for storage in changed:  # 3 changes: more than the poll lists
            await es.update(
                index=IndexNames(index_prefix).registry, id=storage.id, doc={"name": "renamed"}
            )
        await update.run_now()
        assert await _cache_entries(cache) == 0  # the unchanged storage forgotten too
    finally:
        await update.stop()
        await cache.stop()


async def test_a_few_changes_are_forgotten_and_nothing_else(
    es: AsyncElasticsearch,
    initialised_config: Config,
    index_prefix: str,
    create_storage: StorageFactory,
) -> None:
    unchanged, *changed = [await create_storage() for _ in range(3)]
    _, cache, update = _poller(es, index_prefix, CacheActor)
    cache.start()
    update.start()
    try:
        await update.run_now()
        for storage in [unchanged, *changed]:
            await cache.look_up(storage.id)
        for storage in changed:
            await es.update(
                index=IndexNames(index_prefix).registry, id=storage.id, doc={"name": "renamed"}
            )
        await update.run_now()
        assert await _cache_entries(cache) == 1
        await update.run_now()  # nothing changed since: nothing more forgotten
        assert await _cache_entries(cache) == 1
    finally:
        await update.stop()
        await cache.stop()


async def test_a_change_stamped_by_a_clock_far_behind_is_seen_within_one_period(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """A writer whose clock is an hour behind rotates a secret (the CloudStack plugin, or the
    command line on another machine): ``last_updated`` says it changed an hour ago. The old
    secret stops working, and the new one works, within one update period."""
    api = await aiohttp_client(
        create_app(
            make_config(
                KV_STORAGE_APP_CACHE_UPDATE_TIME=f"{UPDATE_TIME_S}s",
                KV_STORAGE_APP_CACHE_EXPIRATION_TIME="1 hour",
            )
        )
    )
    storage = await create_storage()
    assert (await get(api, storage, "k"))[0] == 404  # cached, with its secret
    rotated = StorageRef(storage.id, uuid.uuid4().hex)
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    await es.update(
        index=IndexNames(index_prefix).registry,
        id=storage.id,
        doc={"secret_key": rotated.secret_key, "last_updated": an_hour_ago},
    )
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def old_secret_refused() -> bool:
        return (await get(api, storage, "k"))[0] == 401

    await wait_until(old_secret_refused, timeout_s=4 * UPDATE_TIME_S, what="the old secret refused")
    assert loop.time() - started <= UPDATE_TIME_S + POLL_MARGIN_S
    assert (await get(api, rotated, "k"))[0] == 404
