"""A three-node cluster on loopback: the node holding the primary of the storage's data index
is killed under mixed traffic (set, get, multi-get, list) and no request fails; the indices
the service creates have replicas there."""

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from elasticsearch import AsyncElasticsearch

from kv_storage.app import create_app
from kv_storage.config import load_config
from kv_storage.es.names import IndexNames
from kv_storage.es.provisioning import initialise
from tests.conftest import StorageRef
from tests.helpers import Client, path
from tests.waiting import wait_until

ROOT = Path(__file__).parents[1]
LOCAL_ES = ROOT / "scripts" / "local-es.sh"
NODES = ["kvc-1", "kvc-2", "kvc-3"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]  # a cluster of three nodes of its own


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


async def _primary_holder(es: AsyncElasticsearch, index: str) -> str:
    """The name of the node that holds the primary of ``index``'s first shard: killing it
    makes the cluster promote a replica while writes to that index are under way."""
    shards = await es.cat.shards(index=index, format="json", h="shard,prirep,state,node")
    primaries = [
        shard["node"]
        for shard in sorted(shards.body, key=lambda shard: int(shard["shard"]))
        if shard["prirep"] == "p" and shard["state"] == "STARTED"
    ]
    assert primaries, shards.body
    assert primaries[0] in NODES, primaries
    return str(primaries[0])


async def test_a_node_killed_under_traffic_fails_no_request(
    cluster: list[str], aiohttp_client: Callable[[web.Application], Awaitable[Client]]
) -> None:
    prefix = "cluster-test-"
    es = AsyncElasticsearch(cluster)
    await initialise(es, prefix)
    storage = StorageRef("cluster-storage", "cluster-secret")
    await es.index(
        index=IndexNames(prefix).registry,
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

    statuses: list[tuple[str, int]] = []  # (operation, status)
    stop = asyncio.Event()

    async def traffic(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            written = await api.put(path("set", storage, f"w{worker}-{n}"), data=b"v", headers=text)
            read = await api.get(path("get", storage, f"k{n % 20}"), headers=storage.headers)
            read_many = await api.post(
                path("get", storage), json=["k1", "k2"], headers=storage.headers
            )
            listed = await api.get(path("list", storage), headers=storage.headers)
            statuses.extend(
                [
                    ("set", written.status),
                    ("get", read.status),
                    ("multi-get", read_many.status),
                    ("list", listed.status),
                ]
            )
            if listed.status == 200:
                assert {"k1", "k2"} <= set(await listed.json())

    workers = [asyncio.create_task(traffic(n)) for n in range(4)]

    async def answered(count: int) -> None:
        async def enough() -> bool:
            return len(statuses) >= count

        await wait_until(enough, timeout_s=120, what=f"{count} answers")

    await answered(60)
    victim = await _primary_holder(es, IndexNames(prefix).data(storage.id))
    os.kill(_pid(victim), signal.SIGKILL)
    await answered(len(statuses) + 600)
    stop.set()
    await asyncio.gather(*workers)
    failed = [answer for answer in statuses if answer[1] != 200]
    assert failed == [], f"{len(failed)} of {len(statuses)} requests failed: {sorted(set(failed))}"

    settings = await es.indices.get_settings(index=f"{prefix}*", name="index.number_of_replicas")
    replicas = {
        name: index["settings"]["index"]["number_of_replicas"] for name, index in settings.items()
    }
    assert replicas
    assert set(replicas.values()) == {"1"}, replicas
    await es.close()
