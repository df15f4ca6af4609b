"""The error middleware: every failure leaves as a JSON body with a clear message."""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from marshmallow import ValidationError

from kv_storage.app import create_app
from kv_storage.app_keys import SERVICE
from kv_storage.config import Config
from kv_storage.errors import ConflictError, NotFoundError
from kv_storage.middlewares import describe_validation_error
from tests.helpers import ClientFactory


async def test_unknown_route_is_404_json(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(make_config()))
    response = await client.get("/no/such/thing")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert await response.json() == {"error": "no such endpoint"}


async def test_wrong_method_is_405_json_with_allow(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(make_config()))
    response = await client.delete("/health")
    assert response.status == 405
    assert response.headers["Allow"] == "GET,HEAD"  # HEAD answers like GET
    assert "DELETE is not allowed" in (await response.json())["error"]


async def test_validation_error_is_400_naming_the_parameter(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(make_config()))
    response = await client.get("/health", params={"detailed": "perhaps"})
    assert response.status == 400
    assert await response.json() == {"error": "detailed: Not a valid boolean."}


def _app_with(
    config: Config, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.Application:
    app = create_app(config)
    app.router.add_route("*", path, handler)
    return app


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (NotFoundError("storage x not found"), 404, "storage x not found"),
        (ConflictError("changed"), 409, "changed"),
    ],
)
async def test_service_errors_carry_their_status(
    make_config: Callable[..., Config],
    aiohttp_client: ClientFactory,
    error: Exception,
    status: int,
    message: str,
) -> None:
    async def failing(request: web.Request) -> web.Response:
        raise error

    client = await aiohttp_client(_app_with(make_config(), "/failing", failing))
    response = await client.get("/failing")
    assert response.status == status
    assert await response.json() == {"error": message}


async def test_unexpected_error_is_500_without_details(
    make_config: Callable[..., Config],
    aiohttp_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def buggy(request: web.Request) -> web.Response:
        raise RuntimeError("internal detail: token=abc")

    client = await aiohttp_client(_app_with(make_config(), "/buggy", buggy))
    with caplog.at_level(logging.ERROR):
        response = await client.get("/buggy")
    assert response.status == 500
    body = await response.json()
    request_id = response.headers["X-Request-ID"]
    assert body == {"error": f"internal error of the service (request id {request_id})"}
    assert "/buggy" in caplog.text  # the operator sees where it happened
    assert "internal detail" in caplog.text


async def test_request_timeout_is_500_naming_the_cause(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory
) -> None:
    never = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    config = make_config(KV_STORAGE_APP_REQUEST_TIMEOUT="200ms")
    client = await aiohttp_client(_app_with(config, "/slow", slow))
    async with asyncio.timeout(5):
        response = await client.get("/slow")
    assert response.status == 500
    request_id = response.headers["X-Request-ID"]
    assert await response.json() == {
        "error": f"the request was not processed within 0.2 s (request id {request_id})"
    }


async def test_body_over_the_limit_is_413(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory
) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=await request.text())

    config = make_config(KV_STORAGE_SERVER_MAX_BODY_SIZE="1024")
    client = await aiohttp_client(_app_with(config, "/echo", echo))
    assert (await client.post("/echo", data="x" * 1024)).status == 200
    response = await client.post("/echo", data="x" * 1025)
    assert response.status == 413
    assert "1024" in (await response.json())["error"]


async def test_elasticsearch_error_is_500_naming_its_class_and_the_request(
    make_config: Callable[..., Config],
    aiohttp_client: ClientFactory,
    index_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client learns the kind of failure and the request id; Elasticsearch's own reason
    (index names, internals) goes to the log, under that request id."""

    async def read_missing(request: web.Request) -> web.Response:
        await request.app[SERVICE].client.get(index=f"{index_prefix}absent", id="1")
        return web.Response()

    client = await aiohttp_client(_app_with(make_config(), "/missing/{key}", read_missing))
    with caplog.at_level(logging.ERROR):
        response = await client.get("/missing/a-key", headers={"X-Request-ID": "trace-me-42"})
    assert response.status == 500
    text = await response.text()
    refused = "Elasticsearch refused the request (request id trace-me-42)"
    assert json.loads(text) == {"error": refused}
    assert "index_not_found_exception" not in text
    assert f"{index_prefix}absent" not in text
    assert "index_not_found_exception" in caplog.text
    assert "GET /missing/{key}" in caplog.text  # the route, not the path with its key
    assert "a-key" not in caplog.text


async def test_unreachable_elasticsearch_is_500_without_credentials(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory, unused_tcp_port: int
) -> None:
    async def touch(request: web.Request) -> web.Response:
        await request.app[SERVICE].client.indices.exists(index="anything")
        return web.Response()

    config = make_config(
        KV_STORAGE_ELASTICSEARCH_URI=f"http://127.0.0.1:{unused_tcp_port}",
        KV_STORAGE_ELASTICSEARCH_AUTH_USERNAME="kv-user",
        KV_STORAGE_ELASTICSEARCH_AUTH_PASSWORD="never-shown-password",
    )
    client = await aiohttp_client(_app_with(config, "/touch", touch))
    response = await client.get("/touch")
    assert response.status == 500
    text = await response.text()
    assert json.loads(text)["error"].startswith("Elasticsearch is unreachable")
    assert "never-shown-password" not in text


async def test_a_body_the_client_cannot_encode_is_not_logged(
    make_config: Callable[..., Config],
    aiohttp_client: ClientFactory,
    index_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The Elasticsearch client's message for a body it cannot encode holds the whole body: a
    registry document, for one, holds the storage's secret."""

    async def write_unencodable(request: web.Request) -> web.Response:
        document = {"secret_key": "never-logged-secret", "name": "\ud800"}
        await request.app[SERVICE].client.index(index=f"{index_prefix}any", document=document)
        return web.Response()

    client = await aiohttp_client(_app_with(make_config(), "/write", write_unencodable))
    with caplog.at_level(logging.ERROR):
        response = await client.get("/write")
    assert response.status == 500
    assert "could not be encoded as JSON" in caplog.text
    assert "never-logged-secret" not in caplog.text
    assert "never-logged-secret" not in await response.text()


@pytest.mark.parametrize(
    ("messages", "described"),
    [
        (
            {"headers": {"_schema": ["give If-Match or If-None-Match, not both"]}},
            "give If-Match or If-None-Match, not both",
        ),
        ({"headers": {"If-Match": ["'x' is no tag"]}}, "If-Match: 'x' is no tag"),
        ({"querystring": {"size": ["Too small."]}}, "size: Too small."),
        ({"key": {"key": ["the key is empty"]}}, "the key is empty"),
    ],
)
def test_a_validation_error_names_its_field_but_not_a_whole_schema_or_part(
    messages: dict[str, Any], described: str
) -> None:
    """A rule of a whole schema (marshmallow's ``_schema``) says in its message what it is
    about, as a part that is one value does."""
    assert describe_validation_error(ValidationError(messages)) == described
