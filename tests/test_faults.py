"""Faults a real node can be made to have: Elasticsearch stopped under traffic and started
again, and history written during such an outage. The node is a dedicated one
(``test-faults``), stopped and started by these tests alone."""

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from elasticsearch import AsyncElasticsearch

from kv_storage import create_app
from kv_storage.app_keys import HISTORY_ACTOR
from kv_storage.config import Config, load_config
from kv_storage.es.provisioning import initialise
from tests.conftest import StorageRef
from tests.test_storage_api import path
from tests.waiting import wait_until

Client = TestClient[web.Request, web.Application]
LOCAL_ES = Path(__file__).parents[1] / "scripts" / "local-es.sh"
NODE = "test-faults"
REQUEST_TIMEOUT_S = 2.0

pytestmark = pytest.mark.timeout(300)


def local_es(*args: str) -> str:
    result = subprocess.run(
        [str(LOCAL_ES), *args, "--name", NODE],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


_port: list[str] = []


@pytest.fixture(scope="module")
def fault_node() -> Iterator[str]:
    url = local_es("start")
    _port[:] = [url.rsplit(":", 1)[1]]
    yield url
    local_es("stop")


async def start_node() -> str:
    """Back on the same port: the service's configuration names it."""
    return await asyncio.to_thread(local_es, "start", "--port", _port[0])


async def stop_node() -> None:
    await asyncio.to_thread(local_es, "stop")


@pytest.fixture
async def faulty(
    fault_node: str,
    index_prefix: str,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> AsyncIterator[tuple[Client, StorageRef, AsyncElasticsearch]]:
    """A service on the dedicated node, with one history-keeping storage, cached already."""
    es = AsyncElasticsearch(fault_node)
    await initialise(es, index_prefix)
    storage = StorageRef("faulty-storage", "faulty-secret")
    await es.index(
        index=f"{index_prefix}storage-registry",
        id=storage.id,
        document={
            "type": "ACCOUNT",
            "deleted": False,
            "history_enabled": True,
            "secret_key": storage.secret_key,
            "last_updated": int(time.time() * 1000),
        },
        refresh=True,
    )
    config: Config = load_config(
        environ={
            "KV_STORAGE_ELASTICSEARCH_URI": fault_node,
            "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
            "KV_STORAGE_APP_REQUEST_TIMEOUT": f"{REQUEST_TIMEOUT_S}s",
            "KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT": "300ms",
            "KV_STORAGE_APP_HISTORY_RETRY_LIMIT": "1000",
        }
    )
    api = await aiohttp_client(create_app(config))
    response = await api.put(
        path("set", storage, "warm"),
        data=b"v",
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    assert response.status == 200
    yield api, storage, es
    await es.close()


async def set_value(
    api: Client, storage: StorageRef, key: str
) -> tuple[int, dict[str, str] | None, float]:
    started = time.monotonic()
    response = await api.put(
        path("set", storage, key),
        data=key.encode(),
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    body = await response.json() if response.content_type == "application/json" else None
    return response.status, body, time.monotonic() - started


async def test_elasticsearch_stopped_under_traffic_and_back(
    faulty: tuple[Client, StorageRef, AsyncElasticsearch],
) -> None:
    api, storage, _ = faulty
    await stop_node()
    answers = await asyncio.gather(*(set_value(api, storage, f"during-{n}") for n in range(20)))
    for status, body, seconds in answers:
        assert status == 500
        assert body is not None
        assert "Elasticsearch" in body["error"], body
        assert seconds <= REQUEST_TIMEOUT_S + 1.0
    health = await api.get("/health", params={"detailed": "true"})
    assert health.status == 500
    assert (await health.json())["status"] == "UNHEALTHY"

    await start_node()

    async def serving_again() -> bool:
        status, _, _ = await set_value(api, storage, "after")
        return status == 200

    await wait_until(serving_again, timeout_s=60, interval_s=0.5, what="the service serving again")
    response = await api.get(path("get", storage, "after"), headers=storage.headers)
    assert (response.status, await response.text()) == (200, "after")
    assert (await api.get("/health", params={"detailed": "true"})).status == 200


async def test_history_of_a_short_outage_is_all_written(
    faulty: tuple[Client, StorageRef, AsyncElasticsearch], index_prefix: str
) -> None:
    api, storage, es = faulty
    history = api.app[HISTORY_ACTOR]
    await wait_until(lambda: _settled(history), what="the warm-up record written")
    keys = [f"k{n}" for n in range(50)]
    answers = await asyncio.gather(*(set_value(api, storage, key) for key in keys))
    assert {status for status, _, _ in answers} == {200}
    await stop_node()  # the records wait in the buffer, and their writes fail
    await wait_until(lambda: _retried(history), what="a failed history write")
    await start_node()
    await wait_until(
        lambda: _settled(history), timeout_s=60, interval_s=0.2, what="the records written"
    )
    index = f"{index_prefix}storage-history-{storage.id}"
    await es.indices.refresh(index=index)
    found = await es.search(index=index, size=1000, query={"terms": {"key": keys}})
    written = sorted(hit["_source"]["key"] for hit in found["hits"]["hits"])
    assert written == sorted(keys)  # each record once: none lost, none duplicated
    assert (await history.stats()).lost == 0


async def _settled(history: object) -> bool:
    stats = await history.stats()  # type: ignore[attr-defined]
    return bool(stats.buffered == 0)


async def _retried(history: object) -> bool:
    stats = await history.stats()  # type: ignore[attr-defined]
    return bool(stats.retried > 0)
