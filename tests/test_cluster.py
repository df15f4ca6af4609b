"""A three-node cluster on loopback: one node is killed under mixed traffic and no request
fails; the indices the service creates have replicas there."""

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from elasticsearch import AsyncElasticsearch

from kv_storage import create_app
from kv_storage.config import load_config
from kv_storage.es.provisioning import initialise
from tests.conftest import StorageRef
from tests.test_storage_api import path
from tests.waiting import wait_until

Client = TestClient[web.Request, web.Application]
ROOT = Path(__file__).parents[1]
LOCAL_ES = ROOT / "scripts" / "local-es.sh"
NODES = ["kvc-1", "kvc-2", "kvc-3"]

pytestmark = pytest.mark.timeout(420)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[str]]:
    """Three nodes, started together (each start waits for the cluster to form)."""
    transport = [str(_free_port()) for _ in NODES]
    starts = [
        subprocess.Popen(
            [
                str(LOCAL_ES),
                "start",
                "--name",
                name,
                "--heap",
                "384m",
                "--cluster",
                "kvc",
                "--transport-port",
                port,
                "--seeds",
                ",".join(transport),
                "--masters",
                ",".join(NODES),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, port in zip(NODES, transport, strict=True)
    ]
    urls = []
    for start in starts:
        out, err = start.communicate(timeout=600)
        assert start.returncode == 0, err[-3000:]
        urls.append(out.strip().splitlines()[-1])
    yield urls
    for name in NODES:
        subprocess.run([str(LOCAL_ES), "stop", "--name", name], check=False, timeout=120)


def _pid(name: str) -> int:
    return int((ROOT / ".cache" / "es-nodes" / name / "pid").read_text())


async def test_a_node_killed_under_traffic_fails_no_request(
    cluster: list[str], aiohttp_client: Callable[[web.Application], Awaitable[Client]]
) -> None:
    prefix = "cluster-test-"
    es = AsyncElasticsearch(cluster)
    await initialise(es, prefix)
    storage = StorageRef("cluster-storage", "cluster-secret")
    await es.index(
        index=f"{prefix}storage-registry",
        id=storage.id,
        refresh=True,
        document={
            "type": "ACCOUNT",
            "deleted": False,
            "history_enabled": True,
            "secret_key": storage.secret_key,
            "last_updated": 0,
        },
    )
    uri = "http://" + ",".join(url.removeprefix("http://") for url in cluster)
    config = load_config(
        environ={
            "KV_STORAGE_ELASTICSEARCH_URI": uri,
            "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": prefix,
            "KV_STORAGE_APP_REQUEST_TIMEOUT": "20s",
            "KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT": "200ms",
        }
    )
    api = await aiohttp_client(create_app(config))
    text = {**storage.headers, "Content-Type": "text/plain"}
    for n in range(20):
        assert (await api.put(path("set", storage, f"k{n}"), data=b"v", headers=text)).status == 200
    await es.cluster.health(wait_for_status="green", timeout="60s")

    statuses: list[int] = []
    stop = asyncio.Event()

    async def traffic(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            written = await api.put(path("set", storage, f"w{worker}-{n}"), data=b"v", headers=text)
            read = await api.get(path("get", storage, f"k{n % 20}"), headers=storage.headers)
            listed = await api.post(
                path("get", storage), json=["k1", "k2"], headers=storage.headers
            )
            statuses.extend([written.status, read.status, listed.status])

    workers = [asyncio.create_task(traffic(n)) for n in range(4)]

    async def answered(count: int) -> None:
        async def enough() -> bool:
            return len(statuses) >= count

        await wait_until(enough, timeout_s=120, what=f"{count} answers")

    await answered(60)
    os.kill(_pid(NODES[1]), signal.SIGKILL)
    await answered(len(statuses) + 600)
    stop.set()
    await asyncio.gather(*workers)
    failed = [status for status in statuses if status != 200]
    assert failed == [], f"{len(failed)} of {len(statuses)} requests failed: {sorted(set(failed))}"

    settings = await es.indices.get_settings(index=f"{prefix}*", name="index.number_of_replicas")
    replicas = {
        name: index["settings"]["index"]["number_of_replicas"] for name, index in settings.items()
    }
    assert replicas
    assert set(replicas.values()) == {"1"}, replicas
    await es.close()
