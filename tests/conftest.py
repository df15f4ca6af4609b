"""Fixtures shared by the whole suite.

Elasticsearch is real: a local node that `scripts/local-es.sh` starts once per test run, or
the cluster named by KV_STORAGE_TEST_ELASTICSEARCH_URI. Every test gets its own index prefix
and everything under it is deleted afterwards, so tests never see each other's data and the
suite can run against a shared cluster.
"""

import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from elasticsearch import AsyncElasticsearch, Elasticsearch

from kv_storage import create_app
from kv_storage.config import Config, load_config
from kv_storage.es.provisioning import initialise

ROOT = Path(__file__).parents[1]
LOCAL_ES = ROOT / "scripts" / "local-es.sh"


@dataclass(frozen=True)
class Node:
    url: str
    username: str | None = None
    password: str | None = None


def _running(name: str) -> bool:
    return (
        subprocess.run([str(LOCAL_ES), "status", "--name", name], capture_output=True).returncode
        == 0
    )


@pytest.fixture(scope="session")
def _local_node() -> Iterator[Callable[[str, list[str]], str]]:
    """Starts local nodes on demand; stops at the end those that this run started."""
    started: list[str] = []

    def start(name: str, options: list[str]) -> str:
        was_running = _running(name)
        result = subprocess.run(
            [str(LOCAL_ES), "start", "--name", name, *options],
            stdout=subprocess.PIPE,
            text=True,
            timeout=600,
            check=True,
        )
        if not was_running:
            started.append(name)
        return result.stdout.strip().splitlines()[-1]

    yield start
    for name in started:
        subprocess.run([str(LOCAL_ES), "stop", "--name", name], check=False, timeout=120)


@pytest.fixture(scope="session")
def es_url(_local_node: Callable[[str, list[str]], str]) -> str:
    return os.environ.get("KV_STORAGE_TEST_ELASTICSEARCH_URI") or _local_node("test", [])


@pytest.fixture(scope="session")
def secured_es(_local_node: Callable[[str, list[str]], str]) -> Node:
    """A node with security on and a file-realm superuser, for basic authentication."""
    url = os.environ.get("KV_STORAGE_TEST_SECURED_ELASTICSEARCH_URI")
    if url:
        return Node(
            url,
            os.environ["KV_STORAGE_TEST_SECURED_ELASTICSEARCH_USERNAME"],
            os.environ["KV_STORAGE_TEST_SECURED_ELASTICSEARCH_PASSWORD"],
        )
    username, password = "kv-admin", f"pw-{uuid.uuid4().hex}"
    return Node(
        _local_node("test-secured", ["--security", f"{username}:{password}"]), username, password
    )


@pytest.fixture
def index_prefix(es_url: str) -> Iterator[str]:
    prefix = f"t-{uuid.uuid4().hex[:8]}-"
    yield prefix
    with Elasticsearch(es_url) as client:
        for name in client.indices.get(index=f"{prefix}*", expand_wildcards="all"):
            client.indices.delete(index=name, ignore_unavailable=True)
        templates = client.indices.get_index_template()["index_templates"]
        for template in templates:
            if template["name"].startswith(prefix):
                client.indices.delete_index_template(name=template["name"])


@pytest.fixture
async def es(es_url: str) -> AsyncIterator[AsyncElasticsearch]:
    client = AsyncElasticsearch(es_url)
    yield client
    await client.close()


@pytest.fixture
def make_config(es_url: str, index_prefix: str) -> Callable[..., Config]:
    """A configuration for this test's prefix; keyword arguments are KV_STORAGE_* variables."""

    def make(**environ: str) -> Config:
        return load_config(
            environ={
                "KV_STORAGE_ELASTICSEARCH_URI": es_url,
                "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
                **environ,
            }
        )

    return make


@pytest.fixture
async def initialised_config(
    make_config: Callable[..., Config], es: AsyncElasticsearch, index_prefix: str
) -> Config:
    """A configuration whose indices and templates exist."""
    await initialise(es, index_prefix)
    return make_config()


@dataclass(frozen=True)
class StorageRef:
    id: str
    secret_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Secret-Key": self.secret_key}


StorageFactory = Callable[..., Awaitable[StorageRef]]


@pytest.fixture
def create_storage(es: AsyncElasticsearch, index_prefix: str) -> StorageFactory:
    """Writes a registry document directly, as the original CloudStack plugin did."""

    async def create(
        storage_type: str = "ACCOUNT",
        *,
        history_enabled: bool = False,
        deleted: bool = False,
        expiration_timestamp: int | None = None,
        storage_id: str | None = None,
    ) -> StorageRef:
        ref = StorageRef(storage_id or str(uuid.uuid4()), uuid.uuid4().hex)
        document: dict[str, object] = {
            "type": storage_type,
            "deleted": deleted,
            "history_enabled": history_enabled,
            "secret_key": ref.secret_key,
            "last_updated": int(time.time() * 1000),
        }
        if storage_type == "TEMP":
            document["ttl"] = 3_600_000
            document["expiration_timestamp"] = (
                expiration_timestamp or int(time.time() * 1000) + 3_600_000
            )
        await es.index(index=f"{index_prefix}storage-registry", id=ref.id, document=document)
        return ref

    return create


@pytest.fixture
async def api(
    initialised_config: Config,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> TestClient[web.Request, web.Application]:
    """The service, in process, on this test's prefix."""
    return await aiohttp_client(create_app(initialised_config))


@dataclass
class CountingProxy:
    """Forwards to the real node and counts what passes: how many requests reach Elasticsearch."""

    url: str
    requests: list[tuple[str, str]]

    def count(self, method: str | None = None, path_part: str = "") -> int:
        return sum(
            1
            for seen_method, path in self.requests
            if (method is None or seen_method == method) and path_part in path
        )


@pytest.fixture
async def es_proxy(
    es_url: str, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[CountingProxy]:
    session = aiohttp.ClientSession(auto_decompress=False)
    requests: list[tuple[str, str]] = []

    async def forward(request: web.Request) -> web.Response:
        requests.append((request.method, request.raw_path))
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with session.request(
            request.method, es_url + request.raw_path, headers=headers, data=await request.read()
        ) as answer:
            body = await answer.read()
            passed = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            return web.Response(status=answer.status, body=body, headers=passed)

    proxy = web.Application(client_max_size=1024**3)
    proxy.router.add_route("*", "/{tail:.*}", forward)
    server = await aiohttp_server(proxy)
    yield CountingProxy(f"http://127.0.0.1:{server.port}", requests)
    await session.close()
