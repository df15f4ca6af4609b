"""Moving storages from indices of their own into the shared ones, while the service serves
them, against the real node (``kv-storage storage move``)."""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage import wiring
from kv_storage.actors.lifecycle import MoveStorage
from kv_storage.app import create_app
from kv_storage.config import Config
from kv_storage.es.names import IndexNames
from tests.conftest import ServiceStarter, StorageRef
from tests.helpers import Client, ClientFactory, get, path, placed, put
from tests.waiting import wait_until

TOKEN = "move-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
TEXT = "text/plain"
QUICK = {
    "KV_STORAGE_APP_CACHE_UPDATE_TIME": "200ms",
    "KV_STORAGE_APP_REQUEST_TIMEOUT": "1s",
    "KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT": "100ms",
    "KV_STORAGE_ADMIN_TOKEN": TOKEN,
}
"""Polls every 200 ms: a move waits 1.2 s for every instance to see each registry change."""


async def _per_storage(api: Client, *, history: bool = True) -> StorageRef:
    response = await api.post(
        "/admin/storages",
        json={"type": "ACCOUNT", "account": "a", "name": "n", "historyEnabled": history},
        headers=ADMIN,
    )
    assert response.status == 201, await response.text()
    created = await response.json()
    assert created["layout"] == "per-storage"
    return StorageRef(created["id"], created["secretKey"])


async def _layout(api: Client, storage: StorageRef) -> str:
    response = await api.get(f"/admin/storages/{storage.id}", headers=ADMIN)
    layout: str = (await response.json())["layout"]
    return layout


async def _history_total(api: Client, storage: StorageRef) -> int:
    response = await api.get(path("history", storage), headers=storage.headers)
    total: int = (await response.json())["total"]
    return total


async def _history_reaches(api: Client, storage: StorageRef, total: int) -> None:
    """History searches see records once written and refreshed (about a second)."""

    async def reached() -> bool:
        return await _history_total(api, storage) == total

    await wait_until(reached, timeout_s=30, what=f"{total} history records")


async def test_a_storage_moved_under_load_loses_no_acknowledged_write(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    start_service: ServiceStarter,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """10,000 keys with their history; clients read and write the storage all through its
    move. Every read is answered (200); a write is answered 200 or, while the copy runs, 503
    with Retry-After; after the move every write answered 200 is there, none answered 503 is,
    the history holds every acknowledged write, and the old indices are gone."""
    config = make_config(KV_STORAGE_ELASTICSEARCH_LAYOUT="per-storage", **QUICK)
    api = await aiohttp_client(create_app(config))
    storage = await _per_storage(api)
    for batch in range(10):
        pairs = {f"k{batch}-{n}": f"v{batch}-{n}" for n in range(1000)}
        response = await api.put(path("set", storage), json=pairs, headers=storage.headers)
        assert response.status == 200
    await _history_reaches(api, storage, 10_000)
    parts = await start_service(config, wiring.COMMAND)
    moving = asyncio.create_task(parts.lifecycle.ask(MoveStorage(storage.id)))
    reads: list[int] = []
    writes: dict[str, int] = {}
    retry_after: set[str | None] = set()

    async def client(number: int) -> None:
        sent = 0
        while not moving.done():
            reads.append((await get(api, storage, f"k{number}-{sent % 1000}"))[0])
            key = f"w{number}-{sent}"
            response = await api.put(
                path("set", storage, key),
                data=b"new",
                headers={**storage.headers, "Content-Type": TEXT},
            )
            writes[key] = response.status
            if response.status == 503:
                retry_after.add(response.headers.get("Retry-After"))
            sent += 1

    await asyncio.gather(*(client(n) for n in range(4)))
    report = await moving
    assert (report.outcome, report.keys) == ("moved", report.keys)
    assert report.keys >= 10_000
    assert set(reads) == {200}, set(reads)
    assert set(writes.values()) <= {200, 503}
    assert 503 in writes.values()  # writes were refused while the copy ran
    assert retry_after == {"2"}
    assert await _layout(api, storage) == "shared"
    written = [key for key, status in writes.items() if status == 200]
    refused = [key for key, status in writes.items() if status == 503]
    response = await api.post(path("get", storage), json=written + refused, headers=storage.headers)
    values = await response.json()
    assert [key for key in written if values[key] != "new"] == []
    assert [key for key in refused if values[key] is not None] == []
    for batch in (0, 9):
        assert await get(api, storage, f"k{batch}-999") == (200, f"v{batch}-999")
    await _history_reaches(api, storage, 10_000 + len(written))
    indices = await es.indices.get(
        index=f"{index_prefix}storage-*-{storage.id}", allow_no_indices=True
    )
    assert list(indices) == []
    where = placed(index_prefix, storage.id, "shared")
    await es.indices.refresh(index=where.data_index)
    counted = await es.count(index=where.data_index, routing=storage.id, query=where.query())
    assert counted["count"] == 10_000 + len(written)


async def test_a_move_that_fails_rolls_back_and_one_run_again_completes(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    start_service: ServiceStarter,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """The shared data index refuses writes during a move: the move fails, the storage is in
    its own indices again and written as before; once the index takes writes, the move run
    again completes. A storage marked moving by a move cut short is moved by the next run."""
    config = make_config(KV_STORAGE_ELASTICSEARCH_LAYOUT="per-storage", **QUICK)
    api = await aiohttp_client(create_app(config))
    storage, other = await _per_storage(api), await _per_storage(api, history=False)
    for ref in (storage, other):
        await put(api, ref, "k", "v")
    parts = await start_service(config, wiring.COMMAND)
    shared_data = placed(index_prefix, storage.id, "shared").data_index
    await es.indices.add_block(index=shared_data, block="write")
    try:
        with pytest.raises(Exception, match="403"):
            await parts.lifecycle.ask(MoveStorage(storage.id))
    finally:
        await es.indices.put_settings(index=shared_data, settings={"index.blocks.write": False})
    assert await _layout(api, storage) == "per-storage"

    async def writable() -> bool:
        response = await api.put(
            path("set", storage, "after"),
            data=b"x",
            headers={**storage.headers, "Content-Type": TEXT},
        )
        return response.status == 200

    await wait_until(writable, what="the rollback seen")  # within the revocation bound
    assert await get(api, storage, "after") == (200, "x")
    report = await parts.lifecycle.ask(MoveStorage(storage.id))
    assert (report.outcome, report.keys) == ("moved", 2)
    assert await get(api, storage, "after") == (200, "x")
    # A move cut short after marking the storage: the next run goes on.
    registry = IndexNames(index_prefix).registry
    await es.update(index=registry, id=other.id, doc={"moving": True}, refresh=True)
    again = await parts.lifecycle.ask(MoveStorage(other.id))
    assert (again.outcome, again.keys) == ("moved", 1)
    assert await get(api, other, "k") == (200, "v")
    assert (await parts.lifecycle.ask(MoveStorage(other.id))).outcome == "shared already"
    for ref in (storage, other):  # the old indices went once the copies were complete
        old = await es.indices.get(index=f"{index_prefix}storage-*-{ref.id}", allow_no_indices=True)
        assert list(old) == []


def _kv_storage(es_url: str, index_prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
        **QUICK,
    }
    return subprocess.run(
        [sys.executable, "-m", "kv_storage", "storage", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_storage_move_all_moves_every_per_storage_storage_and_reports_each(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    es_url: str,
    index_prefix: str,
) -> None:
    api = await aiohttp_client(
        create_app(make_config(KV_STORAGE_ELASTICSEARCH_LAYOUT="per-storage", **QUICK))
    )
    storages = [await _per_storage(api, history=n == 0) for n in range(3)]
    for storage in storages:
        await put(api, storage, "k", storage.id)
    await _history_reaches(api, storages[0], 1)
    result = await asyncio.to_thread(_kv_storage, es_url, index_prefix, "move", "--all")
    assert result.returncode == 0, result.stderr
    reports: list[dict[str, Any]] = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(report["id"] for report in reports) == sorted(s.id for s in storages)
    assert {report["outcome"] for report in reports} == {"moved"}
    by_id = {report["id"]: report for report in reports}
    assert by_id[storages[0].id]["records"] == 1
    assert by_id[storages[1].id]["keys"] == 1
    for storage in storages:
        assert await _layout(api, storage) == "shared"
        assert await get(api, storage, "k") == (200, storage.id)
    usage = await asyncio.to_thread(_kv_storage, es_url, index_prefix, "move")
    assert usage.returncode == 2
    assert "give a storage ID or --all" in usage.stderr
