"""Revocation reaches every instance within seconds, with the default settings: a rotated
secret, a deleted storage. And a write that races a deletion through another instance is
answered 404, never 200 and then lost, nor does it bring the storage's indices back.

Two instances of the service on one node, each with its own cache, as behind a load balancer.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage.actors.cache import CacheActor
from kv_storage.app import create_app
from kv_storage.config import CacheConfig, Config
from kv_storage.es import cluster_clock
from kv_storage.es.names import IndexNames
from kv_storage.es.registry import Registry
from tests.conftest import StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory, closed_to_writes, get, path
from tests.waiting import wait_until

TOKEN = "revocation-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
BOUND_S = 1 + 3
"""The documented bound with the defaults: app.cache.update-time + app.request-timeout."""


@pytest.fixture
async def two(
    make_config: Callable[..., Config], initialised_config: Config, aiohttp_client: ClientFactory
) -> tuple[Client, Client]:
    config = make_config(KV_STORAGE_ADMIN_TOKEN=TOKEN)
    assert config.app.cache.update_time_s + config.app.request_timeout_s == BOUND_S
    return await aiohttp_client(create_app(config)), await aiohttp_client(create_app(config))


@pytest.fixture
async def stale(
    make_config: Callable[..., Config], initialised_config: Config, aiohttp_client: ClientFactory
) -> tuple[Client, Client]:
    """Two instances, the second polling the registry only every hour: whatever it cached
    stays, so that its writes surely race the first one's deletion."""
    return (
        await aiohttp_client(create_app(make_config(KV_STORAGE_ADMIN_TOKEN=TOKEN))),
        await aiohttp_client(
            create_app(
                make_config(KV_STORAGE_ADMIN_TOKEN=TOKEN, KV_STORAGE_APP_CACHE_UPDATE_TIME="1 hour")
            )
        ),
    )


async def _create(api: Client, **body: Any) -> StorageRef:
    response = await api.post("/admin/storages", json=body, headers=ADMIN)
    assert response.status == 201, await response.text()
    created = await response.json()
    return StorageRef(created["id"], created["secretKey"])


async def _set(api: Client, storage: StorageRef, key: str) -> int:
    response = await api.put(
        path("set", storage, key),
        data=b"v",
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    return response.status


async def test_a_rotated_secret_stops_working_on_every_instance_within_the_bound(
    two: tuple[Client, Client],
) -> None:
    first, second = two
    storage = await _create(first, type="ACCOUNT", account="a", name="n")
    assert await _set(second, storage, "k") == 200  # cached on the second instance
    response = await first.post(f"/admin/storages/{storage.id}/secret-key", headers=ADMIN)
    rotated = StorageRef(storage.id, (await response.json())["secretKey"])
    assert (await get(first, storage, "k"))[0] == 401  # at once where it was rotated
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def refused_on_second() -> bool:
        return (await get(second, storage, "k"))[0] == 401

    await wait_until(refused_on_second, timeout_s=3 * BOUND_S, what="the old secret refused")
    assert loop.time() - started <= BOUND_S
    assert await get(second, rotated, "k") == (200, "v")


async def test_a_deleted_storage_is_gone_on_every_instance_within_the_bound(
    two: tuple[Client, Client],
) -> None:
    first, second = two
    storage = await _create(first, type="ACCOUNT", account="a", name="n")
    assert await _set(second, storage, "k") == 200
    assert (await first.delete(f"/admin/storages/{storage.id}", headers=ADMIN)).status == 200
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def gone_on_second() -> bool:
        status, body = await get(second, storage, "k")
        return status == 404 and "does not exist" in body

    await wait_until(gone_on_second, timeout_s=3 * BOUND_S, what="the storage gone")
    assert loop.time() - started <= BOUND_S


@pytest.mark.parametrize("written_before", [True, False], ids=["written", "never-written"])
async def test_writes_racing_a_deletion_elsewhere_are_404_and_bring_nothing_back(
    stale: tuple[Client, Client],
    es: AsyncElasticsearch,
    index_prefix: str,
    written_before: bool,
) -> None:
    """The second instance still takes the storage for live when the first deletes it:
    every write it answers after the deletion was answered is 404, none 200, and the
    indices stay closed to writes (not re-created open)."""
    first, second = stale
    storage = await _create(first, type="VM", vm=f"vm-{index_prefix[2:10]}", historyEnabled=True)
    if written_before:
        assert await _set(second, storage, "k") == 200
    else:
        assert (await get(second, storage, "k"))[0] == 404  # a live storage without the key
    response = await first.delete(f"/admin/storages/{storage.id}", headers=ADMIN)
    assert response.status == 200
    answers = await asyncio.gather(*(_set(second, storage, f"late{n}") for n in range(50)))
    assert set(answers) == {404}, answers
    multi = await second.put(path("set", storage), json={"a": "1"}, headers=storage.headers)
    assert multi.status == 404
    data_index = IndexNames(index_prefix).data(storage.id)
    history_index = IndexNames(index_prefix).history(storage.id)
    assert await closed_to_writes(es, data_index)
    assert await closed_to_writes(es, history_index)
    await es.indices.refresh(index=data_index)
    assert (await es.count(index=data_index))["count"] == (1 if written_before else 0)


async def test_a_clear_or_delete_racing_a_deletion_elsewhere_is_404(
    stale: tuple[Client, Client],
) -> None:
    first, second = stale
    storage = await _create(first, type="ACCOUNT", account="a", name="n")
    assert await _set(second, storage, "k") == 200
    assert (await first.delete(f"/admin/storages/{storage.id}", headers=ADMIN)).status == 200
    for operation, method in (("clear", "POST"), ("delete", "DELETE")):
        url = path(operation, storage, "k" if operation == "delete" else None)
        response = await second.request(method, url, headers=storage.headers)
        assert response.status == 404, (operation, await response.text())


async def test_a_blocking_read_ends_when_its_secret_is_rotated_elsewhere(
    two: tuple[Client, Client],
) -> None:
    """A client waits for a change on the second instance; the secret is rotated through the
    first. The wait does not go on for its minute with a revoked secret: it answers 401
    within the bound."""
    first, second = two
    storage = await _create(first, type="ACCOUNT", account="a", name="n")
    response = await second.put(
        path("set", storage, "k"),
        data=b"v",
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    tag = response.headers["ETag"]
    waiting = asyncio.create_task(
        second.get(
            path("get", storage, "k"),
            params={"wait": "60s"},
            headers={**storage.headers, "If-None-Match": tag},
        )
    )

    async def waits() -> bool:
        metrics = await (await second.get("/metrics")).text()
        return "kv_storage_watch_waiters 1.0" in metrics

    await wait_until(waits, what="the blocking read waiting")
    rotated = await first.post(f"/admin/storages/{storage.id}/secret-key", headers=ADMIN)
    assert rotated.status == 200
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(3 * BOUND_S):
        answer = await waiting
    assert answer.status == 401
    assert loop.time() - started <= BOUND_S


class _ClockAnHourBehind:
    """This machine's wall clock an hour behind; its monotonic clock as it is."""

    monotonic = staticmethod(time.monotonic)

    @staticmethod
    def time_ns() -> int:
        return time.time_ns() - 3_600 * 10**9


async def test_expiry_is_judged_by_elasticsearchs_clock_not_this_machines(
    es: AsyncElasticsearch,
    initialised_config: Config,
    index_prefix: str,
    create_storage: StorageFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A TEMP storage that expired ten seconds ago is gone for an instance whose clock is an
    hour behind (it would have served it for another hour by its own clock)."""
    monkeypatch.setattr(cluster_clock, "time", _ClockAnHourBehind)
    clock = cluster_clock.ClusterClock(es)
    expired = await create_storage("TEMP", expiration_timestamp=int(time.time() * 1000) - 10_000)
    assert abs(clock.now_ms() - (time.time() * 1000 - 3_600_000)) < 1_000  # no reading yet
    await clock.sync()
    assert abs(clock.now_ms() - time.time() * 1000) < 1_000  # the node runs on this host
    registry = Registry(es, IndexNames(index_prefix))
    cache = CacheActor(registry=registry, config=CacheConfig(10, 3600.0, 1.0), now_ms=clock.now_ms)
    cache.start()
    try:
        assert await cache.look_up(expired.id) is None
        skewed = CacheActor(
            registry=registry,
            config=CacheConfig(10, 3600.0, 1.0),
            now_ms=lambda: _ClockAnHourBehind.time_ns() // 1_000_000,
        )
        skewed.start()
        try:  # what the machine's own clock would say
            assert await skewed.look_up(expired.id) is not None
        finally:
            await skewed.stop()
    finally:
        await cache.stop()
