"""The key/value endpoints against a real node: every status row of the original README."""

import asyncio
import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from elasticsearch import AsyncElasticsearch
from yarl import URL

from kv_storage.app import create_app
from kv_storage.config import Config
from kv_storage.es.data import DataStore
from kv_storage.es.names import IndexNames
from kv_storage.model import Location
from tests.conftest import BOTH_LAYOUTS, StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory, get, path, per_storage_only, placed, put
from tests.waiting import wait_until

pytestmark = BOTH_LAYOUTS

# --- get and set ---------------------------------------------------------------------------


async def test_set_then_get_returns_the_value_as_text(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    await put(api, storage, "greeting", "héllo wörld")
    response = await api.get(path("get", storage, "greeting"), headers=storage.headers)
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert await response.text() == "héllo wörld"


async def test_get_of_a_missing_key_is_404(api: Client, create_storage: StorageFactory) -> None:
    storage = await create_storage()
    await put(api, storage, "present", "x")
    status, body = await get(api, storage, "absent")
    assert status == 404
    assert "absent" in body


async def test_get_on_a_never_written_storage_is_404(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage("VM")
    assert (await get(api, storage, "k"))[0] == 404


@pytest.mark.parametrize(
    "key",
    [
        "a/b",
        "with space",
        "100%",
        "what?",
        "#hash",
        ".",
        "..",
        "_id",
        "_source",
        "ключ",
        "键/值",
        "a//b",
        "+plus",
        "é",
    ],
)
async def test_edge_keys_round_trip(api: Client, create_storage: StorageFactory, key: str) -> None:
    storage = await create_storage()
    await put(api, storage, key, f"value of {key}")
    assert await get(api, storage, key) == (200, f"value of {key}")
    listed = await (await api.get(path("list", storage), headers=storage.headers)).json()
    assert listed == [key]


@pytest.mark.parametrize("value", ["", " ", "multi\nline\r\n", '{"json": true}', "😀" * 10])
async def test_edge_values_round_trip(
    api: Client, create_storage: StorageFactory, value: str
) -> None:
    storage = await create_storage()
    await put(api, storage, "k", value)
    assert await get(api, storage, "k") == (200, value)


async def test_multi_megabyte_value_round_trips(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    value = "0123456789€üß" * 400_000  # 8 MB of UTF-8
    await put(api, storage, "big", value)
    assert await get(api, storage, "big") == (200, value)


async def test_set_overwrites(api: Client, create_storage: StorageFactory) -> None:
    storage = await create_storage()
    await put(api, storage, "k", "one")
    await put(api, storage, "k", "two")
    assert await get(api, storage, "k") == (200, "two")


@pytest.mark.parametrize(
    "content_type", ["text/plain; charset=utf-8", "text/plain;charset=UTF-8", "TEXT/PLAIN"]
)
async def test_set_accepts_media_type_parameters(
    api: Client, create_storage: StorageFactory, content_type: str
) -> None:
    storage = await create_storage()
    response = await api.put(
        path("set", storage, "k"),
        data=b"v",
        headers={**storage.headers, "Content-Type": content_type},
    )
    assert response.status == 200


@pytest.mark.parametrize("content_type", ["application/json", "application/octet-stream", None])
async def test_set_with_wrong_content_type_is_400(
    api: Client, create_storage: StorageFactory, content_type: str | None
) -> None:
    storage = await create_storage()
    headers = dict(storage.headers)
    if content_type:
        headers["Content-Type"] = content_type
    response = await api.put(path("set", storage, "k"), data=b'"v"', headers=headers)
    assert response.status == 400
    assert "content type must be text/plain" in (await response.json())["error"]
    assert (await get(api, storage, "k"))[0] == 404


async def test_invalid_utf8_body_and_key_are_400(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    headers = {**storage.headers, "Content-Type": "text/plain"}
    body = await api.put(path("set", storage, "k"), data=b"\xff\xfe", headers=headers)
    assert body.status == 400
    assert (await body.json())["error"] == "the body is not valid UTF-8"
    key = await api.put(
        URL(f"/set/{storage.id}/bad%FFkey", encoded=True), data=b"v", headers=headers
    )
    assert key.status == 400
    assert (await key.json())["error"] == "the key is not valid UTF-8"
    multi = await api.put(
        path("set", storage),
        data=b'{"k": "\xff"}',
        headers={**storage.headers, "Content-Type": "application/json"},
    )
    assert multi.status == 400


# --- limits ----------------------------------------------------------------------------------


@pytest.fixture
async def limited_api(
    make_config: Callable[..., Config], initialised_config: Config, aiohttp_client: ClientFactory
) -> Client:
    config = make_config(
        KV_STORAGE_ELASTICSEARCH_LIMIT_KEY_MAX_SIZE="8",
        KV_STORAGE_ELASTICSEARCH_LIMIT_VALUE_MAX_SIZE="10",
        KV_STORAGE_SERVER_MAX_BODY_SIZE="1000",
    )
    return await aiohttp_client(create_app(config))


async def test_key_and_value_limits_on_single_set(
    limited_api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    headers = {**storage.headers, "Content-Type": "text/plain"}
    assert (
        await limited_api.put(path("set", storage, "k" * 8), data=b"v" * 10, headers=headers)
    ).status == 200
    long_key = await limited_api.put(path("set", storage, "é" * 5), data=b"v", headers=headers)
    assert long_key.status == 400
    assert (await long_key.json())["error"] == "the key is 10 bytes of UTF-8; the limit is 8"
    long_value = await limited_api.put(path("set", storage, "k"), data="é" * 6, headers=headers)
    assert long_value.status == 400
    assert (await long_value.json())["error"] == "the value is 12 bytes of UTF-8; the limit is 10"


async def test_multi_set_answers_false_for_pairs_over_the_limits(
    limited_api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    response = await limited_api.put(
        path("set", storage),
        json={"ok": "fits", "key-too-long": "v", "big": "v" * 11, "": "empty key"},
        headers=storage.headers,
    )
    assert response.status == 200
    assert await response.json() == {"ok": True, "key-too-long": False, "big": False, "": False}
    listed = await (await limited_api.get(path("list", storage), headers=storage.headers)).json()
    assert listed == ["ok"]


async def test_body_over_max_body_size_is_413(
    limited_api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    response = await limited_api.put(
        path("set", storage), json={"k": "v" * 2000}, headers=storage.headers
    )
    assert response.status == 413
    assert "1000" in (await response.json())["error"]


# --- authorisation and existence -----------------------------------------------------------


async def test_missing_or_wrong_secret_is_401(api: Client, create_storage: StorageFactory) -> None:
    storage = await create_storage()
    await put(api, storage, "k", "v")
    missing = await api.get(path("get", storage, "k"))
    assert missing.status == 401
    assert (await missing.json())["error"] == "the Secret-Key header is missing"
    wrong = await api.get(
        path("get", storage, "k"), headers={"Secret-Key": storage.secret_key + "x"}
    )
    assert wrong.status == 401
    for method, url in [
        ("POST", path("get", storage)),
        ("PUT", path("set", storage, "k")),
        ("PUT", path("set", storage)),
        ("DELETE", path("delete", storage, "k")),
        ("POST", path("delete", storage)),
        ("GET", path("list", storage)),
        ("POST", path("clear", storage)),
    ]:
        body: dict[str, object] = {}
        if url.path.count("/") == 2 and method != "GET" and "clear" not in url.path:
            body["json"] = {"k": "v"} if method == "PUT" else ["k"]
        elif method == "PUT":
            body["data"] = b"v"
        for secret in ({"Secret-Key": "wrong"}, {}):
            headers = {**secret, "Content-Type": "text/plain"}
            if "json" in body:
                headers.pop("Content-Type")
            response = await api.request(method, url, headers=headers, **body)  # type: ignore[arg-type]
            assert response.status == 401, (method, url, secret, await response.text())
    assert await get(api, storage, "k") == (200, "v")  # nothing changed


async def test_every_endpoint_answers_404_for_a_missing_storage(api: Client) -> None:
    missing = StorageRef("no-such-storage", "whatever")
    for method, url in [
        ("GET", path("get", missing, "k")),
        ("POST", path("get", missing)),
        ("PUT", path("set", missing, "k")),
        ("PUT", path("set", missing)),
        ("DELETE", path("delete", missing, "k")),
        ("POST", path("delete", missing)),
        ("GET", path("list", missing)),
        ("POST", path("clear", missing)),
    ]:
        if (
            url.path.startswith(("/get/no-such-storage", "/delete/no-such-storage"))
            and method == "POST"
        ):
            response = await api.request(method, url, json=["k"], headers=missing.headers)
        elif method == "PUT" and url.path.count("/") == 2:
            response = await api.request(method, url, json={"k": "v"}, headers=missing.headers)
        elif method == "PUT":
            response = await api.request(
                method, url, data=b"v", headers={**missing.headers, "Content-Type": "text/plain"}
            )
        else:
            response = await api.request(method, url, headers=missing.headers)
        assert response.status == 404, (method, url, await response.text())
        assert "does not exist" in (await response.json())["error"]


async def test_storage_ids_of_the_original_suite_work(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage(storage_id="editable-single")
    await put(api, storage, "k", "v")
    assert await get(api, storage, "k") == (200, "v")


async def test_deleted_and_expired_storages_are_404(
    api: Client, create_storage: StorageFactory
) -> None:
    deleted = await create_storage(deleted=True)
    assert (await get(api, deleted, "k"))[0] == 404
    expired = await create_storage("TEMP", expiration_timestamp=int(time.time() * 1000) - 1)
    assert (await get(api, expired, "k"))[0] == 404
    live_temp = await create_storage("TEMP")
    await put(api, live_temp, "k", "v")
    assert await get(api, live_temp, "k") == (200, "v")


async def test_a_temp_storage_answers_404_as_soon_as_it_expires(
    api: Client, create_storage: StorageFactory
) -> None:
    expires_at = int(time.time() * 1000) + 1500
    storage = await create_storage("TEMP", expiration_timestamp=expires_at)
    await put(api, storage, "k", "v")  # cached now, with its expiration

    async def gone() -> bool:
        return (await get(api, storage, "k"))[0] == 404

    await wait_until(gone, what="expiry")
    # Not before it expired, by the cluster's clock: this host's, estimated within a few ms.
    assert time.time() * 1000 >= expires_at - 50


async def test_plugin_written_storage_and_original_data_are_served(
    api: Client,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    storage_layout: str,
) -> None:
    per_storage_only(storage_layout, "the plugin's storages have indices of their own")
    storage = await create_storage()  # written into the registry while the service runs
    await es.index(
        index=IndexNames(index_prefix).data(storage.id),
        id="legacy",
        document={"value": "from 2018"},
    )
    assert await get(api, storage, "legacy") == (200, "from 2018")


async def test_a_storage_deleted_in_the_registry_is_404_once_its_cache_entry_expires(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """The cache serves the storage until its entry expires (no registry poll here: the
    change does not touch ``last_updated``), then the registry's word counts; the
    ``kv_storage_cache_entries`` gauge counts only entries that have not expired."""
    api = await aiohttp_client(create_app(make_config(KV_STORAGE_APP_CACHE_EXPIRATION_TIME="3s")))
    storage = await create_storage()
    await put(api, storage, "k", "v")
    await es.update(index=IndexNames(index_prefix).registry, id=storage.id, doc={"deleted": True})
    assert await get(api, storage, "k") == (200, "v")  # from the cache
    assert await cache_entries(api) == 1

    async def gone() -> bool:
        return (await get(api, storage, "k"))[0] == 404

    await wait_until(gone, what="the cache entry's expiry")

    async def expired_miss_uncounted() -> bool:  # the miss just cached expires too
        return await cache_entries(api) == 0

    await wait_until(expired_miss_uncounted, what="the gauge dropping expired entries")


async def cache_entries(api: Client) -> float:
    text = await (await api.get("/metrics")).text()
    line = next(row for row in text.splitlines() if row.startswith("kv_storage_cache_entries "))
    return float(line.split()[1])


# --- multi-get, multi-set ------------------------------------------------------------------


async def test_multi_get_answers_null_for_missing_keys(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    await put(api, storage, "key1", "value1")
    await put(api, storage, "key3", "value3")
    response = await api.post(
        path("get", storage), json=["key1", "key2", "key3", "x" * 600, ""], headers=storage.headers
    )
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {
        "key1": "value1",
        "key2": None,
        "key3": "value3",
        "x" * 600: None,
        "": None,
    }


async def test_multi_get_on_a_never_written_storage(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    response = await api.post(path("get", storage), json=["a", "b"], headers=storage.headers)
    assert await response.json() == {"a": None, "b": None}
    assert (
        await (await api.post(path("get", storage), json=[], headers=storage.headers)).json() == {}
    )


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'["a", 1]', "application/json", "JSON array of strings"),
        (b'{"a": "b"}', "application/json", "JSON array of strings"),
        (b'"a"', "application/json", "JSON array of strings"),
        (b"[null]", "application/json", "JSON array of strings"),
        (b"[", "application/json", "not valid JSON"),
        (b"", "application/json", "not valid JSON"),
        (b'["a"]', "text/plain", "content type must be application/json"),
    ],
)
async def test_multi_get_and_delete_refuse_bad_bodies(
    api: Client, create_storage: StorageFactory, body: bytes, content_type: str, message: str
) -> None:
    storage = await create_storage()
    for operation in ("get", "delete"):
        response = await api.post(
            path(operation, storage),
            data=body,
            headers={**storage.headers, "Content-Type": content_type},
        )
        assert response.status == 400
        assert message in (await response.json())["error"]


async def test_multi_set_writes_and_answers_per_key(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    pairs = {"key1": "value1", "key2": "", "ключ/3": "value3"}
    response = await api.put(path("set", storage), json=pairs, headers=storage.headers)
    assert response.status == 200
    assert await response.json() == dict.fromkeys(pairs, True)
    got = await api.post(path("get", storage), json=list(pairs), headers=storage.headers)
    assert await got.json() == pairs


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'["a"]', "a JSON object"),
        (b'"a"', "a JSON object"),
        (b"{", "not valid JSON"),
    ],
)
async def test_multi_set_refuses_bad_bodies(
    api: Client, create_storage: StorageFactory, body: bytes, message: str
) -> None:
    storage = await create_storage()
    response = await api.put(
        path("set", storage),
        data=body,
        headers={**storage.headers, "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert message in (await response.json())["error"]
    wrong_type = await api.put(
        path("set", storage),
        data=b'{"a": "b"}',
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    assert wrong_type.status == 400


# --- delete --------------------------------------------------------------------------------


async def test_delete_removes_and_is_idempotent(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    await put(api, storage, "k", "v")
    for _ in range(2):
        response = await api.delete(path("delete", storage, "k"), headers=storage.headers)
        assert response.status == 200
    assert (await get(api, storage, "k"))[0] == 404
    never_written = await create_storage()
    assert (
        await api.delete(path("delete", never_written, "k"), headers=never_written.headers)
    ).status == 200


async def test_multi_delete_answers_true_for_present_and_missing_keys(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    await put(api, storage, "key1", "v")
    await put(api, storage, "key3", "v")
    response = await api.post(
        path("delete", storage), json=["key1", "key2", "key3", ""], headers=storage.headers
    )
    assert response.status == 200
    assert await response.json() == {"key1": True, "key2": True, "key3": True, "": False}
    assert await (await api.get(path("list", storage), headers=storage.headers)).json() == []


# --- list and clear ------------------------------------------------------------------------


@pytest.fixture
async def small_pages_api(
    make_config: Callable[..., Config], initialised_config: Config, aiohttp_client: ClientFactory
) -> Client:
    return await aiohttp_client(
        create_app(make_config(KV_STORAGE_ELASTICSEARCH_SCROLL_PAGE_SIZE="7"))
    )


async def test_list_of_a_never_written_storage_is_empty(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    response = await api.get(path("list", storage), headers=storage.headers)
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == []


async def test_list_returns_every_key_across_many_pages(
    small_pages_api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    keys = {f"key-{number}": str(number) for number in range(50)}
    assert (
        await small_pages_api.put(path("set", storage), json=keys, headers=storage.headers)
    ).status == 200
    response = await small_pages_api.get(path("list", storage), headers=storage.headers)
    assert response.status == 200
    listed = await response.json()
    assert sorted(listed) == sorted(keys)


async def test_list_sees_a_write_acknowledged_just_before(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    await put(api, storage, "fresh", "v")
    assert await (await api.get(path("list", storage), headers=storage.headers)).json() == ["fresh"]


async def test_clear_removes_every_key(
    small_pages_api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    keys = {f"k{number}": "v" for number in range(30)}
    await small_pages_api.put(path("set", storage), json=keys, headers=storage.headers)
    response = await small_pages_api.post(path("clear", storage), headers=storage.headers)
    assert response.status == 200
    assert (
        await (await small_pages_api.get(path("list", storage), headers=storage.headers)).json()
        == []
    )
    again = await small_pages_api.post(path("clear", storage), headers=storage.headers)
    assert again.status == 200
    never_written = await create_storage()
    assert (
        await small_pages_api.post(path("clear", never_written), headers=never_written.headers)
    ).status == 200


async def test_clear_under_concurrent_writes_never_loses_a_later_write(
    small_pages_api: Client, create_storage: StorageFactory
) -> None:
    """Writes racing a clear: the answer is 200 or 409, and every key written after the clear
    answered is there (a clear never deletes what it did not read)."""
    storage = await create_storage()
    await small_pages_api.put(
        path("set", storage), json={f"k{n}": "old" for n in range(200)}, headers=storage.headers
    )
    writer_done = asyncio.Event()

    async def writer() -> None:
        round_number = 0
        while not writer_done.is_set():
            pairs = {f"k{n}": f"new-{round_number}" for n in range(0, 200, 3)}
            await small_pages_api.put(path("set", storage), json=pairs, headers=storage.headers)
            round_number += 1

    task = asyncio.create_task(writer())
    response = await small_pages_api.post(path("clear", storage), headers=storage.headers)
    writer_done.set()
    await task
    assert response.status in (200, 409), await response.text()
    if response.status == 409:
        assert "may have been cleared partially" in (await response.json())["error"]
    await put(small_pages_api, storage, "after", "kept")
    assert await get(small_pages_api, storage, "after") == (200, "kept")


async def test_clear_answers_409_and_keeps_a_key_written_while_it_ran(
    api: Client,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    storage_layout: str,
) -> None:
    """A writer changes a key after the clear read it and before it deleted it.

    The write is real; only its moment is arranged, by running it just before the clear's
    first bulk of deletes.
    """
    storage = await create_storage()
    await api.put(
        path("set", storage), json={f"k{n}": "old" for n in range(5)}, headers=storage.headers
    )
    original = DataStore._failed_items
    written = False

    async def write_then_delete(self: DataStore, actions: list[dict[str, Any]]) -> Any:
        nonlocal written
        if not written and actions and actions[0]["_op_type"] == "delete":
            written = True
            where = placed(index_prefix, storage.id, storage_layout)
            await es.index(
                **where.search_options(where.data_index),
                id=where.data_id("k3"),
                document=where.tagged({"key": "k3", "value": "new"}),
            )
        return await original(self, actions)

    monkeypatch.setattr(DataStore, "_failed_items", write_then_delete)
    response = await api.post(path("clear", storage), headers=storage.headers)
    assert response.status == 409
    message = (await response.json())["error"]
    assert "1 keys changed" in message
    assert "4 keys were deleted" in message
    assert await (await api.get(path("list", storage), headers=storage.headers)).json() == ["k3"]
    assert await get(api, storage, "k3") == (200, "new")


# --- answers that must stay 4xx, and streams cut off cleanly ------------------------------------


@pytest.mark.parametrize("operation", ["get", "set", "delete"])
async def test_an_empty_key_in_the_path_is_400(
    api: Client, create_storage: StorageFactory, operation: str
) -> None:
    storage = await create_storage()
    method = {"get": "GET", "set": "PUT", "delete": "DELETE"}[operation]
    response = await api.request(
        method,
        URL(f"/{operation}/{storage.id}/", encoded=True),
        data=b"v",
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    assert response.status == 400
    assert (await response.json())["error"] == "the key is empty"


@pytest.mark.parametrize(
    ("method", "operation"), [("POST", "get"), ("PUT", "set"), ("POST", "delete")]
)
async def test_json_nested_too_deeply_is_400(
    api: Client, create_storage: StorageFactory, method: str, operation: str
) -> None:
    storage = await create_storage()
    response = await api.request(
        method,
        path(operation, storage),
        data=b"[" * 100_000 + b"]" * 100_000,
        headers={**storage.headers, "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert (await response.json())["error"] == "the body is JSON nested too deeply"


async def test_a_request_target_in_absolute_form_names_the_same_key(
    api: Client, create_storage: StorageFactory
) -> None:
    """HTTP/1.1 servers must accept ``PUT http://host/path``, as some proxies send it."""
    storage = await create_storage()
    host = f"{api.server.host}:{api.server.port}"
    body = b"absolute"
    reader, writer = await asyncio.open_connection(api.server.host, api.server.port)
    writer.write(
        f"PUT http://{host}/set/{storage.id}/a%2Fb HTTP/1.1\r\nHost: {host}\r\n"
        f"Secret-Key: {storage.secret_key}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert await get(api, storage, "a/b") == (200, "absolute")


@pytest.fixture
def garbage_collected_after() -> Iterator[None]:
    """Requested before ``api``, so it ends after the service stopped: what the service left
    to the garbage collector is collected here, with this test, not in a later one."""
    yield
    gc.collect()


@pytest.mark.filterwarnings(
    # Elasticsearch closes the connection after its 413; the client library's socket for it
    # is left to the garbage collector, which warns. The service's answer is what is tested.
    "ignore::pytest.PytestUnraisableExceptionWarning"
)
async def test_a_value_too_large_for_elasticsearch_is_413(
    garbage_collected_after: None, api: Client, create_storage: StorageFactory
) -> None:
    """60 MB of quotes fit server.max-body-size (64 MiB) but not Elasticsearch's 100 MB
    http.max_content_length once JSON has escaped every quote: the real node answers 413."""
    storage = await create_storage()
    response = await api.put(
        path("set", storage, "quotes"),
        data=b'"' * 60_000_000,
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    assert response.status == 413
    assert "larger than Elasticsearch accepts" in (await response.json())["error"]
    assert (await get(api, storage, "quotes"))[0] == 404


@pytest.mark.parametrize(("method", "operation"), [("POST", "get"), ("POST", "delete")])
async def test_multi_get_and_delete_bodies_over_max_body_size_are_413(
    limited_api: Client, create_storage: StorageFactory, method: str, operation: str
) -> None:
    storage = await create_storage()
    response = await limited_api.request(
        method, path(operation, storage), json=["k" * 8] * 200, headers=storage.headers
    )
    assert response.status == 413
    assert "1000" in (await response.json())["error"]


async def test_single_set_body_over_max_body_size_is_413(
    limited_api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    response = await limited_api.put(
        path("set", storage, "k"),
        data=b"v" * 1001,
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    assert response.status == 413
    assert "1000" in (await response.json())["error"]


async def test_multi_get_and_delete_with_keys_over_the_key_limit(
    limited_api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    await limited_api.put(path("set", storage), json={"k8bytes!": "v"}, headers=storage.headers)
    got = await limited_api.post(
        path("get", storage), json=["k8bytes!", "k9bytes!!"], headers=storage.headers
    )
    assert await got.json() == {"k8bytes!": "v", "k9bytes!!": None}
    deleted = await limited_api.post(
        path("delete", storage), json=["k8bytes!", "k9bytes!!"], headers=storage.headers
    )
    assert await deleted.json() == {"k8bytes!": True, "k9bytes!!": False}


async def test_a_key_of_exactly_512_bytes_is_accepted_and_513_refused(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    await put(api, storage, "é" * 256, "fits")
    assert await get(api, storage, "é" * 256) == (200, "fits")
    response = await api.put(
        path("set", storage, "é" * 256 + "x"),
        data=b"v",
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    assert response.status == 400


@pytest.fixture
async def slow_list_api(
    make_config: Callable[..., Config], initialised_config: Config, aiohttp_client: ClientFactory
) -> Client:
    config = make_config(
        KV_STORAGE_ELASTICSEARCH_SCROLL_PAGE_SIZE="2", KV_STORAGE_APP_REQUEST_TIMEOUT="500ms"
    )
    return await aiohttp_client(create_app(config))


async def test_a_list_that_times_out_midway_is_cut_off_not_answered_twice(
    slow_list_api: Client, create_storage: StorageFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Elasticsearch stops answering after the first page. The real node cannot be made to
    hang for one test alone, so the second page is held back here, past the request timeout."""
    storage = await create_storage()
    await slow_list_api.put(
        path("set", storage), json={f"k{n}": "v" for n in range(5)}, headers=storage.headers
    )
    original = DataStore.key_pages

    async def first_page_then_silence(self: DataStore, where: Location) -> Any:
        async for page in original(self, where):
            yield page
            await asyncio.Event().wait()

    monkeypatch.setattr(DataStore, "key_pages", first_page_then_silence)
    response = await slow_list_api.get(path("list", storage), headers=storage.headers)
    assert response.status == 200
    received: list[bytes] = []

    async def read_to_the_end() -> None:
        async for chunk in response.content.iter_any():
            received.append(chunk)

    with pytest.raises(aiohttp.ClientPayloadError):
        await read_to_the_end()
    body = b"".join(received)
    assert body.startswith(b'["k')
    assert b"HTTP/1.1" not in body
    assert b"error" not in body


async def test_a_scroll_lost_midway_fails_the_list_instead_of_shortening_it(
    small_pages_api: Client,
    create_storage: StorageFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scroll is released in the real node between two pages (as an expiry would), so
    Elasticsearch answers the next page with its own 404: the list must not end as if done."""
    storage = await create_storage()
    await small_pages_api.put(
        path("set", storage), json={f"k{n}": "v" for n in range(20)}, headers=storage.headers
    )
    original = AsyncElasticsearch.scroll

    async def scroll_after_release(self: AsyncElasticsearch, **kwargs: Any) -> Any:
        await self.clear_scroll(scroll_id=kwargs["scroll_id"])
        return await original(self, **kwargs)

    monkeypatch.setattr(AsyncElasticsearch, "scroll", scroll_after_release)
    listed = await small_pages_api.get(path("list", storage), headers=storage.headers)
    assert listed.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await listed.read()
    cleared = await small_pages_api.post(path("clear", storage), headers=storage.headers)
    assert cleared.status == 500
    assert (await cleared.json())["error"].startswith("Elasticsearch refused the request")
