"""The administration API: every call with good and bad input, and its token."""

import time
from collections.abc import Callable
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage.app import create_app
from kv_storage.app_keys import SERVICE
from kv_storage.config import Config
from kv_storage.es.names import IndexNames
from tests.conftest import StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory, closed_to_writes, get, put
from tests.waiting import wait_until

TOKEN = "admin-token-for-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def admin(
    make_config: Callable[..., Config], initialised_config: Config, aiohttp_client: ClientFactory
) -> Client:
    return await aiohttp_client(create_app(make_config(KV_STORAGE_ADMIN_TOKEN=TOKEN)))


async def create(admin: Client, **body: Any) -> dict[str, Any]:
    response = await admin.post("/admin/storages", json=body, headers=ADMIN)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def test_create_an_account_storage_and_use_it(
    admin: Client, es: AsyncElasticsearch, index_prefix: str
) -> None:
    created = await create(
        admin, type="ACCOUNT", account="acme", name="settings", description="d", historyEnabled=True
    )
    assert created["type"] == "ACCOUNT"
    assert (created["account"], created["name"], created["description"]) == (
        "acme",
        "settings",
        "d",
    )
    assert created["historyEnabled"] is True
    assert created["deleted"] is False
    assert len(created["secretKey"]) >= 40
    document = (await es.get(index=IndexNames(index_prefix).registry, id=created["id"]))["_source"]
    assert document == {
        "type": "ACCOUNT",
        "deleted": False,
        "history_enabled": True,
        "secret_key": created["secretKey"],
        "account": "acme",
        "name": "settings",
        "description": "d",
        "last_updated": created["lastUpdated"],
        "layout": created["layout"],
    }
    storage = StorageRef(created["id"], created["secretKey"])
    await put(admin, storage, "k", "v")
    assert await get(admin, storage, "k") == (200, "v")


async def test_create_vm_and_temp_storages(admin: Client) -> None:
    vm = await create(admin, type="VM", vm="4f3c2b1a-vm")
    assert vm["id"] == "4f3c2b1a-vm"
    duplicate = await admin.post(
        "/admin/storages", json={"type": "VM", "vm": "4f3c2b1a-vm"}, headers=ADMIN
    )
    assert duplicate.status == 409
    before = int(time.time() * 1000)
    temp = await create(admin, type="TEMP", ttl=60_000)
    assert temp["ttl"] == 60_000
    # From the cluster's clock (the node runs on this host): within a second of this one's.
    expiration = temp["expirationTimestamp"]
    assert before + 59_000 <= expiration <= int(time.time() * 1000) + 61_000
    assert temp["historyEnabled"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "type"),
        ({"type": "BUCKET"}, "type"),
        ({"type": "ACCOUNT", "name": "n"}, "account"),
        ({"type": "ACCOUNT", "account": "a"}, "name"),
        ({"type": "ACCOUNT", "account": "", "name": "n"}, "account"),
        ({"type": "VM"}, "vm"),
        ({"type": "VM", "vm": "Not/An-Index-Name"}, "vm"),
        ({"type": "TEMP"}, "ttl"),
        ({"type": "TEMP", "ttl": 0}, "ttl"),
        ({"type": "TEMP", "ttl": 2**63 - 1}, "ttl"),  # now + ttl is beyond a long
        ({"type": "TEMP", "ttl": 2**63}, "ttl"),
        ({"type": "TEMP", "ttl": "60000"}, "ttl"),
        ({"type": "TEMP", "ttl": 1000, "historyEnabled": True}, "historyEnabled"),
        (
            {"type": "ACCOUNT", "account": "a", "name": "n", "historyEnabled": "maybe"},
            "historyEnabled",
        ),
    ],
)
async def test_create_refuses_bad_bodies(admin: Client, body: dict[str, Any], field: str) -> None:
    response = await admin.post("/admin/storages", json=body, headers=ADMIN)
    assert response.status == 400
    assert field in (await response.json())["error"]


async def test_show_never_includes_the_secret(admin: Client) -> None:
    created = await create(admin, type="ACCOUNT", account="acme", name="n")
    response = await admin.get(f"/admin/storages/{created['id']}", headers=ADMIN)
    assert response.status == 200
    shown = await response.json()
    assert "secretKey" not in shown
    assert created["secretKey"] not in await response.text()
    assert shown["id"] == created["id"]
    assert (await admin.get("/admin/storages/no-such", headers=ADMIN)).status == 404


async def test_list_an_accounts_storages_with_paging(admin: Client) -> None:
    ids = {
        (await create(admin, type="ACCOUNT", account="paged", name=f"n{n}"))["id"] for n in range(5)
    }
    await create(admin, type="ACCOUNT", account="other", name="x")
    first = await (
        await admin.get("/admin/storages", params={"account": "paged", "size": "3"}, headers=ADMIN)
    ).json()
    second = await (
        await admin.get(
            "/admin/storages", params={"account": "paged", "size": "3", "page": "2"}, headers=ADMIN
        )
    ).json()
    assert (first["total"], first["size"], second["size"]) == (5, 3, 2)
    assert {item["id"] for item in first["items"] + second["items"]} == ids
    assert all("secretKey" not in item for item in first["items"])
    for params in ({}, {"account": "a", "page": "0"}, {"account": "a", "size": "1001"}):
        assert (await admin.get("/admin/storages", params=params, headers=ADMIN)).status == 400


async def test_delete_any_type_and_close_its_indices(
    admin: Client, es: AsyncElasticsearch, index_prefix: str
) -> None:
    created = await create(admin, type="ACCOUNT", account="acme", name="n", historyEnabled=True)
    storage = StorageRef(created["id"], created["secretKey"])
    await put(admin, storage, "k", "v")
    response = await admin.delete(f"/admin/storages/{storage.id}", headers=ADMIN)
    assert response.status == 200
    assert (await response.json())["deleted"] is True
    assert (await get(admin, storage, "k"))[0] == 404
    # Closed to writes until the sweep removes them (tests/test_expiry.py).
    assert await closed_to_writes(es, IndexNames(index_prefix).data(storage.id))
    assert await closed_to_writes(es, IndexNames(index_prefix).history(storage.id))
    shown = await (await admin.get(f"/admin/storages/{storage.id}", headers=ADMIN)).json()
    assert shown["deleted"] is True  # the registry document stays, marked deleted
    assert (await admin.delete(f"/admin/storages/{storage.id}", headers=ADMIN)).status == 404
    listed = await (
        await admin.get("/admin/storages", params={"account": "acme"}, headers=ADMIN)
    ).json()
    assert storage.id not in {item["id"] for item in listed["items"]}


async def test_history_still_buffered_does_not_bring_a_deleted_storage_back(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    # Batches of two records, and no flush by time: what is written when is certain.
    config = make_config(
        KV_STORAGE_ADMIN_TOKEN=TOKEN,
        KV_STORAGE_APP_HISTORY_FLUSH_SIZE="2",
        KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="1 hour",
    )
    admin = await aiohttp_client(create_app(config))
    history = admin.app[SERVICE].history
    deleted = await create_storage(history_enabled=True)
    other = await create_storage(history_enabled=True)
    await put(admin, deleted, "k", "v")  # one record waits in the history actor
    assert (await history.stats()).buffered == 1
    response = await admin.delete(f"/admin/storages/{deleted.id}", headers=ADMIN)
    assert response.status == 200
    # Two records of another storage fill a batch; the deleted storage's would have gone first.
    await put(admin, other, "k", "1")
    await put(admin, other, "k", "2")

    async def flushed() -> bool:
        stats = await history.stats()
        return stats.written >= 2

    await wait_until(flushed, what="the other storage's history written")
    assert await es.indices.exists(index=IndexNames(index_prefix).history(other.id))
    deleted_history = IndexNames(index_prefix).history(deleted.id)
    assert await closed_to_writes(es, deleted_history)  # made so, empty, by the deletion
    assert (await es.count(index=deleted_history))["count"] == 0


async def test_rotating_the_secret_key(admin: Client) -> None:
    created = await create(admin, type="ACCOUNT", account="acme", name="n")
    old = StorageRef(created["id"], created["secretKey"])
    await put(admin, old, "k", "v")
    response = await admin.post(f"/admin/storages/{old.id}/secret-key", headers=ADMIN)
    assert response.status == 200
    rotated = await response.json()
    assert rotated["id"] == old.id
    assert rotated["secretKey"] != old.secret_key
    assert (await get(admin, old, "k"))[0] == 401
    assert await get(admin, StorageRef(old.id, rotated["secretKey"]), "k") == (200, "v")
    assert (await admin.post("/admin/storages/no-such/secret-key", headers=ADMIN)).status == 404


_EVERY_CALL = [
    ("POST", "/admin/storages"),
    ("GET", "/admin/storages?account=a"),
    ("GET", "/admin/storages/x"),
    ("DELETE", "/admin/storages/x"),
    ("POST", "/admin/storages/x/secret-key"),
]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
    ],
)
async def test_every_call_needs_the_token(admin: Client, headers: dict[str, str]) -> None:
    for method, url in _EVERY_CALL:
        response = await admin.request(
            method, url, json={"type": "TEMP", "ttl": 5}, headers=headers
        )
        assert response.status == 401, (method, url)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "administrator token" in (await response.json())["error"]


@pytest.mark.parametrize("headers", [ADMIN, {}])
async def test_without_a_configured_token_the_api_is_disabled(
    api: Client, create_storage: StorageFactory, headers: dict[str, str]
) -> None:
    storage = await create_storage()
    existing = [
        ("GET", f"/admin/storages/{storage.id}"),
        ("DELETE", f"/admin/storages/{storage.id}"),
        ("POST", f"/admin/storages/{storage.id}/secret-key"),
    ]
    for method, url in [*_EVERY_CALL, *existing]:
        response = await api.request(
            method, url, json={"type": "TEMP", "ttl": 5000}, headers=headers
        )
        assert response.status == 403, (method, url)
        assert "disabled" in (await response.json())["error"]
    status, body = await get(api, storage, "k")
    assert status == 404
    assert "has no key" in body  # still there, with the same secret
