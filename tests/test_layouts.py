"""The two layouts side by side, against the real node: storages in the shared indices,
routed by storage, and storages with indices of their own (the original's, the CloudStack
plugin's), served by one deployment."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage import wiring
from kv_storage.app import create_app
from kv_storage.app_keys import SERVICE
from kv_storage.config import Config
from kv_storage.es.names import IndexNames
from kv_storage.es.provisioning import initialise
from kv_storage.es.shard_budget import ShardBudget
from tests.conftest import BOTH_LAYOUTS, CountingProxy, StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory, get, path, placed, put
from tests.waiting import wait_until

TOKEN = "layouts-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
TEXT = "text/plain"


async def _create(api: Client, **body: Any) -> StorageRef:
    response = await api.post("/admin/storages", json=body, headers=ADMIN)
    assert response.status == 201, await response.text()
    created = await response.json()
    return StorageRef(created["id"], created["secretKey"])


async def _indices(es: AsyncElasticsearch, index_prefix: str) -> set[str]:
    found = await es.indices.get(index=f"{index_prefix}*", expand_wildcards="all")
    return {name.removeprefix(index_prefix) for name in found}


async def test_new_storages_are_shared_and_a_plugin_storage_is_served_from_its_own_index(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """A deployment whose new storages are shared, with a storage the CloudStack plugin
    wrote: registry fields without a layout, and an index the plugin made itself."""
    api = await aiohttp_client(
        create_app(
            make_config(KV_STORAGE_ELASTICSEARCH_LAYOUT="shared", KV_STORAGE_ADMIN_TOKEN=TOKEN)
        )
    )
    plugin = StorageRef("plugin-vm-1", "plugin-secret")
    await es.index(
        index=IndexNames(index_prefix).registry,
        id=plugin.id,
        document={
            "type": "VM",
            "deleted": False,
            "account": None,
            "name": None,
            "description": None,
            "secret_key": plugin.secret_key,
            "history_enabled": False,
            "ttl": None,
            "expiration_timestamp": None,
            "last_updated": int(time.time() * 1000),
        },
        refresh=True,
    )
    plugin_index = IndexNames(index_prefix).data(plugin.id)
    await es.indices.create(index=plugin_index)
    await es.index(index=plugin_index, id="from-2018", document={"value": "old"}, refresh=True)
    shared = await _create(api, type="ACCOUNT", account="a", name="n", historyEnabled=True)
    for storage in (plugin, shared):
        await put(api, storage, "k", f"{storage.id}-v")
    assert await get(api, plugin, "from-2018") == (200, "old")
    for storage in (plugin, shared):
        assert await get(api, storage, "k") == (200, f"{storage.id}-v")
    listed = await api.get(path("list", plugin), headers=plugin.headers)
    assert sorted(await listed.json()) == ["from-2018", "k"]
    listed = await api.get(path("list", shared), headers=shared.headers)
    assert await listed.json() == ["k"]
    # The shared storage made no index of its own; its key is in the shared index.
    indices = await _indices(es, index_prefix)
    assert f"storage-data-{shared.id}" not in indices
    assert f"storage-history-{shared.id}" not in indices
    where = placed(index_prefix, shared.id, "shared")
    document = await es.get(index=where.data_index, id=where.data_id("k"), routing=shared.id)
    assert document["_source"] == {"storage": shared.id, "key": "k", "value": f"{shared.id}-v"}
    assert (await es.get(index=plugin_index, id="k"))["_source"] == {
        "key": "k",
        "value": "plugin-vm-1-v",
    }
    response = await api.get(f"/admin/storages/{shared.id}", headers=ADMIN)
    assert (await response.json())["layout"] == "shared"


async def test_a_storages_documents_are_on_one_shard_and_every_request_is_routed(
    make_config: Callable[..., Config],
    es: AsyncElasticsearch,
    es_proxy: CountingProxy,
    index_prefix: str,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    """Shared indices of three primaries: each storage's keys and history are all on one
    shard, and gets, multi-gets, bulks, pages by prefix and history searches name it."""
    await initialise(es, index_prefix, shared_shards=3)
    api = await aiohttp_client(
        create_app(
            make_config(
                KV_STORAGE_ELASTICSEARCH_URI=es_proxy.url,
                KV_STORAGE_ELASTICSEARCH_LAYOUT="shared",
                KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="100ms",
            )
        )
    )
    storages = [await create_storage(history_enabled=True, layout="shared") for _ in range(4)]
    for storage in storages:
        response = await api.put(
            path("set", storage), json={f"k{n}": "v" for n in range(30)}, headers=storage.headers
        )
        assert response.status == 200
        assert await get(api, storage, "k1") == (200, "v")
        response = await api.post(path("get", storage), json=["k2"], headers=storage.headers)
        assert await response.json() == {"k2": "v"}
    es_requests = list(zip(es_proxy.requests, es_proxy.bodies, strict=True))
    data = [body for (_, route), body in es_requests if route.startswith(("/_bulk", "/_mget"))]
    assert data
    assert all(b'"routing"' in body for body in data)
    index = placed(index_prefix, storages[0].id, "shared")
    settings = await es.indices.get_settings(index=index.data_index)
    assert settings[index.data_index]["settings"]["index"]["number_of_shards"] == "3"

    async def history_written() -> bool:
        await es.indices.refresh(index=index.history_index)
        return bool((await es.count(index=index.history_index))["count"] == 4 * 30)

    await wait_until(history_written, what="the history written")
    await es.indices.refresh(index=index.data_index)  # pages see writes after a refresh
    es_proxy.clear()
    for storage in storages:
        response = await api.get(
            str(path("list", storage)) + "?prefix=k&limit=5", headers=storage.headers
        )
        assert len(await response.json()) == 5
        response = await api.get(path("history", storage), headers=storage.headers)
        assert (await response.json())["total"] == 30
    sent = list(zip(es_proxy.requests, es_proxy.bodies, strict=True))
    pages = [body for (_, route), body in sent if route.startswith("/_msearch")]
    histories = [route for (_, route), _ in sent if "/_search" in route]
    assert pages
    assert histories
    assert all(b'"routing"' in body for body in pages)
    assert all("routing=" in route for route in histories)
    await es.indices.refresh(index=[index.data_index, index.history_index])
    for storage in storages:
        for shared_index in (index.data_index, index.history_index):
            shards = set()
            for shard in range(3):
                found = await es.count(
                    index=shared_index,
                    preference=f"_shards:{shard}",
                    query={"term": {"storage": storage.id}},
                )
                if found["count"]:
                    shards.add(shard)
            assert len(shards) == 1, (shared_index, storage.id, shards)


async def test_the_longest_key_of_the_longest_id_is_one_document(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """A 128-character storage id and keys of 512 bytes of UTF-8 (within Elasticsearch's 512
    bytes for an id only hashed): each key is one document, found again, listed, deleted."""
    api = await aiohttp_client(
        create_app(
            make_config(KV_STORAGE_ELASTICSEARCH_LAYOUT="shared", KV_STORAGE_ADMIN_TOKEN=TOKEN)
        )
    )
    storage = await _create(api, type="VM", vm="v" * 128)
    keys = ["é" * 256, "é" * 255 + "ab", "/" * 512]
    for key in keys:
        assert len(key.encode()) == 512
        await put(api, storage, key, key[-3:])
    for key in keys:
        assert await get(api, storage, key) == (200, key[-3:])
    listed = await api.get(path("list", storage), headers=storage.headers)
    assert sorted(await listed.json()) == sorted(keys)
    response = await api.delete(path("delete", storage, keys[0]), headers=storage.headers)
    assert response.status == 200
    assert (await get(api, storage, keys[0]))[0] == 404
    assert await get(api, storage, keys[1]) == (200, keys[1][-3:])


async def test_a_shared_storage_deleted_is_gone_everywhere_and_purged_with_racing_writes(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """Two instances. The deletion is answered at once; writes through the other instance
    go on until it has seen the deletion (within the revocation bound), then answer 404. The
    sweep then removes the storage's keys and history from the shared indices, those racing
    writes' included, and nothing of another storage."""
    settings = {
        "KV_STORAGE_ELASTICSEARCH_LAYOUT": "shared",
        "KV_STORAGE_ADMIN_TOKEN": TOKEN,
        "KV_STORAGE_APP_CACHE_UPDATE_TIME": "300ms",
        "KV_STORAGE_APP_REQUEST_TIMEOUT": "2s",
        "KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT": "100ms",
        "KV_STORAGE_APP_EXPIRY_INTERVAL": "1 hour",
    }
    first_app = create_app(make_config(**settings))
    first_app[SERVICE].drop_delay_s = 0.0
    first = await aiohttp_client(first_app)
    second = await aiohttp_client(create_app(make_config(**settings)))
    doomed = await _create(first, type="ACCOUNT", account="a", name="n", historyEnabled=True)
    kept = await _create(first, type="ACCOUNT", account="a", name="k", historyEnabled=True)
    for storage in (doomed, kept):
        response = await second.put(
            path("set", storage), json={f"k{n}": "v" for n in range(20)}, headers=storage.headers
        )
        assert response.status == 200
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await first.delete(f"/admin/storages/{doomed.id}", headers=ADMIN)
    assert response.status == 200
    assert (await get(first, doomed, "k1"))[0] == 404  # at once where it was deleted
    headers = {**doomed.headers, "Content-Type": TEXT}
    racing = 0

    async def refused_on_second() -> bool:
        nonlocal racing
        racing += 1
        url = path("set", doomed, f"racing{racing}")
        return (await second.put(url, data=b"v", headers=headers)).status == 404

    await wait_until(refused_on_second, interval_s=0.01, what="the deletion seen by the other")
    assert loop.time() - started <= 0.3 + 2  # update-time + request-timeout
    where = placed(index_prefix, doomed.id, "shared")
    # However few of those landed, one surely did: a late write of an instance that had not
    # seen the deletion, landing after it was answered.
    await es.index(
        **where.search_options(where.data_index),
        id=where.data_id("late"),
        document=where.tagged({"key": "late", "value": "v"}),
    )

    async def history_settled() -> bool:
        buffered = 0.0
        for api in (first, second):
            text = await (await api.get("/metrics")).text()
            buffered += sum(
                float(line.split()[1])
                for line in text.splitlines()
                if line.startswith("kv_storage_history_buffered_records ")
            )
        return buffered == 0

    await wait_until(history_settled, what="the history written")
    await first_app[SERVICE].expiry.run_now()
    for index in (where.data_index, where.history_index):
        await es.indices.refresh(index=index)
        for storage, expected in ((doomed, 0), (kept, 20)):
            query = {"term": {"storage": storage.id}}
            found = await es.count(index=index, routing=storage.id, query=query)
            assert found["count"] == expected, (index, storage.id)
    stats = first_app[SERVICE].expiry.stats
    assert stats.purged >= 40
    assert stats.pending == 0


async def test_a_purge_cut_short_is_done_by_the_next_lease_holder(
    make_config: Callable[..., Config],
    initialised_config: Config,
    es: AsyncElasticsearch,
    index_prefix: str,
    create_storage: StorageFactory,
) -> None:
    """The holder of the lease saw the deletion and stopped before its delay passed; a new
    holder (a restart) finds the deletion again from the mark and purges it."""
    storage = await create_storage(layout="shared")
    where = placed(index_prefix, storage.id, "shared")
    await es.index(
        **where.search_options(where.data_index),
        id=where.data_id("k"),
        document=where.tagged({"key": "k", "value": "v"}),
        refresh=True,
    )
    registry = IndexNames(index_prefix).registry
    config = make_config(KV_STORAGE_APP_EXPIRY_INTERVAL="1 hour")
    sweep_parts = (wiring.elasticsearch, wiring.lifecycle, wiring.expiry)
    parts = wiring.Service(config, request_timeout_s=3, drop_delay_s=3600)
    async with wiring.running(parts, sweep_parts):
        await parts.expiry.run_now()
        await es.update(index=registry, id=storage.id, doc={"deleted": True})
        await parts.expiry.run_now()
        assert parts.expiry.stats.pending == 1  # seen, not yet due
    assert (await es.count(index=where.data_index, routing=storage.id))["count"] == 1
    parts = wiring.Service(config, request_timeout_s=3, drop_delay_s=0)
    async with wiring.running(parts, sweep_parts):
        await parts.expiry.run_now()
        assert parts.expiry.stats.purged == 1
    await es.indices.refresh(index=where.data_index)
    assert (await es.count(index=where.data_index, routing=storage.id))["count"] == 0


@pytest.mark.slow
async def test_more_storages_than_a_nodes_shard_budget_allows_per_storage(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """1,500 storages, 300 of them keeping history, each written and read back, on the one
    test node (1,000 shards at most): in the per-storage layout they would need 1,800 shards.
    The node holds no index for any of them; the shared indices hold them all."""
    api = await aiohttp_client(
        create_app(
            make_config(
                KV_STORAGE_ELASTICSEARCH_LAYOUT="shared",
                KV_STORAGE_ADMIN_TOKEN=TOKEN,
                KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="200ms",
                KV_STORAGE_APP_CACHE_MAX_SIZE="2000",
            )
        )
    )
    before = await _indices(es, index_prefix)
    semaphore = asyncio.Semaphore(16)

    async def one(n: int) -> StorageRef:
        async with semaphore:
            storage = await _create(
                api, type="ACCOUNT", account="scale", name=f"s{n}", historyEnabled=n < 300
            )
            await put(api, storage, "k", f"v{n}")
            assert await get(api, storage, "k") == (200, f"v{n}")
            return storage

    storages = await asyncio.gather(*(one(n) for n in range(1500)))
    assert len({s.id for s in storages}) == 1500
    assert await _indices(es, index_prefix) == before  # not one index more
    where = placed(index_prefix, storages[0].id, "shared")

    async def history_written() -> bool:
        await es.indices.refresh(index=where.history_index)
        return bool((await es.count(index=where.history_index))["count"] == 300)

    await wait_until(history_written, timeout_s=60, what="the history of 300 storages")
    await es.indices.refresh(index=where.data_index)
    assert (await es.count(index=where.data_index))["count"] == 1500


async def test_a_per_storage_storage_the_shard_limit_cannot_hold_is_refused_at_creation(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """The node's shard limit lowered to what it holds: a per-storage storage with history
    (two indices) is refused at creation with 507 naming the limit, and nothing of it stays;
    the detailed health warns; a shared storage is created and written all the same."""
    per_storage = await aiohttp_client(
        create_app(
            make_config(KV_STORAGE_ELASTICSEARCH_LAYOUT="per-storage", KV_STORAGE_ADMIN_TOKEN=TOKEN)
        )
    )
    shared = await aiohttp_client(
        create_app(
            make_config(KV_STORAGE_ELASTICSEARCH_LAYOUT="shared", KV_STORAGE_ADMIN_TOKEN=TOKEN)
        )
    )
    health = await per_storage.get("/health", params={"detailed": "true"})
    assert [check["name"] for check in (await health.json())["checks"]] == [
        "STORAGE_REGISTRY",
        "STORAGE_DATA_TEMPLATE",
        "STORAGE_HISTORY_TEMPLATE",
    ]  # the original's three while the budget is far from used
    # The limit at what the node holds: nothing more fits, and the budget is all used.
    used = (await ShardBudget(es).usage()).used
    await es.cluster.put_settings(persistent={"cluster.max_shards_per_node": used})
    try:
        before = await _indices(es, index_prefix)
        response = await per_storage.post(
            "/admin/storages",
            json={"type": "ACCOUNT", "account": "a", "name": "n", "historyEnabled": True},
            headers=ADMIN,
        )
        answer = await response.json()
        assert response.status == 507, answer
        assert "cluster.max_shards_per_node" in answer["error"]
        assert await _indices(es, index_prefix) == before  # its first index went again
        listed = await per_storage.get("/admin/storages", params={"account": "a"}, headers=ADMIN)
        assert (await listed.json())["total"] == 0
        health = await per_storage.get("/health", params={"detailed": "true"})
        assert health.status == 200
        checks = (await health.json())["checks"]
        assert checks[-1]["name"] == "SHARD_BUDGET"
        assert checks[-1]["status"] == "HEALTHY"
        assert f"of {used} shards in use" in checks[-1]["message"]
        storage = await _create(shared, type="ACCOUNT", account="a", name="s", historyEnabled=True)
        await put(shared, storage, "k", "v")
        assert await get(shared, storage, "k") == (200, "v")
    finally:
        await es.cluster.put_settings(persistent={"cluster.max_shards_per_node": None})


async def test_operations_of_both_layouts_share_batches_and_each_gets_its_own_answer(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    es_proxy: CountingProxy,
    create_storage: StorageFactory,
) -> None:
    """Gets and sets of storages in either layout at once: they go as shared _mget and _bulk
    requests (fewer than the operations), and every answer is its own."""
    api = await aiohttp_client(create_app(make_config(KV_STORAGE_ELASTICSEARCH_URI=es_proxy.url)))
    storages = [await create_storage(layout=layout) for layout in ("per-storage", "shared") * 3]
    for storage in storages:  # lookups cached, per-storage indices there
        await put(api, storage, "seed", "s")
    es_proxy.clear()
    await asyncio.gather(  # each put asserts its 200
        *(
            put(api, storage, f"k{n}", f"{storage.id}-{n}")
            for n in range(20)
            for storage in storages
        )
    )
    gets = await asyncio.gather(
        *(get(api, storage, f"k{n}") for n in range(20) for storage in storages)
    )
    assert gets == [(200, f"{storage.id}-{n}") for n in range(20) for storage in storages]
    batches = es_proxy.count(path_part="/_bulk") + es_proxy.count(path_part="/_mget")
    assert 0 < batches < 240 / 2, batches
    mixed = [
        body
        for (_, route), body in zip(es_proxy.requests, es_proxy.bodies, strict=True)
        if route.startswith("/_bulk") and b'"routing"' in body and b"storage-data-" in body
    ]
    assert mixed  # a _bulk held items of both layouts


@BOTH_LAYOUTS
async def test_lists_at_once_share_refreshes_and_each_sees_the_writes_before_it(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    es_proxy: CountingProxy,
    create_storage: StorageFactory,
    storage_layout: str,
) -> None:
    """12 storages listed at once (within elasticsearch.scroll.max-open), each right after its
    write: every list has its new key, and in the shared layout (one index) they share a few
    refreshes rather than sending 12 (one storage listing in a loop cannot have everyone's
    index refreshed as fast as it asks)."""
    api = await aiohttp_client(create_app(make_config(KV_STORAGE_ELASTICSEARCH_URI=es_proxy.url)))
    storages = [await create_storage() for _ in range(12)]
    for storage in storages:
        await put(api, storage, "old", "o")

    async def write_then_list(storage: StorageRef) -> list[str]:
        await put(api, storage, "new", "n")
        listed = await api.get(path("list", storage), headers=storage.headers)
        assert listed.status == 200, await listed.text()
        return sorted(await listed.json())

    es_proxy.clear()
    lists = await asyncio.gather(*(write_then_list(storage) for storage in storages))
    assert lists == [["new", "old"]] * 12
    refreshes = sum(  # of data indices (the registry's poll refreshes it meanwhile)
        1 for _, route in es_proxy.requests if "/_refresh" in route and "-data" in route
    )
    if storage_layout == "shared":
        assert refreshes <= 12 / 2, refreshes
    else:
        assert refreshes == 12  # an index each: nothing to share
