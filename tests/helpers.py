"""What many test modules use: the test client's types, and the storage calls of the
original API in one line each."""

from collections.abc import Awaitable, Callable
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from elasticsearch import AsyncElasticsearch
from yarl import URL

from kv_storage.es.names import IndexNames
from kv_storage.es.placement import Placement, place
from kv_storage.model import Layout, Location
from tests.conftest import StorageRef

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]
ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


def path(operation: str, storage: StorageRef | str, key: str | None = None) -> URL:
    """A path with the key percent-encoded the way clients must send it (``/`` included)."""
    storage_id = storage.id if isinstance(storage, StorageRef) else storage
    raw = f"/{operation}/{storage_id}"
    if key is not None:
        raw += "/" + quote(key, safe="").replace(".", "%2E")
    return URL(raw, encoded=True)


async def put(api: Client, storage: StorageRef, key: str, value: str) -> None:
    response = await api.put(
        path("set", storage, key),
        data=value.encode(),
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    assert response.status == 200, await response.text()


async def get(api: Client, storage: StorageRef, key: str) -> tuple[int, str]:
    response = await api.get(path("get", storage, key), headers=storage.headers)
    return response.status, await response.text()


async def route_requests(es: AsyncElasticsearch, *routes: str) -> int:
    """Requests the node has received on these routes, by its own statistics."""
    stats = await es.nodes.stats(metric="http")
    node = next(iter(stats["nodes"].values()))
    found = node["http"].get("routes", {})
    return sum(found.get(route, {}).get("requests", {}).get("count", 0) for route in routes)


async def closed_to_writes(es: AsyncElasticsearch, index: str) -> bool:
    """Whether ``index`` exists with Elasticsearch's write block on (a deleted storage's)."""
    settings = await es.indices.get_settings(index=index, name="index.blocks.write")
    blocks = settings[index]["settings"].get("index", {}).get("blocks", {})
    return bool(blocks.get("write") == "true")


def placed(index_prefix: str, storage_id: str, layout: str) -> Placement:
    """Where the service keeps a storage's documents (for tests that write or read them
    directly, as another writer would)."""
    return place(IndexNames(index_prefix), Location(storage_id, Layout(layout)))


def per_storage_only(layout: str, why: str) -> None:
    """For a test of what exists in the per-storage layout alone (a storage's own index)."""
    if layout != "per-storage":
        pytest.skip(f"per-storage layout only: {why}")
