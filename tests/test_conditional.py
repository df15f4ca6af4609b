"""ETags and conditional writes against the real node: compare-and-set, create-only, and the
412 that changes nothing."""

import asyncio
from collections.abc import Callable

import pytest
from yarl import URL

from kv_storage.app import create_app
from kv_storage.config import Config
from tests.conftest import BOTH_LAYOUTS, StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory, path
from tests.waiting import wait_until

pytestmark = BOTH_LAYOUTS


async def _get(api: Client, storage: StorageRef, key: str) -> tuple[int, str, str | None]:
    response = await api.get(path("get", storage, key), headers=storage.headers)
    return response.status, await response.text(), response.headers.get("ETag")


async def _set(
    api: Client, storage: StorageRef, key: str, value: str, **conditions: str
) -> tuple[int, str | None]:
    headers = {**storage.headers, "Content-Type": "text/plain", **conditions}
    response = await api.put(path("set", storage, key), data=value, headers=headers)
    return response.status, response.headers.get("ETag")


@pytest.fixture
async def two(
    make_config: Callable[..., Config], initialised_config: Config, aiohttp_client: ClientFactory
) -> tuple[Client, Client]:
    """Two instances of the service on one cluster."""
    return (
        await aiohttp_client(create_app(make_config())),
        await aiohttp_client(create_app(make_config())),
    )


async def test_the_etag_changes_with_every_write_and_is_the_same_on_every_instance(
    two: tuple[Client, Client], create_storage: StorageFactory
) -> None:
    one, other = two
    storage = await create_storage()
    status, first = await _set(one, storage, "k", "v1")
    assert status == 200
    assert first is not None
    assert (await _get(one, storage, "k"))[2] == first
    assert (await _get(other, storage, "k"))[2] == first
    status, second = await _set(other, storage, "k", "v1")  # the same value: a new version
    assert status == 200
    assert second not in (None, first)
    assert (await _get(one, storage, "k")) == (200, "v1", second)


async def test_if_match_writes_only_over_the_version_read(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage(history_enabled=True)
    _, old = await _set(api, storage, "k", "v1")
    assert old is not None
    _, current = await _set(api, storage, "k", "v2")
    assert current is not None
    assert await _set(api, storage, "k", "stale", **{"If-Match": old}) == (412, None)
    assert (await _get(api, storage, "k"))[:2] == (200, "v2")
    status, newer = await _set(api, storage, "k", "v3", **{"If-Match": current})
    assert status == 200
    assert newer not in (None, current)
    assert (await _get(api, storage, "k"))[:2] == (200, "v3")
    # A key that does not exist is at no version.
    assert (await _set(api, storage, "absent", "v", **{"If-Match": current}))[0] == 412
    assert (await _get(api, storage, "absent"))[0] == 404


async def test_if_none_match_star_creates_once(api: Client, create_storage: StorageFactory) -> None:
    storage = await create_storage()
    results = await asyncio.gather(
        *(_set(api, storage, "once", f"v{n}", **{"If-None-Match": "*"}) for n in range(5))
    )
    assert sorted(status for status, _ in results) == [200, 412, 412, 412, 412]
    winner = next(f"v{n}" for n, (status, _) in enumerate(results) if status == 200)
    assert (await _get(api, storage, "once"))[1] == winner


async def test_a_conditional_delete_deletes_only_the_version_read(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    _, old = await _set(api, storage, "k", "v1")
    _, current = await _set(api, storage, "k", "v2")
    assert old is not None
    assert current is not None

    async def delete(tag: str) -> int:
        headers = {**storage.headers, "If-Match": tag}
        return (await api.delete(path("delete", storage, "k"), headers=headers)).status

    assert await delete(old) == 412
    assert (await _get(api, storage, "k"))[1] == "v2"
    assert await delete(current) == 200
    assert (await _get(api, storage, "k"))[0] == 404
    assert await delete(current) == 412  # gone: at no version any more


@pytest.mark.parametrize(
    "headers",
    [
        {"If-Match": "v1"},
        {"If-Match": '"1-2", "1-3"'},
        {"If-Match": 'W/"1-2"'},
        {"If-Match": "*"},
        {"If-None-Match": '"1-2"'},
        {"If-Match": '"1-2"', "If-None-Match": "*"},
        # What Elasticsearch cannot take as if_primary_term/if_seq_no: it would refuse the
        # whole _bulk, and with it other storages' writes batched with this one.
        {"If-Match": '"0-1"'},
        {"If-Match": '"9223372036854775808-1"'},
        {"If-Match": '"1-9223372036854775808"'},
        {"If-Match": '"9999999999999999999-9999999999999999999"'},
    ],
)
async def test_a_malformed_condition_is_400_and_writes_nothing(
    api: Client, create_storage: StorageFactory, headers: dict[str, str]
) -> None:
    storage = await create_storage()
    status, _ = await _set(api, storage, "k", "v", **headers)
    assert status == 400
    assert (await _get(api, storage, "k"))[0] == 404


async def test_the_largest_versions_elasticsearch_takes_are_conditions_that_do_not_hold(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    assert (await _set(api, storage, "k", "v"))[0] == 200
    largest = '"9223372036854775807-9223372036854775807"'
    assert (await _set(api, storage, "k", "other", **{"If-Match": largest}))[0] == 412
    assert (await _get(api, storage, "k"))[:2] == (200, "v")


async def test_a_conditional_get_is_304_while_the_key_is_unchanged(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    _, tag = await _set(api, storage, "k", "v")
    assert tag is not None
    response = await api.get(
        path("get", storage, "k"), headers={**storage.headers, "If-None-Match": tag}
    )
    assert response.status == 304
    assert response.headers["ETag"] == tag
    assert await response.read() == b""
    await _set(api, storage, "k", "w")
    response = await api.get(
        path("get", storage, "k"), headers={**storage.headers, "If-None-Match": tag}
    )
    assert (response.status, await response.text()) == (200, "w")


async def test_compare_and_set_increments_through_two_instances_lose_nothing(
    two: tuple[Client, Client], create_storage: StorageFactory
) -> None:
    """20 clients, half on each instance, each adding one to a counter with read, then
    If-Match write, again on 412: the counter ends at exactly 20."""
    storage = await create_storage()
    assert (await _set(two[0], storage, "counter", "0"))[0] == 200

    async def increment(api: Client) -> None:
        for _ in range(200):
            _, value, tag = await _get(api, storage, "counter")
            assert tag is not None
            status, _ = await _set(
                api, storage, "counter", str(int(value) + 1), **{"If-Match": tag}
            )
            if status == 200:
                return
            assert status == 412
        raise AssertionError("no increment went through in 200 tries")

    await asyncio.gather(*(increment(two[n % 2]) for n in range(20)))
    assert (await _get(two[1], storage, "counter"))[1] == "20"


async def test_history_records_only_what_was_written(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    api = await aiohttp_client(
        create_app(make_config(KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="100ms"))
    )
    storage = await create_storage(history_enabled=True)
    _, tag = await _set(api, storage, "k", "first")
    assert tag is not None
    await _set(api, storage, "k", "second")
    assert (await _set(api, storage, "k", "refused", **{"If-Match": tag}))[0] == 412

    async def recorded() -> bool:
        response = await api.get(f"/history/{storage.id}", headers=storage.headers)
        values = [item["value"] for item in (await response.json())["items"]]
        return values == ["first", "second"]

    await wait_until(recorded, what="the history of the two writes, without the refused one")


_NOT_OUR_TAG = "is not an entity tag of this service (one tag, as an ETag header gave it"


@pytest.mark.parametrize(
    ("method", "operation", "headers", "refusal"),
    [
        ("PUT", "set", {"If-Match": "v1"}, f"If-Match: 'v1' {_NOT_OUR_TAG}"),
        (
            "PUT",
            "set",
            {"If-Match": '"1-2"', "If-None-Match": "*"},
            "give If-Match or If-None-Match, not both",
        ),
        (
            "PUT",
            "set",
            {"If-None-Match": '"1-2"'},
            "If-None-Match on a write takes only * (create the key if it does not exist)",
        ),
        ("DELETE", "delete", {"If-Match": "*"}, f"If-Match: '*' {_NOT_OUR_TAG}"),
        (
            "DELETE",
            "delete",
            {"If-None-Match": "*"},
            "If-None-Match does not apply to a delete; use If-Match",
        ),
        ("GET", "get", {"If-None-Match": "W/x"}, f"If-None-Match: 'W/x' {_NOT_OUR_TAG}"),
    ],
)
async def test_a_malformed_condition_is_refused_by_the_validation_after_the_secret(
    api: Client,
    create_storage: StorageFactory,
    method: str,
    operation: str,
    headers: dict[str, str],
    refusal: str,
) -> None:
    """The condition headers are a declared part of the request: refused in the service's
    words, and only for the storage's holder (a wrong secret is 401, an unknown storage 404,
    whatever the headers)."""
    storage = await create_storage()
    body = b"v" if method == "PUT" else None
    every = {"Content-Type": "text/plain", **headers}

    async def answer(target: str | URL, secret: str) -> tuple[int, str]:
        response = await api.request(
            method, target, data=body, headers={**every, "Secret-Key": secret}
        )
        return response.status, (await response.json())["error"]

    status, error = await answer(path(operation, storage, "k"), storage.secret_key)
    assert status == 400
    assert error.startswith(refusal), error
    assert (await answer(path(operation, storage, "k"), "not-it"))[0] == 401
    assert (await answer(f"/{operation}/no-such-storage/k", "not-it"))[0] == 404
