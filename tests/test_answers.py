"""Content types byte for byte as the original sent them, on every kind of answer: a value,
JSON (streamed too), empty 200s, errors; and the answers that keep their own type."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from kv_storage.answers import original_form
from kv_storage.app import create_app
from kv_storage.config import Config
from tests.conftest import StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory, ServerFactory

# The original's strings, written out here rather than imported: they are the contract.
JSON = "application/json;charset=utf-8"
TEXT = "text/plain;charset=utf-8"
TOKEN = "answers-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    status: int
    content_type: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
async def client(
    make_config: Callable[..., Config], initialised_config: Config, aiohttp_client: ClientFactory
) -> Client:
    config = make_config(KV_STORAGE_ADMIN_TOKEN=TOKEN, KV_STORAGE_SERVER_MAX_BODY_SIZE="1024")
    return await aiohttp_client(create_app(config))


async def _check(client: Client, calls: list[Call]) -> None:
    """Makes the calls in order; reports every call whose status or exact type is not right."""
    wrong = []
    for call in calls:
        response = await client.request(call.method, call.path, **call.kwargs)
        got = (response.status, response.headers.get("Content-Type"))
        if got != (call.status, call.content_type):
            wrong.append(f"{call.method} {call.path}: {got} != {(call.status, call.content_type)}")
        await response.read()
    assert not wrong, "\n".join(wrong)


def _text(storage: StorageRef) -> dict[str, Any]:
    return {"headers": {**storage.headers, "Content-Type": "text/plain"}}


def _json(storage: StorageRef, body: Any) -> dict[str, Any]:
    return {"headers": storage.headers, "json": body}


async def test_values_and_empty_answers_are_text_plain_without_a_space(
    client: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage(history_enabled=True)
    temp = await create_storage("TEMP")
    s = storage.id
    await _check(
        client,
        [
            Call("PUT", f"/set/{s}/k", 200, TEXT, {**_text(storage), "data": b"v"}),
            Call("GET", f"/get/{s}/k", 200, TEXT, {"headers": storage.headers}),
            Call("DELETE", f"/delete/{s}/k", 200, TEXT, {"headers": storage.headers}),
            Call("POST", f"/clear/{s}", 200, TEXT, {"headers": storage.headers}),
            Call("PUT", f"/storage/{temp.id}?ttl=60000", 200, TEXT, {"headers": temp.headers}),
            Call("DELETE", f"/storage/{temp.id}", 200, TEXT, {"headers": temp.headers}),
            Call("GET", "/health", 200, TEXT),
            Call("HEAD", "/health", 200, TEXT),
        ],
    )


async def test_json_answers_have_no_space_before_charset(
    client: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage(history_enabled=True)
    s = storage.id
    await _check(
        client,
        [
            Call("PUT", f"/set/{s}", 200, JSON, _json(storage, {"a": "1", "b": "2"})),
            Call("POST", f"/get/{s}", 200, JSON, _json(storage, ["a", "x"])),
            Call("POST", f"/delete/{s}", 200, JSON, _json(storage, ["b"])),
            Call("GET", f"/list/{s}", 200, JSON, {"headers": storage.headers}),  # streamed
            Call("GET", f"/history/{s}", 200, JSON, {"headers": storage.headers}),
            Call("GET", "/health?detailed=true", 200, JSON),
            Call("GET", "/admin/storages?account=acme", 200, JSON, {"headers": ADMIN}),
        ],
    )
    scroll = await client.get(f"/history/{s}?scroll=60000", headers=storage.headers)
    assert (scroll.status, scroll.headers["Content-Type"]) == (200, JSON)
    scroll_id = (await scroll.json())["scrollId"]
    body = {"scrollId": scroll_id, "timeout": 60000}
    await _check(client, [Call("POST", "/history", 200, JSON, {"json": body})])

    created = await client.post(
        "/admin/storages", json={"type": "ACCOUNT", "account": "acme", "name": "n"}, headers=ADMIN
    )
    assert (created.status, created.headers["Content-Type"]) == (201, JSON)
    new = (await created.json())["id"]
    await _check(
        client,
        [
            Call("GET", f"/admin/storages/{new}", 200, JSON, {"headers": ADMIN}),
            Call("POST", f"/admin/storages/{new}/secret-key", 200, JSON, {"headers": ADMIN}),
            Call("DELETE", f"/admin/storages/{new}", 200, JSON, {"headers": ADMIN}),
        ],
    )


async def test_error_answers_are_json_without_a_space(
    client: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage(history_enabled=True)
    s = storage.id
    octets = {"headers": {**storage.headers, "Content-Type": "application/octet-stream"}}
    await _check(
        client,
        [
            Call("PUT", f"/set/{s}/k", 400, JSON, {**octets, "data": b"v"}),
            Call("GET", "/health?detailed=perhaps", 400, JSON),
            Call("GET", f"/history/{s}?page=-1", 400, JSON, {"headers": storage.headers}),
            Call("GET", f"/get/{s}/k", 401, JSON),
            Call("GET", f"/get/{s}/k", 401, JSON, {"headers": {"Secret-Key": "wrong"}}),
            Call("GET", "/admin/storages?account=a", 401, JSON),
            Call("GET", f"/get/{s}/missing", 404, JSON, {"headers": storage.headers}),
            Call("GET", "/get/no-such-storage/k", 404, JSON, {"headers": storage.headers}),
            Call("HEAD", "/get/no-such-storage/k", 404, JSON, {"headers": storage.headers}),
            Call("GET", "/no/such/endpoint", 404, JSON),
            Call("DELETE", "/health", 405, JSON),
            Call("PUT", f"/set/{s}/k", 413, JSON, {**_text(storage), "data": b"v" * 4096}),
        ],
    )


async def test_an_unhealthy_answer_and_a_disabled_admin_api_are_json_without_a_space(
    make_config: Callable[..., Config], index_prefix: str, aiohttp_client: ClientFactory
) -> None:
    # Nothing created under this prefix: every check fails (500), and no admin.token (403).
    client = await aiohttp_client(
        create_app(make_config(KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX=f"{index_prefix}none-"))
    )
    await _check(
        client,
        [
            Call("GET", "/health?detailed=true", 500, JSON),
            Call("HEAD", "/health?detailed=true", 500, JSON),
            Call("GET", "/admin/storages?account=a", 403, JSON),
        ],
    )


async def test_metrics_and_the_api_document_keep_their_own_types(client: Client) -> None:
    metrics = await client.get("/metrics")
    assert metrics.headers["Content-Type"] == CONTENT_TYPE_LATEST  # Prometheus' exact type
    spec = await client.get("/api/docs/swagger.json")
    assert spec.headers["Content-Type"] == "application/json; charset=utf-8"
    ui = await client.get("/api/docs")
    assert ui.headers["Content-Type"].startswith("text/html")


async def _raw_answer(port: int, request: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request.encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


async def test_the_header_bytes_on_the_wire(
    initialised_config: Config,
    aiohttp_server: ServerFactory,
    create_storage: StorageFactory,
) -> None:
    """What a client that compares the raw header line sees, with no HTTP library between."""
    port = (await aiohttp_server(create_app(initialised_config))).port
    assert port is not None
    storage = await create_storage()
    set_request = (
        f"PUT /set/{storage.id}/k HTTP/1.1\r\nHost: kv\r\nSecret-Key: {storage.secret_key}\r\n"
        "Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nvalue"
    )
    assert b"\r\nContent-Type: text/plain;charset=utf-8\r\n" in await _raw_answer(port, set_request)
    get_request = (
        f"GET /get/{storage.id}/k HTTP/1.1\r\nHost: kv\r\nSecret-Key: {storage.secret_key}\r\n"
        "Connection: close\r\n\r\n"
    )
    value = await _raw_answer(port, get_request)
    assert value.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Type: text/plain;charset=utf-8\r\n" in value
    assert value.endswith(b"\r\n\r\nvalue")
    listed = await _raw_answer(
        port,
        f"GET /list/{storage.id} HTTP/1.1\r\nHost: kv\r\nSecret-Key: {storage.secret_key}\r\n"
        "Connection: close\r\n\r\n",
    )
    assert b"\r\nContent-Type: application/json;charset=utf-8\r\n" in listed
    missing = await _raw_answer(
        port, "GET /get/nothing/k HTTP/1.1\r\nHost: kv\r\nConnection: close\r\n\r\n"
    )
    assert missing.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b"\r\nContent-Type: application/json;charset=utf-8\r\n" in missing


@pytest.mark.parametrize(
    ("declared", "original"),
    [
        ("application/json; charset=utf-8", JSON),
        ("application/json", JSON),
        ("text/plain; charset=utf-8", TEXT),
        ("Text/Plain;  Charset=UTF-8", TEXT),
        ("text/plain", TEXT),
        ("text/plain; version=1.0.0; charset=utf-8", None),  # Prometheus' type is its own
        ("text/plain; charset=iso-8859-1", None),
        ("text/html; charset=utf-8", None),
        ("application/octet-stream", None),
    ],
)
def test_the_original_form_of_a_content_type(declared: str, original: str | None) -> None:
    assert original_form(declared) == original
