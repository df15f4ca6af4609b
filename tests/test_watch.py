"""Blocking reads against the real node: ``GET /get/<id>/<key>?wait=`` with
``If-None-Match`` answers when the key changes, through this instance or any other, or 304 when
the wait passes; waiters are bounded, dropped with their client, and answered at shutdown.

The wake-up times are deadlines on the answer (100 ms for a write through the same instance,
the poll interval + 100 ms for another), with a margin for a machine shared with other test
runs; nothing here sleeps to let something happen.
"""

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from kv_storage.app import create_app
from kv_storage.config import Config
from tests.conftest import BOTH_LAYOUTS, CountingProxy, StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory, path
from tests.processes import service_process
from tests.waiting import wait_until

pytestmark = BOTH_LAYOUTS

BUSY_MACHINE_MARGIN_S = 0.4
"""Added to every deadline: the suite shares two cores with Elasticsearch and other runs."""


async def _set(api: Client, storage: StorageRef, key: str, value: str) -> str:
    response = await api.put(
        path("set", storage, key),
        data=value,
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    assert response.status == 200
    return response.headers["ETag"]


async def _wait(
    api: Client, storage: StorageRef, key: str, tag: str, wait: str
) -> tuple[int, str, str | None]:
    response = await api.get(
        path("get", storage, key),
        params={"wait": wait},
        headers={**storage.headers, "If-None-Match": tag},
    )
    return response.status, await response.text(), response.headers.get("ETag")


async def _waiters(api: Client) -> float:
    text = await (await api.get("/metrics")).text()
    line = next(row for row in text.splitlines() if row.startswith("kv_storage_watch_waiters "))
    return float(line.split()[1])


async def _until_waiting(api: Client, count: int) -> None:
    async def waiting() -> bool:
        return await _waiters(api) >= count

    await wait_until(waiting, timeout_s=20, what=f"{count} waiters")


@pytest.fixture
async def watched(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: Any,
) -> Callable[..., Any]:
    """Instances of the service on one cluster, polling every 300 ms, cancelling a request
    whose client went away (as ``kv-storage serve`` does)."""

    async def instance(**environ: str) -> Client:
        config = make_config(**{"KV_STORAGE_APP_WATCH_POLL_INTERVAL": "300ms", **environ})
        client: Client = await aiohttp_client(
            create_app(config), server_kwargs={"handler_cancellation": True}
        )
        return client

    return instance


async def test_a_write_through_the_same_instance_wakes_the_waiter_at_once(
    watched: Callable[..., Any], create_storage: StorageFactory
) -> None:
    api: Client = await watched()
    storage = await create_storage()
    tag = await _set(api, storage, "k", "v1")
    waiting = asyncio.create_task(_wait(api, storage, "k", tag, "30s"))
    await _until_waiting(api, 1)
    new_tag = await _set(api, storage, "k", "v2")
    async with asyncio.timeout(0.1 + BUSY_MACHINE_MARGIN_S):
        status, value, answered_tag = await waiting
    assert (status, value, answered_tag) == (200, "v2", new_tag)


async def _wakeups(api: Client, cause: str) -> float:
    text = await (await api.get("/metrics")).text()
    sample = f'kv_storage_watch_wakeups_total{{cause="{cause}"}} '
    return next((float(row.split()[-1]) for row in text.splitlines() if row.startswith(sample)), 0)


async def test_writes_wake_exactly_the_waiters_of_their_keys_as_others_come_and_go(
    watched: Callable[..., Any], create_storage: StorageFactory
) -> None:
    """Writes of storages and keys nobody waits for wake nobody; a waiter that leaves does not
    stop a write from waking the others of its storage at once (not at a poll: there is
    none within this test's time)."""
    api: Client = await watched(KV_STORAGE_APP_WATCH_POLL_INTERVAL="60s")
    storage, other = await create_storage(), await create_storage()
    tags = {key: await _set(api, storage, key, "v1") for key in ("k", "j")}
    staying = asyncio.create_task(_wait(api, storage, "k", tags["k"], "30s"))
    leaving = asyncio.create_task(_wait(api, storage, "j", tags["j"], "30s"))
    await _until_waiting(api, 2)
    leaving.cancel()

    async def one_left() -> bool:
        return await _waiters(api) == 1

    await wait_until(one_left, what="the waiter whose client left dropped")
    multi = await api.put(path("set", other), json={"k": "x", "j": "x"}, headers=other.headers)
    assert multi.status == 200
    await _set(api, storage, "unwatched", "x")
    assert not staying.done()
    new_tag = await _set(api, storage, "k", "v2")
    async with asyncio.timeout(0.1 + BUSY_MACHINE_MARGIN_S):
        status, value, answered_tag = await staying
    assert (status, value, answered_tag) == (200, "v2", new_tag)
    assert await _wakeups(api, "write") == 1
    assert await _wakeups(api, "poll") == 0


async def test_a_write_through_another_instance_is_seen_within_the_poll_interval(
    watched: Callable[..., Any], create_storage: StorageFactory
) -> None:
    one: Client = await watched()
    other: Client = await watched()
    storage = await create_storage()
    tag = await _set(one, storage, "k", "v1")
    waiting = asyncio.create_task(_wait(one, storage, "k", tag, "30s"))
    await _until_waiting(one, 1)
    await _set(other, storage, "k", "v2")
    async with asyncio.timeout(0.3 + 0.1 + BUSY_MACHINE_MARGIN_S):
        status, value, _ = await waiting
    assert (status, value) == (200, "v2")


async def test_a_deleted_key_answers_404_and_an_unchanged_one_304_after_the_wait(
    watched: Callable[..., Any], create_storage: StorageFactory
) -> None:
    api: Client = await watched()
    storage = await create_storage()
    tag = await _set(api, storage, "k", "v1")
    began = time.monotonic()
    assert await _wait(api, storage, "k", tag, "500ms") == (304, "", tag)
    assert time.monotonic() - began >= 0.5
    waiting = asyncio.create_task(_wait(api, storage, "k", tag, "30s"))
    await _until_waiting(api, 1)
    deleted = await api.delete(path("delete", storage, "k"), headers=storage.headers)
    assert deleted.status == 200
    async with asyncio.timeout(0.1 + BUSY_MACHINE_MARGIN_S):
        assert (await waiting)[0] == 404


async def test_a_stale_tag_answers_at_once_and_no_tag_reads_plainly(
    watched: Callable[..., Any], create_storage: StorageFactory
) -> None:
    api: Client = await watched()
    storage = await create_storage()
    old = await _set(api, storage, "k", "v1")
    await _set(api, storage, "k", "v2")
    async with asyncio.timeout(0.1 + BUSY_MACHINE_MARGIN_S):
        assert (await _wait(api, storage, "k", old, "30s"))[:2] == (200, "v2")
        plain = await api.get(
            path("get", storage, "k"), params={"wait": "30s"}, headers=storage.headers
        )
        assert (plain.status, await plain.text()) == (200, "v2")


@pytest.mark.parametrize("wait", ["6 minutes", "0", "-1", "soon", "1 fortnight"])
async def test_a_wait_beyond_the_longest_or_malformed_is_400(
    watched: Callable[..., Any], create_storage: StorageFactory, wait: str
) -> None:
    api: Client = await watched()
    storage = await create_storage()
    tag = await _set(api, storage, "k", "v")
    status, body, _ = await _wait(api, storage, "k", tag, wait)
    assert status == 400
    assert "wait" in body


async def test_waiters_are_bounded_and_dropped_when_their_client_goes(
    watched: Callable[..., Any], create_storage: StorageFactory
) -> None:
    api: Client = await watched(KV_STORAGE_APP_WATCH_MAX_WAITERS="5")
    storage = await create_storage()
    tag = await _set(api, storage, "k", "v")
    port = api.server.port
    assert port is not None
    connections = []
    for _ in range(5):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /get/{storage.id}/k?wait=60s HTTP/1.1\r\nHost: x\r\n"
            f"Secret-Key: {storage.secret_key}\r\nIf-None-Match: {tag}\r\n\r\n".encode()
        )
        await writer.drain()
        connections.append(writer)
    await _until_waiting(api, 5)
    response = await api.get(
        path("get", storage, "k"),
        params={"wait": "60s"},
        headers={**storage.headers, "If-None-Match": tag},
    )
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert "app.watch.max-waiters" in (await response.json())["error"]
    for writer in connections:
        writer.close()

    async def none_left() -> bool:
        return await _waiters(api) == 0

    await wait_until(none_left, what="the waiters of closed connections dropped")


async def test_a_thousand_waiters_cost_one_mget_per_poll(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    es_proxy: CountingProxy,
    create_storage: StorageFactory,
) -> None:
    config = make_config(
        KV_STORAGE_ELASTICSEARCH_URI=es_proxy.url, KV_STORAGE_APP_WATCH_POLL_INTERVAL="300ms"
    )
    api = await aiohttp_client(create_app(config))
    storage = await create_storage()
    keys = [f"k{n}" for n in range(1000)]
    response = await api.put(
        path("set", storage), json=dict.fromkeys(keys, "v"), headers=storage.headers
    )
    assert response.status == 200
    # A session of its own: a thousand requests at once, not the test client's hundred.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(str(api.make_url("/")), connector=connector) as session:

        async def tag_of(key: str) -> str:
            async with session.get(str(path("get", storage, key)), headers=storage.headers) as r:
                return r.headers["ETag"]

        tags = dict(zip(keys, await asyncio.gather(*map(tag_of, keys)), strict=True))

        async def wait(key: str) -> int:
            async with session.get(
                str(path("get", storage, key)),
                params={"wait": "60s"},
                headers={**storage.headers, "If-None-Match": tags[key]},
            ) as answer:
                return answer.status

        waiting = [asyncio.create_task(wait(key)) for key in keys]
        await _until_waiting(api, 1000)
        before, began = es_proxy.count(path_part="/_mget"), time.monotonic()

        async def polled_thrice() -> bool:
            return es_proxy.count(path_part="/_mget") - before >= 3

        await wait_until(polled_thrice, timeout_s=20, what="three polls")
        elapsed = time.monotonic() - began
        polls = es_proxy.count(path_part="/_mget") - before
        assert polls <= elapsed / 0.3 + 2, (polls, elapsed)  # one per interval, not per waiter
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)


async def test_sigterm_answers_every_waiter_before_the_service_stops(
    es_url: str,
    initialised_config: Config,
    index_prefix: str,
    create_storage: StorageFactory,
    unused_tcp_port: int,
) -> None:
    environ = {
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
    }
    storage = await create_storage()
    async with (
        service_process(environ, unused_tcp_port) as (process, base),
        aiohttp.ClientSession() as session,
    ):
        url = f"{base}/set/{storage.id}/k"
        async with session.put(
            url, data="v", headers={**storage.headers, "Content-Type": "text/plain"}
        ) as answer:
            tag = answer.headers["ETag"]

        async def wait() -> int:
            async with session.get(
                f"{base}/get/{storage.id}/k",
                params={"wait": "120s"},
                headers={**storage.headers, "If-None-Match": tag},
            ) as answer:
                return answer.status

        waiting = [asyncio.create_task(wait()) for _ in range(10)]

        async def all_waiting() -> bool:
            async with session.get(f"{base}/metrics") as answer:
                text = await answer.text()
            line = next(r for r in text.splitlines() if r.startswith("kv_storage_watch_waiters "))
            return float(line.split()[1]) == 10

        await wait_until(all_waiting, what="ten waiters")
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await asyncio.gather(*waiting) == [304] * 10
            assert await process.wait() == 0


async def test_a_storage_deleted_while_a_client_waits_answers_404(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: Any,
    create_storage: StorageFactory,
) -> None:
    token = "watch-tests-admin-token-0123456789abcdef"
    config = make_config(KV_STORAGE_APP_WATCH_POLL_INTERVAL="300ms", KV_STORAGE_ADMIN_TOKEN=token)
    api: Client = await aiohttp_client(create_app(config))
    storage = await create_storage()
    tag = await _set(api, storage, "k", "v")
    waiting = asyncio.create_task(_wait(api, storage, "k", tag, "30s"))
    await _until_waiting(api, 1)
    deleted = await api.delete(
        f"/admin/storages/{storage.id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert deleted.status == 200
    async with asyncio.timeout(0.3 + 0.1 + BUSY_MACHINE_MARGIN_S):
        assert (await waiting)[0] == 404
