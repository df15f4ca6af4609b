"""The attacks of the security review, each replayed against the real node: forged and
replayed history scroll tokens, work before authorisation, unbounded bodies and scrolls.

The Swagger UI's findings are in ``test_api_spec.py`` (they need Chromium); the low findings
that concern logs and configuration are in ``test_logs.py`` and ``test_config.py``.
"""

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage.app import create_app
from kv_storage.config import Config
from kv_storage.es.names import IndexNames
from tests.conftest import CountingProxy, StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory, path
from tests.processes import service_process
from tests.waiting import wait_until

ADMIN_TOKEN = "security-tests-admin-token-0123456789abcdef"


async def _write_history(
    es: AsyncElasticsearch, index_prefix: str, storage: StorageRef, count: int, *, key: str
) -> list[tuple[str, int]]:
    """``count`` records in the original layout, straight into the storage's history index;
    answers (value, timestamp) of each, in the order a default search returns them."""
    index = IndexNames(index_prefix).history(storage.id)
    records = [(f"{key}-{n}", 1_000 + n) for n in range(count)]
    for value, timestamp in records:
        document = {"key": key, "value": value, "operation": "set", "timestamp": timestamp}
        await es.index(index=index, document=document)
    await es.indices.refresh(index=index)
    return records


async def _open_scroll(api: Client, storage: StorageRef, size: int) -> dict[str, Any]:
    response = await api.get(
        f"/history/{storage.id}",
        params={"scroll": "60000", "size": str(size)},
        headers=storage.headers,
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def _continue(api: Client, scroll_id: str) -> tuple[int, dict[str, Any]]:
    response = await api.post("/history", json={"scrollId": scroll_id, "timeout": 60000})
    body: dict[str, Any] = await response.json()
    return response.status, body


def _values(batch: dict[str, Any]) -> list[str]:
    return [item["value"] for item in batch["items"]]


def _tampered(token: str, **changes: Any) -> str:
    """The token with fields of its payload changed and its signature kept."""
    payload, signature = token.split(".")
    content = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    content.update(changes)
    raw = json.dumps(content, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + signature


@pytest.fixture
async def proxied_api(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    es_proxy: CountingProxy,
) -> Client:
    """The service talking to the node through a proxy that counts its requests."""
    config = make_config(
        KV_STORAGE_ELASTICSEARCH_URI=es_proxy.url,
        KV_STORAGE_ADMIN_TOKEN=ADMIN_TOKEN,
        # Registry polls would make the cache forget storages created after its start.
        KV_STORAGE_APP_CACHE_UPDATE_TIME="1 hour",
    )
    return await aiohttp_client(create_app(config))


# ------------------------------------------------------------------ history scroll tokens


async def test_a_forged_token_reads_nothing_and_leaves_the_victims_scroll_alone(
    proxied_api: Client,
    es_proxy: CountingProxy,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """The review's attack: with storage A's secret, open a scroll; turn A's token into one
    that names storage B (or claims another position or count). Refused with 400, before any
    search, and B's own scroll goes on exactly where it was."""
    attacker = await create_storage(history_enabled=True)
    victim = await create_storage(history_enabled=True)
    await _write_history(es, index_prefix, attacker, 3, key="mine")
    victims = await _write_history(es, index_prefix, victim, 6, key="secret")
    victim_first = await _open_scroll(proxied_api, victim, size=2)
    own = (await _open_scroll(proxied_api, attacker, size=2))["scrollId"]
    searches = es_proxy.count(path_part="/_search")

    forgeries = [
        _tampered(own, s=victim.id),
        _tampered(own, s=victim.id, r=0, N=10**18),
        _tampered(own, b=10**9, a=[None, -1]),
        own.split(".")[0] + "." + base64.urlsafe_b64encode(b"\0" * 32).decode().rstrip("="),
        own.split(".")[0],
        base64.urlsafe_b64encode(json.dumps(["DXF1ZXJ5QW5kRmV0Y2gB", 10**9]).encode()).decode(),
    ]
    for forged in forgeries:
        status, body = await _continue(proxied_api, forged)
        assert status == 400, body
        assert body["error"].startswith("the scroll id is unknown or expired")
        assert "items" not in body
    assert es_proxy.count(path_part="/_search") == searches  # nothing was searched

    status, second = await _continue(proxied_api, victim_first["scrollId"])
    assert status == 200
    assert _values(victim_first) + _values(second) == [value for value, _ in victims[:4]]


async def test_a_token_is_signed_for_its_storage_and_its_secret(
    proxied_api: Client, create_storage: StorageFactory, es: AsyncElasticsearch, index_prefix: str
) -> None:
    """Re-keying or deleting a storage ends its scrolls; one storage's token never answers
    with another storage's records, even once that storage has the same secret."""
    storage = await create_storage(history_enabled=True)
    await _write_history(es, index_prefix, storage, 4, key="k")
    first = await _open_scroll(proxied_api, storage, size=1)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    rotated = await proxied_api.post(f"/admin/storages/{storage.id}/secret-key", headers=admin)
    assert rotated.status == 200
    status, body = await _continue(proxied_api, first["scrollId"])
    assert status == 400
    assert "has ended" in body["error"]

    rekeyed = StorageRef(storage.id, (await rotated.json())["secretKey"])
    again = await _open_scroll(proxied_api, rekeyed, size=1)
    assert (await _continue(proxied_api, again["scrollId"]))[0] == 200
    deleted = await proxied_api.delete(f"/admin/storages/{storage.id}", headers=admin)
    assert deleted.status == 200
    status, body = await _continue(proxied_api, again["scrollId"])
    assert status == 400
    assert "has ended" in body["error"]


async def test_a_token_of_a_storage_that_stopped_keeping_history_ends(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """Changed in the registry by another process (the plugin): seen at the next poll."""
    api = await aiohttp_client(create_app(make_config(KV_STORAGE_APP_CACHE_UPDATE_TIME="100ms")))
    storage = await create_storage(history_enabled=True)
    await _write_history(es, index_prefix, storage, 3, key="k")
    first = await _open_scroll(api, storage, size=1)
    await es.update(
        index=IndexNames(index_prefix).registry,
        id=storage.id,
        doc={"history_enabled": False, "last_updated": int(time.time() * 1000)},
        refresh=True,
    )

    async def ended() -> bool:
        status, body = await _continue(api, first["scrollId"])
        return status == 400 and "has ended" in body["error"]

    await wait_until(ended, timeout_s=10, what="the scroll ending")


async def test_tokens_work_on_every_instance_and_expire(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """Two instances share the signing key kept in Elasticsearch: a scroll opened on one
    goes on on the other. A token lives ``scroll`` (then ``timeout``) ms."""
    one = await aiohttp_client(create_app(make_config()))
    other = await aiohttp_client(create_app(make_config()))
    storage = await create_storage(history_enabled=True)
    records = await _write_history(es, index_prefix, storage, 5, key="k")
    first = await _open_scroll(one, storage, size=2)
    status, second = await _continue(other, first["scrollId"])
    assert status == 200
    status, third = await _continue(one, second["scrollId"])
    assert status == 200
    assert _values(first) + _values(second) + _values(third) == [v for v, _ in records]

    short = await one.get(
        f"/history/{storage.id}", params={"scroll": "300", "size": "1"}, headers=storage.headers
    )
    token = (await short.json())["scrollId"]

    async def expired() -> bool:
        response = await other.post("/history", json={"scrollId": token, "timeout": 60000})
        return response.status == 400 and "expired" in (await response.json())["error"]

    await wait_until(expired, timeout_s=10, what="the token's expiry")


async def test_the_signing_key_is_made_once_for_every_instance(
    make_config: Callable[..., Config],
    aiohttp_client: ClientFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    create_storage: StorageFactory,
) -> None:
    """A cluster initialised before keys existed: the first instance that needs the key
    makes it, create-only, and instances racing to make it end up with the same one."""
    from kv_storage.es.definitions import index_definitions

    for definition in index_definitions(index_prefix):
        if definition.base_name == "storage-registry":
            await es.indices.create(index=index_prefix + definition.base_name, **definition.body)
    apps = [await aiohttp_client(create_app(make_config())) for _ in range(3)]
    storage = await create_storage(history_enabled=True)
    await _write_history(es, index_prefix, storage, 2, key="k")
    opened = await asyncio.gather(*(_open_scroll(api, storage, size=1) for api in apps))
    for api in apps:
        for batch in opened:
            assert (await _continue(api, batch["scrollId"]))[0] == 200
    keys = await es.search(index=f"{index_prefix}storage-signing-keys")
    assert keys["hits"]["total"]["value"] == 1


async def test_history_scrolls_leave_no_context_open(
    proxied_api: Client,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """The review's third finding: ~500 history scrolls once blocked every scroll on the
    node for a day. Now 200 scrolls, opened and continued and left unfinished, hold none."""

    async def open_contexts() -> int:
        stats = await es.nodes.stats(metric="indices", index_metric="search")
        return sum(node["indices"]["search"]["scroll_current"] for node in stats["nodes"].values())

    storage = await create_storage(history_enabled=True)
    await _write_history(es, index_prefix, storage, 3, key="k")
    before = await open_contexts()
    for _ in range(100):
        batch = await _open_scroll(proxied_api, storage, size=1)
        assert (await _continue(proxied_api, batch["scrollId"]))[0] == 200
    assert await open_contexts() <= before


async def test_a_scroll_sees_each_record_once_in_order_and_none_written_after_it_began(
    proxied_api: Client,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """Records that tie on every requested sort field (same key, same timestamp) are still
    handed out exactly once: the sort ends with a unique tiebreaker. Like a scroll's snapshot,
    a record written while the scroll runs is not part of it."""
    storage = await create_storage(history_enabled=True)
    index = IndexNames(index_prefix).history(storage.id)
    for n in range(23):
        record = {"key": "same", "value": f"v{n:02}", "operation": "set", "timestamp": 7}
        await es.index(index=index, document=record)
    await es.indices.refresh(index=index)
    response = await proxied_api.get(
        f"/history/{storage.id}",
        params={"scroll": "60000", "size": "4", "sort": "key,-timestamp"},
        headers=storage.headers,
    )
    batch = await response.json()
    seen = _values(batch)
    late = {"key": "same", "value": "late", "operation": "set", "timestamp": 7}
    await es.index(index=index, document=late, refresh=True)
    while batch["items"]:
        status, batch = await _continue(proxied_api, batch["scrollId"])
        assert status == 200
        assert batch["total"] == 23
        seen += _values(batch)
    assert seen == [f"v{n:02}" for n in range(23)]


# ------------------------------------------------------------- no work before authorisation


async def _raw_request(
    port: int, head: bytes, body_part: bytes, *, timeout_s: float
) -> tuple[bytes, asyncio.StreamWriter]:
    """Sends the head and part of a body, then waits for the answer's status line without
    sending the rest: a server that waited for the whole body would never answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body_part)
    await writer.drain()
    async with asyncio.timeout(timeout_s):
        status_line = await reader.readline()
    return status_line, writer


@pytest.mark.parametrize(
    ("route", "content_type"),
    [
        ("POST /get/{id}", "application/json"),
        ("PUT /set/{id}", "application/json"),
        ("POST /delete/{id}", "application/json"),
        ("PUT /set/{id}/k", "text/plain"),
    ],
)
async def test_a_body_is_not_read_before_the_caller_is_authorised(
    api: Client, create_storage: StorageFactory, route: str, content_type: str
) -> None:
    """A 63 MiB body, announced and barely begun: an unknown storage is 404 and a wrong
    secret 401 at once, before the body arrives (the server reads none of it)."""
    storage = await create_storage()
    port = api.server.port
    assert port is not None
    method, target = route.split(" ")
    for storage_id, secret, expected in (
        ("no-such-storage", "anything", b" 404 "),
        (storage.id, "not-the-secret", b" 401 "),
        (storage.id, None, b" 401 "),
    ):
        head = (
            f"{method} {target.format(id=storage_id)} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {63 * 1024 * 1024}\r\n"
            + (f"Secret-Key: {secret}\r\n" if secret is not None else "")
            + "\r\n"
        ).encode()
        status_line, writer = await _raw_request(port, head, b'["",' * 1000, timeout_s=5)
        writer.close()
        assert expected in status_line, (route, storage_id, status_line)


async def test_the_event_loop_answers_while_a_huge_body_is_refused(
    make_config: Callable[..., Config],
    initialised_config: Config,
    unused_tcp_port: int,
    index_prefix: str,
    es_url: str,
) -> None:
    """The review's denial of service: a 63 MiB multi-get on a missing storage blocked the
    service for 25 s. Now it is 404 without parsing, and /health answers all the while."""
    environ = {
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
    }
    body = b"[" + b'"",' * (21 * 1024 * 1024) + b'""]'
    assert len(body) > 63 * 1024 * 1024
    async with (
        service_process(environ, unused_tcp_port) as (_, base),
        aiohttp.ClientSession() as session,
    ):
        stop = asyncio.Event()
        slowest = 0.0

        async def probe_health() -> None:
            nonlocal slowest
            while not stop.is_set():
                began = time.monotonic()
                async with asyncio.timeout(2):
                    async with session.get(f"{base}/health") as answer:
                        assert answer.status == 200
                slowest = max(slowest, time.monotonic() - began)
                await asyncio.sleep(0.01)

        prober = asyncio.create_task(probe_health())
        try:
            for _ in range(3):
                async with session.post(
                    f"{base}/get/no-such-storage",
                    data=body,
                    headers={"Secret-Key": "x", "Content-Type": "application/json"},
                ) as answer:
                    assert answer.status == 404
        finally:
            stop.set()
            await prober
    assert slowest < 1.0, f"/health took {slowest:.2f} s while the body was refused"


async def test_json_bodies_and_key_counts_are_bounded(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    config = make_config(
        KV_STORAGE_SERVER_MAX_JSON_BODY_SIZE="2048", KV_STORAGE_SERVER_MAX_KEYS_PER_REQUEST="10"
    )
    api = await aiohttp_client(create_app(config))
    storage = await create_storage()
    json_headers = {**storage.headers, "Content-Type": "application/json"}
    large = json.dumps({f"k{n}": "v" * 300 for n in range(8)}).encode()
    assert len(large) > 2048
    for request in (
        api.put(path("set", storage), data=large, headers=json_headers),
        api.post(path("get", storage), data=large, headers=json_headers),
        # Chunked, so no Content-Length tells the size in advance.
        api.put(path("set", storage), data=_chunks(large), headers=json_headers),
    ):
        response = await request
        assert response.status == 413
        assert "2048" in (await response.json())["error"]
    for operation, body in (
        ("set", {f"k{n}": "v" for n in range(11)}),
        ("get", [f"k{n}" for n in range(11)]),
        ("delete", [f"k{n}" for n in range(11)]),
    ):
        method = "PUT" if operation == "set" else "POST"
        response = await api.request(
            method, path(operation, storage), json=body, headers=storage.headers
        )
        assert response.status == 400
        error = (await response.json())["error"]
        assert "11 keys" in error
        assert "at most 10" in error
    ten = {f"k{n}": "v" for n in range(10)}
    response = await api.put(path("set", storage), json=ten, headers=storage.headers)
    assert (response.status, await response.json()) == (200, dict.fromkeys(ten, True))
    admin_config = make_config(
        KV_STORAGE_SERVER_MAX_JSON_BODY_SIZE="2048", KV_STORAGE_ADMIN_TOKEN=ADMIN_TOKEN
    )
    admin_api = await aiohttp_client(create_app(admin_config))
    response = await admin_api.post(
        "/admin/storages",
        json={"type": "ACCOUNT", "account": "a", "name": "n", "description": "d" * 4096},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status == 413


async def _chunks(raw: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(raw), 512):
        yield raw[start : start + 512]


async def test_deeply_nested_json_is_400_everywhere(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    api = await aiohttp_client(create_app(make_config(KV_STORAGE_ADMIN_TOKEN=ADMIN_TOKEN)))
    storage = await create_storage()
    nested = b"[" * 100_000 + b"]" * 100_000
    for method, target, headers in (
        ("POST", "/admin/storages", {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
        ("POST", f"/get/{storage.id}", storage.headers),
        ("POST", "/history", {}),
    ):
        response = await api.request(
            method, target, data=nested, headers={**headers, "Content-Type": "application/json"}
        )
        assert response.status == 400, (target, await response.text())
        assert "nested too deeply" in (await response.json())["error"]


@pytest.mark.parametrize(
    ("number", "refusal"),
    [
        ("9" * 5000, "a number has more than 4300 digits"),
        ("-" + "9" * 5000, "a number has more than 4300 digits"),
        ("1e400", "the number 1e400 is too large"),
        ("NaN", "NaN is not a JSON value"),
        ("-Infinity", "-Infinity is not a JSON value"),
    ],
)
async def test_json_errors_are_in_the_services_words(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    number: str,
    refusal: str,
) -> None:
    """Issue 24, finding 8: a 5,000-digit integer was answered with Python's own advice
    ("use sys.set_int_max_str_digits()"); numbers JSON does not have were taken."""
    api = await aiohttp_client(create_app(make_config(KV_STORAGE_ADMIN_TOKEN=ADMIN_TOKEN)))
    storage = await create_storage()
    # A 20-digit number next to it sends the body through the standard library's parser.
    multi_set = f'{{"k": {number}, "n": 12345678901234567890}}'.encode()
    admin_body = f'{{"type": "TEMP", "ttl": {number}}}'.encode()
    for method, target, headers, body in (
        ("PUT", f"/set/{storage.id}", storage.headers, multi_set),
        ("PUT", f"/set/{storage.id}", storage.headers, f'{{"k": {number}}}'.encode()),
        ("POST", "/admin/storages", {"Authorization": f"Bearer {ADMIN_TOKEN}"}, admin_body),
    ):
        response = await api.request(
            method, target, data=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert response.status == 400, (target, await response.text())
        error = (await response.json())["error"]
        assert error == f"the body is not valid JSON: {refusal}", (target, error)
        assert "sys." not in error
    # What the bound leaves alone is stored as written, as the original did.
    longest = "9" * 4300
    response = await api.put(
        f"/set/{storage.id}",
        data=f'{{"k": {longest}}}'.encode(),
        headers={**storage.headers, "Content-Type": "application/json"},
    )
    assert (response.status, await response.json()) == (200, {"k": True})
    response = await api.get(path("get", storage, "k"), headers=storage.headers)
    assert await response.text() == longest


@pytest.mark.parametrize("long_number", [False, True])
async def test_unpaired_surrogates_are_400_everywhere(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    long_number: bool,
) -> None:
    """``"\\ud800"`` is half of a UTF-16 pair, no character: orjson refuses it, the standard
    library took it, and an administration call then failed in Elasticsearch's client with
    500 (logging the registry document it could not encode)."""
    api = await aiohttp_client(create_app(make_config(KV_STORAGE_ADMIN_TOKEN=ADMIN_TOKEN)))
    storage = await create_storage()
    extra = ', "n": 12345678901234567890' if long_number else ""
    extra_key = ', "12345678901234567890"' if long_number else ""
    for method, target, headers, body in (
        ("PUT", f"/set/{storage.id}", storage.headers, f'{{"k": "\\ud800"{extra}}}'),
        ("POST", f"/get/{storage.id}", storage.headers, f'["\\udc00"{extra_key}]'),
        (
            "POST",
            "/admin/storages",
            {"Authorization": f"Bearer {ADMIN_TOKEN}"},
            f'{{"type": "ACCOUNT", "account": "a", "name": "x\\ud800y"{extra}}}',
        ),
    ):
        response = await api.request(
            method,
            target,
            data=body.encode(),
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status == 400, (target, await response.text())
        assert "surrogate" in (await response.json())["error"]


# ------------------------------------------------------------------- scans of list and clear


async def test_lists_beyond_the_configured_number_answer_503(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    """Each list holds a scroll context in Elasticsearch until its last page is sent. With
    ``elasticsearch.scroll.max-open = 1``, a list whose client reads slowly keeps the only
    slot: the next list and a clear answer 503 with Retry-After until it ends."""
    config = make_config(
        KV_STORAGE_ELASTICSEARCH_SCROLL_MAX_OPEN="1",
        KV_STORAGE_ELASTICSEARCH_SCROLL_PAGE_SIZE="100",
    )
    api = await aiohttp_client(create_app(config))
    storage = await create_storage()
    for batch in range(10):  # 20,000 keys of 500 bytes: more than the sockets buffer
        pairs = {f"{batch}-{n}-" + "k" * 490: "v" for n in range(2000)}
        response = await api.put(path("set", storage), json=pairs, headers=storage.headers)
        assert response.status == 200
    port = api.server.port
    assert port is not None
    head = f"GET /list/{storage.id} HTTP/1.1\r\nHost: x\r\nSecret-Key: {storage.secret_key}\r\n\r\n"
    status_line, slow_reader = await _raw_request(port, head.encode(), b"", timeout_s=10)
    assert b" 200 " in status_line
    try:
        for method, operation in (("GET", "list"), ("POST", "clear")):
            response = await api.request(method, path(operation, storage), headers=storage.headers)
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            assert "elasticsearch.scroll.max-open" in (await response.json())["error"]
    finally:
        slow_reader.close()

    async def listed() -> bool:
        response = await api.get(path("list", storage), headers=storage.headers)
        return response.status == 200 and len(await response.json()) == 20_000

    await wait_until(listed, timeout_s=30, what="the slot of the closed list coming back")


# ----------------------------------------------------------------------- the low findings


async def _raw_status(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(5):
        status_line = await reader.readline()
    writer.close()
    return status_line


async def test_headers_that_are_not_utf8_are_401(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    api = await aiohttp_client(create_app(make_config(KV_STORAGE_ADMIN_TOKEN=ADMIN_TOKEN)))
    storage = await create_storage()
    port = api.server.port
    assert port is not None
    for request in (
        f"GET /get/{storage.id}/k HTTP/1.1\r\nHost: x\r\nSecret-Key: ".encode()
        + b"\xff\xfe\r\n\r\n",
        b"GET /admin/storages?account=a HTTP/1.1\r\nHost: x\r\n"
        + b"Authorization: Bearer \xff\xfe\r\n\r\n",
    ):
        assert b" 401 " in await _raw_status(port, request)


async def test_unknown_storage_ids_do_not_push_real_storages_out_of_the_cache(
    proxied_api: Client, es_proxy: CountingProxy, create_storage: StorageFactory
) -> None:
    """1,100 requests for random ids once made the next legitimate request a cache miss."""
    storage = await create_storage()
    assert (await proxied_api.get(path("get", storage, "k"), headers=storage.headers)).status == 404
    for _ in range(1_100):
        response = await proxied_api.get(
            path("get", str(uuid.uuid4()), "k"), headers=storage.headers
        )
        assert response.status == 404

    def registry_reads() -> int:
        return es_proxy.count(path_part="storage-registry/_mget", body_part=storage.id.encode())

    assert registry_reads() == 1
    before = registry_reads()
    assert (await proxied_api.get(path("get", storage, "k"), headers=storage.headers)).status == 404
    assert registry_reads() == before


async def test_every_answer_carries_the_security_headers_and_no_server_header(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    html = "<script>alert(1)</script>"
    await api.put(
        path("set", storage, "page"),
        data=html,
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    answers = [
        await api.get(path("get", storage, "page"), headers=storage.headers),  # a value
        await api.get("/health"),
        await api.get("/health?detailed=true"),
        await api.get(path("list", storage), headers=storage.headers),
        await api.get(path("get", storage, "page")),  # an error
        await api.get("/no/such/route"),
        await api.get("/api/docs/swagger.json"),
        await api.get("/metrics"),
    ]
    assert await answers[0].text() == html
    for answer in answers:
        assert "Server" not in answer.headers, answer.url
        assert answer.headers["X-Content-Type-Options"] == "nosniff", answer.url
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
