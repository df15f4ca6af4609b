"""HEAD on every GET route: the GET's status and headers, no body; a HEAD of a list reads no
keys and leaves no scroll open."""

from collections.abc import Callable

import pytest
from aiohttp import web
from elasticsearch import AsyncElasticsearch

from kv_storage.actors.storage import ListKeys
from kv_storage.app import create_app
from kv_storage.app_keys import SERVICE
from kv_storage.config import Config
from kv_storage.es.names import IndexNames
from tests.conftest import StorageFactory, StorageRef
from tests.helpers import ClientFactory

TOKEN = "head-admin-token-0123456789abcdefgh"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}

# Headers that differ between any two answers, whatever the method.
_PER_ANSWER = {"date", "x-request-id"}


@pytest.fixture
async def app(make_config: Callable[..., Config], initialised_config: Config) -> web.Application:
    return create_app(
        make_config(KV_STORAGE_ADMIN_TOKEN=TOKEN, KV_STORAGE_ELASTICSEARCH_SCROLL_PAGE_SIZE="2")
    )


def _get_routes(app: web.Application) -> set[str]:
    return {
        route.resource.canonical
        for route in app.router.routes()
        if route.method == "GET" and route.resource is not None
    }


def test_every_get_route_has_a_head_route(make_config: Callable[..., Config]) -> None:
    app = create_app(make_config())
    methods: dict[str, set[str]] = {}
    for route in app.router.routes():
        if route.resource is not None:
            methods.setdefault(route.resource.canonical, set()).add(route.method)
    without_head = sorted(path for path, seen in methods.items() if "HEAD" not in seen)
    assert "/health" in methods
    assert not [path for path in without_head if "GET" in methods[path]]


def _cases(storage: StorageRef) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """Requests for every GET route (by route template): a success and, where there is one,
    an error, each with the headers it is sent with."""
    s, secret = storage.id, storage.headers
    return {
        "/health": [("/health", {}), ("/health?detailed=true", {}), ("/health?detailed=x", {})],
        "/get/{storage_id}/{key}": [
            (f"/get/{s}/k", secret),
            (f"/get/{s}/missing", secret),
            (f"/get/{s}/k", {}),
        ],
        "/list/{storage_id}": [(f"/list/{s}", secret), ("/list/nothing", secret)],
        "/history/{storage_id}": [(f"/history/{s}", secret), (f"/history/{s}?page=0", secret)],
        "/admin/storages": [("/admin/storages?account=acme", ADMIN), ("/admin/storages", {})],
        "/admin/storages/{storage_id}": [(f"/admin/storages/{s}", ADMIN)],
        "/metrics": [("/metrics", {})],
        "/api/docs/swagger.json": [("/api/docs/swagger.json", {})],
        "/api/docs/openapi.json": [("/api/docs/openapi.json", {})],
        "/api/docs": [("/api/docs", {})],
        "/api/docs/static": [("/api/docs/static/swagger-ui/swagger-ui.css", {})],
    }


async def test_head_answers_the_gets_status_and_headers_without_a_body(
    app: web.Application, aiohttp_client: ClientFactory, create_storage: StorageFactory
) -> None:
    client = await aiohttp_client(app)
    storage = await create_storage(history_enabled=True)
    await client.put(
        f"/set/{storage.id}/k", data=b"v", headers={**storage.headers, "Content-Type": "text/plain"}
    )
    cases = _cases(storage)
    assert set(cases) == _get_routes(app), "every GET route needs its HEAD case here"
    for url, headers in (case for route_cases in cases.values() for case in route_cases):
        get = await client.get(url, headers=headers)
        get_body = await get.read()
        head = await client.head(url, headers=headers)
        assert await head.read() == b"", url
        assert head.status == get.status, url
        differ = set(_PER_ANSWER)
        if url == "/metrics":
            differ.add("content-length")  # the scrape between them changed the counts
        if get.headers.get("Transfer-Encoding") == "chunked":
            differ.add("transfer-encoding")  # a streamed GET; HEAD has no body to chunk
        elif "content-length" not in differ:
            assert int(head.headers["Content-Length"]) == len(get_body), url
        expected = {k.lower(): v for k, v in get.headers.items() if k.lower() not in differ}
        got = {k.lower(): v for k, v in head.headers.items() if k.lower() not in differ}
        assert got == expected, url


async def test_head_of_the_health_probe_is_200(
    app: web.Application, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(app)
    response = await client.head("/health")
    assert response.status == 200
    assert response.headers["Content-Length"] == "0"
    assert response.headers["Content-Type"] == "text/plain;charset=utf-8"


async def _open_scrolls(es: AsyncElasticsearch, index: str) -> int:
    stats = await es.indices.stats(index=index, metric="search")
    return int(stats["_all"]["total"]["search"]["scroll_current"])


async def test_head_of_a_list_reads_no_keys_and_leaves_no_scroll_open(
    app: web.Application,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    client = await aiohttp_client(app)
    storage = await create_storage()
    pairs = {f"k{n}": "v" for n in range(7)}  # more pages than one, at a page size of 2
    written = await client.put(f"/set/{storage.id}", json=pairs, headers=storage.headers)
    assert written.status == 200
    index = IndexNames(index_prefix).data(storage.id)

    # The measurement can see a scroll: a list whose first page is read holds one open.
    found = await app[SERVICE].cache.look_up(storage.id)
    assert found is not None
    scan = await app[SERVICE].storage.ask(ListKeys(found))
    assert await _open_scrolls(es, index) == 1
    await scan.close()
    assert await _open_scrolls(es, index) == 0

    head = await client.head(f"/list/{storage.id}", headers=storage.headers)
    assert head.status == 200
    assert await head.read() == b""

    assert await _open_scrolls(es, index) == 0  # released before the answer went
    get = await client.get(f"/list/{storage.id}", headers=storage.headers)
    assert sorted(await get.json()) == sorted(pairs)  # the connection still serves whole lists
