"""GET /health, plain and detailed, against a real node: healthy, each check missing, down."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage.app import create_app
from kv_storage.config import Config
from kv_storage.es.names import IndexNames
from tests.helpers import ClientFactory

CHECKS = ["STORAGE_REGISTRY", "STORAGE_DATA_TEMPLATE", "STORAGE_HISTORY_TEMPLATE"]


async def test_plain_health_is_200_with_empty_body(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory, unused_tcp_port: int
) -> None:
    # Liveness does not depend on Elasticsearch: this one is unreachable.
    config = make_config(KV_STORAGE_ELASTICSEARCH_URI=f"http://127.0.0.1:{unused_tcp_port}")
    client = await aiohttp_client(create_app(config))
    for params in ({}, {"detailed": "false"}):
        response = await client.get("/health", params=params)
        assert response.status == 200
        assert await response.read() == b""


@pytest.mark.parametrize("detailed", ["yes", "1", "", "truee"])
async def test_detailed_must_be_a_boolean(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory, detailed: str
) -> None:
    client = await aiohttp_client(create_app(make_config()))
    response = await client.get("/health", params={"detailed": detailed})
    assert response.status == 400
    assert "detailed" in (await response.json())["error"]


async def test_detailed_health_when_everything_exists(
    initialised_config: Config, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(initialised_config))
    response = await client.get("/health", params={"detailed": "true"})
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {
        "status": "HEALTHY",
        "checks": [{"name": name, "status": "HEALTHY", "message": "OK"} for name in CHECKS],
    }


@pytest.mark.parametrize("missing", CHECKS)
async def test_each_missing_component_makes_health_500(
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    missing: str,
) -> None:
    if missing == "STORAGE_REGISTRY":
        await es.indices.delete(index=IndexNames(index_prefix).registry)
    else:
        kind = missing.removeprefix("STORAGE_").removesuffix("_TEMPLATE").lower()
        name = getattr(IndexNames(index_prefix), f"{kind}_template")
        await es.indices.delete_index_template(name=name)
    client = await aiohttp_client(create_app(initialised_config))
    response = await client.get("/health", params={"detailed": "true"})
    assert response.status == 500
    body = await response.json()
    assert body["status"] == "UNHEALTHY"
    assert [check["name"] for check in body["checks"]] == CHECKS
    for check in body["checks"]:
        expected = ("UNHEALTHY", "Not found") if check["name"] == missing else ("HEALTHY", "OK")
        assert (check["status"], check["message"]) == expected


async def test_an_outdated_template_is_unhealthy_and_says_to_run_init(
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """A service upgraded before its layout: the data template lacks the key field."""
    name = IndexNames(index_prefix).data_template
    template = (await es.indices.get_index_template(name=name))["index_templates"][0]
    body = template["index_template"]
    body["version"] = 1
    await es.indices.put_index_template(name=name, **body)
    client = await aiohttp_client(create_app(initialised_config))
    response = await client.get("/health", params={"detailed": "true"})
    assert response.status == 500
    checks = {check["name"]: check for check in (await response.json())["checks"]}
    assert checks["STORAGE_DATA_TEMPLATE"] == {
        "name": "STORAGE_DATA_TEMPLATE",
        "status": "UNHEALTHY",
        "message": "Outdated: version 1, this service needs 2; run kv-storage init to upgrade it",
    }
    assert checks["STORAGE_HISTORY_TEMPLATE"]["status"] == "HEALTHY"


async def test_unreachable_elasticsearch_is_unhealthy_with_the_error(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory, unused_tcp_port: int
) -> None:
    config = make_config(KV_STORAGE_ELASTICSEARCH_URI=f"http://127.0.0.1:{unused_tcp_port}")
    client = await aiohttp_client(create_app(config))
    response = await client.get("/health", params={"detailed": "true"})
    assert response.status == 500
    body = await response.json()
    assert body["status"] == "UNHEALTHY"
    assert [check["status"] for check in body["checks"]] == ["UNHEALTHY"] * 3
    assert all(
        check["message"].startswith("Elasticsearch is unreachable") for check in body["checks"]
    )


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A fake, and the only one here: a peer that accepts connections and never answers.

    It stands for an Elasticsearch that hangs (a fault a healthy test node does not produce on
    demand without disturbing the other tests that share it).
    """
    connections: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in connections:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_hanging_elasticsearch_is_unhealthy_within_the_request_timeout(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory, silent_server: int
) -> None:
    config = make_config(
        KV_STORAGE_ELASTICSEARCH_URI=f"http://127.0.0.1:{silent_server}",
        KV_STORAGE_APP_REQUEST_TIMEOUT="1s",
    )
    client = await aiohttp_client(create_app(config))
    started = time.monotonic()
    response = await client.get("/health", params={"detailed": "true"})
    elapsed = time.monotonic() - started
    assert response.status == 500
    body = await response.json()
    assert [check["status"] for check in body["checks"]] == ["UNHEALTHY"] * 3
    assert "did not answer" in body["checks"][0]["message"]
    assert elapsed < 2.0  # bounded by the request timeout (1 s), with slack for a busy machine
