"""The typed Python client (``kv_storage_client``), asynchronous and synchronous, against the
real service on the real node: every storage, history and administration call through it."""

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import pytest

from kv_storage.app import create_app
from kv_storage.config import Config
from kv_storage_client import (
    AsyncClient,
    AsyncStorage,
    Change,
    Client,
    CompareAndSetError,
    NotFoundError,
    PreconditionFailedError,
    StorageType,
    UnauthorizedError,
    Versioned,
)
from tests.conftest import StorageFactory
from tests.helpers import Client as TestClient
from tests.helpers import ClientFactory
from tests.waiting import wait_until

TOKEN = "admin-token-for-client-tests-0123456789"
ODD_KEYS = [".", "..", "a/b", "q?x=1#f", "100%", "ключ", "sp ace"]


@pytest.fixture
async def service(
    make_config: Callable[..., Config], initialised_config: Config, aiohttp_client: ClientFactory
) -> TestClient:
    """The service on a real port, with the administration API and history written fast."""
    config = make_config(KV_STORAGE_ADMIN_TOKEN=TOKEN, KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="100ms")
    return await aiohttp_client(create_app(config))


@pytest.fixture
async def kv(service: TestClient) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(str(service.make_url("")))
    yield client
    await client.close()


async def storage_of(
    kv: AsyncClient, create_storage: StorageFactory, **options: object
) -> AsyncStorage:
    ref = await create_storage(**options)
    return kv.storage(ref.id, ref.secret_key)


async def test_single_and_multi_key_calls(kv: AsyncClient, create_storage: StorageFactory) -> None:
    storage = await storage_of(kv, create_storage)
    assert await storage.get("missing") is None
    etag = await storage.set("mode", "blue")
    assert await storage.get_versioned("mode") == Versioned("blue", etag)
    assert await storage.set_many({"a": "1", "b": 2, "c": None}) == {
        "a": True,
        "b": True,
        "c": False,
    }
    assert await storage.get_many(["a", "b", "nope"]) == {"a": "1", "b": "2", "nope": None}
    assert sorted(await storage.list()) == ["a", "b", "mode"]
    assert await storage.delete_many(["a", "b"]) == {"a": True, "b": True}
    await storage.delete("mode")
    await storage.delete("mode")  # a missing key too, as the API does
    assert await storage.list() == []


async def test_any_key_is_named_exactly(kv: AsyncClient, create_storage: StorageFactory) -> None:
    storage = await storage_of(kv, create_storage)
    for key in ODD_KEYS:
        await storage.set(key, f"value of {key}")
    for key in ODD_KEYS:
        assert await storage.get(key) == f"value of {key}"
    assert sorted(await storage.list()) == sorted(ODD_KEYS)


async def test_keys_by_prefix_come_in_pages(
    kv: AsyncClient, create_storage: StorageFactory
) -> None:
    storage = await storage_of(kv, create_storage)
    await storage.set_many({f"app/{n:02}": "v" for n in range(7)} | {"other": "v"})
    wanted = [f"app/{n:02}" for n in range(7)]

    async def all_listed() -> bool:  # pages see writes within a refresh (about a second)
        return [key async for key in storage.keys("app/", page_size=3)] == wanted

    await wait_until(all_listed, what="the keys to be listed")
    assert [key async for key in storage.keys("app/", after="app/04")] == ["app/05", "app/06"]


async def test_errors_carry_status_and_the_services_message(
    kv: AsyncClient, create_storage: StorageFactory
) -> None:
    ref = await create_storage()
    with pytest.raises(UnauthorizedError) as refused:
        await kv.storage(ref.id, "not-the-secret").get("k")
    assert refused.value.status_code == 401
    assert "Secret-Key" in refused.value.message
    assert refused.value.request_id
    with pytest.raises(NotFoundError) as missing:
        await kv.storage("no-such-storage", "x").get("k")
    assert "does not exist" in missing.value.message


async def test_conditional_writes(kv: AsyncClient, create_storage: StorageFactory) -> None:
    storage = await storage_of(kv, create_storage)
    first = await storage.set("k", "1", if_absent=True)
    with pytest.raises(PreconditionFailedError):
        await storage.set("k", "again", if_absent=True)
    second = await storage.set("k", "2", if_match=first)
    with pytest.raises(PreconditionFailedError):
        await storage.set("k", "stale", if_match=first)
    with pytest.raises(PreconditionFailedError):
        await storage.delete("k", if_match=first)
    await storage.delete("k", if_match=second)
    assert await storage.get("k") is None


async def test_compare_and_set_counts_every_increment(
    kv: AsyncClient, create_storage: StorageFactory
) -> None:
    """Twenty clients incrementing one counter at once: retries make every increment count."""
    storage = await storage_of(kv, create_storage)

    def increment(value: str | None) -> str:
        return str(int(value or "0") + 1)

    await asyncio.gather(
        *(storage.compare_and_set("counter", increment, attempts=100) for _ in range(20))
    )
    assert await storage.get("counter") == "20"


async def test_compare_and_set_gives_up_after_its_attempts(
    kv: AsyncClient, create_storage: StorageFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read sees a version that another writer has moved past by the time of the write
    (here: the version before the last write, read on every attempt)."""
    storage = await storage_of(kv, create_storage)
    stale = await storage.set("k", "0")
    await storage.set("k", "theirs")
    attempts = 0

    async def stale_read(key: str) -> Versioned:
        nonlocal attempts
        attempts += 1
        return Versioned("0", stale)

    monkeypatch.setattr(storage, "get_versioned", stale_read)
    with pytest.raises(CompareAndSetError):
        await storage.compare_and_set("k", lambda value: "ours", attempts=3)
    assert attempts == 3
    monkeypatch.undo()
    assert await storage.get("k") == "theirs"


async def test_watch_yields_each_change_as_it_happens(
    kv: AsyncClient, create_storage: StorageFactory
) -> None:
    storage = await storage_of(kv, create_storage)
    await storage.set("mode", "blue")
    seen: list[Change] = []
    changes = storage.watch("mode", wait_s=30, missing_poll_s=0.05)

    async def next_change() -> Change:
        change = await anext(changes)
        seen.append(change)
        return change

    waiting = asyncio.ensure_future(next_change())
    await wait_until(lambda: _has_waiter(kv), what="the blocking read to wait")
    await storage.set("mode", "green")
    assert (await asyncio.wait_for(waiting, 10)).value == "green"
    waiting = asyncio.ensure_future(next_change())
    await asyncio.sleep(0)
    await storage.delete("mode")
    assert (await asyncio.wait_for(waiting, 10)).deleted
    waiting = asyncio.ensure_future(next_change())
    await storage.set("mode", "red")  # a missing key's creation is seen by its poll
    assert (await asyncio.wait_for(waiting, 10)).value == "red"
    await changes.aclose()
    assert [change.value for change in seen] == ["green", None, "red"]


async def _has_waiter(kv: AsyncClient) -> bool:
    """Whether a blocking read waits on the service (its /metrics say so)."""
    _, _, body = await kv._http.request("GET", "/metrics")
    return any(
        line.startswith("kv_storage_watch_waiters ") and float(line.split()[1]) >= 1
        for line in body.decode().splitlines()
    )


async def test_history_pages_and_scrolls(kv: AsyncClient, create_storage: StorageFactory) -> None:
    storage = await storage_of(kv, create_storage, history_enabled=True)
    for n in range(25):
        await storage.set(f"k{n:02}", str(n))
    await storage.delete("k00")

    async def all_recorded() -> bool:
        return (await storage.history_page(size=1)).total == 26

    await wait_until(all_recorded, what="the history records to be written")
    records = [record async for record in storage.history(batch_size=10)]
    assert len(records) == 26
    assert sorted(r.key or "" for r in records if r.operation == "set") == [
        f"k{n:02}" for n in range(25)
    ]
    page = await storage.history_page(page=2, size=5, operations=["set"], sort="key")
    assert (page.total, page.page, page.size) == (25, 2, 5)
    assert [record.key for record in page.items] == [f"k{n:02}" for n in range(5, 10)]
    deletes = [record async for record in storage.history(operations="delete")]
    assert [(record.key, record.value) for record in deletes] == [("k00", None)]


async def test_administration_and_temp_storages(kv: AsyncClient) -> None:
    admin = kv.admin(TOKEN)
    info, credentials = await admin.create(
        StorageType.ACCOUNT, account="client-tests", name="settings", history_enabled=True
    )
    assert (info.type, info.account, info.history_enabled) == (
        StorageType.ACCOUNT,
        "client-tests",
        True,
    )
    storage = kv.storage(credentials.id, credentials.secret_key)
    await storage.set("k", "v")
    assert (await admin.get(info.id)).name == "settings"
    assert [listed.id async for listed in admin.list("client-tests", page_size=1)] == [info.id]
    rotated = await admin.rotate_secret(info.id)
    assert await kv.storage(info.id, rotated.secret_key).get("k") == "v"
    with pytest.raises(UnauthorizedError):
        await storage.get("k")
    assert (await admin.delete(info.id)).deleted
    with pytest.raises(NotFoundError):
        await kv.storage(info.id, rotated.secret_key).get("k")

    temp_info, temp = await admin.create("TEMP", ttl_ms=3_600_000)
    temp_storage = kv.storage(temp.id, temp.secret_key)
    await temp_storage.update_ttl(7_200_000)
    assert (await admin.get(temp.id)).ttl_ms == 7_200_000
    await temp_storage.delete_storage()
    with pytest.raises(NotFoundError):
        await temp_storage.get("k")
    assert temp_info.type is StorageType.TEMP


async def test_clear(kv: AsyncClient, create_storage: StorageFactory) -> None:
    storage = await storage_of(kv, create_storage)
    await storage.set_many({"a": "1", "b": "2"})
    await storage.clear()
    assert await storage.list() == []


async def test_the_synchronous_client(service: TestClient, create_storage: StorageFactory) -> None:
    """The same calls without an event loop of the caller's (run in a thread here, since this
    test's loop serves the service)."""
    ref = await create_storage(history_enabled=True)
    url = str(service.make_url(""))

    def use() -> tuple[object, ...]:
        with Client(url) as kv:
            storage = kv.storage(ref.id, ref.secret_key)
            etag = storage.set("a/1", "x")
            storage.set_many({"a/2": "y", "b": "z"})
            versioned = storage.get_versioned("a/1")
            counted = storage.compare_and_set("n", lambda value: str(int(value or "0") + 1))
            deadline = time.monotonic() + 10  # pages see writes within a refresh
            while (keys := list(storage.keys("a/", page_size=1))) != ["a/1", "a/2"]:
                assert time.monotonic() < deadline, keys
                time.sleep(0.05)
            try:
                kv.storage(ref.id, "wrong").get("a/1")
            except UnauthorizedError as error:
                refused = error.status_code
            admin = kv.admin(TOKEN)
            account = "sync-client-" + ref.id[:8]
            info, _ = admin.create("ACCOUNT", account=account, name="n", vm=None)
            listed = [s.id for s in admin.list(account)] == [info.id]
            return (versioned, etag, counted.value, keys, refused, storage.get("b"), listed)

    versioned, etag, counted, keys, refused, b, listed = await asyncio.to_thread(use)
    assert versioned == Versioned("x", etag)  # type: ignore[arg-type]
    assert (counted, keys, refused, b) == ("1", ["a/1", "a/2"], 401, "z")
    assert listed is True


def test_the_client_imports_without_the_services_dependencies() -> None:
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, kv_storage_client; print(sorted({m.split('.')[0] for m in sys.modules}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for service_only in ("kv_storage", "pipeline", "schemas", "elasticsearch", "marshmallow"):
        assert f"'{service_only}'" not in imported
    assert "'aiohttp'" in imported
