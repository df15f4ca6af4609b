"""Two service processes against one node, as behind a load balancer: a change made through
one is seen by the other within one cache update period."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import pytest

from kv_storage.config import Config
from tests.processes import service_process
from tests.waiting import wait_until

TOKEN = "two-instances-admin-token"
UPDATE_TIME_S = 1.0


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
        assert asyncio.get_running_loop().time() - started <= 3 * UPDATE_TIME_S
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
