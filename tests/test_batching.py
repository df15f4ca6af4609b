"""Concurrent operations go to Elasticsearch in batches, and each request still gets exactly
its own answer: against the real node, counting what reaches it (its own per-route statistics
and a counting proxy)."""

import asyncio
from collections.abc import Callable
from typing import Any

from elasticsearch import AsyncElasticsearch

from kv_storage.actors.shares import SCANS, SharedPool
from kv_storage.actors.storage import GetValue, SetValue, StorageActor
from kv_storage.app import create_app
from kv_storage.config import BatchLimits, Config, ScrollConfig
from kv_storage.es.data import DataStore
from kv_storage.es.names import IndexNames
from kv_storage.model import Storage, StorageType
from tests.conftest import BOTH_LAYOUTS, CountingProxy, StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory, get, path, per_storage_only, route_requests

pytestmark = BOTH_LAYOUTS

TEXT = "text/plain"


async def set_value(api: Client, storage: StorageRef, key: str, value: str) -> int:
    response = await api.put(
        path("set", storage, key),
        data=value.encode(),
        headers={**storage.headers, "Content-Type": TEXT},
    )
    return response.status


async def test_concurrent_operations_of_several_storages_are_answered_right_in_fewer_requests(
    api: Client, create_storage: StorageFactory, es: AsyncElasticsearch
) -> None:
    storages = [await create_storage() for _ in range(3)]
    never_written = await create_storage()
    for storage in storages:  # the lookups cached, each storage's index there
        assert await set_value(api, storage, "seed", "seed") == 200
    before = await route_requests(es, "/_mget", "/_bulk")

    async def sets() -> list[int]:
        return await asyncio.gather(
            *(
                set_value(api, storage, f"k{n}", f"{storage.id}:{n}")
                for n in range(40)
                for storage in storages
            )
        )

    async def multi_sets() -> list[Any]:
        answers = await asyncio.gather(
            *(
                api.put(
                    path("set", storage),
                    json={f"m{n}": f"{storage.id}:m{n}" for n in range(5)} | {"bad": None},
                    headers=storage.headers,
                )
                for storage in storages
            )
        )
        return [await answer.json() for answer in answers]

    set_statuses, multi_answers = await asyncio.gather(sets(), multi_sets())
    assert set(set_statuses) == {200}
    assert multi_answers == [{f"m{n}": True for n in range(5)} | {"bad": False}] * 3

    async def multi_get(storage: StorageRef, keys: list[str]) -> Any:
        response = await api.post(path("get", storage), json=keys, headers=storage.headers)
        assert response.status == 200
        return await response.json()

    singles = [(storage, f"k{n}") for n in range(40) for storage in storages]
    single_answers, multi_gets, absent, unwritten = await asyncio.gather(
        asyncio.gather(*(get(api, storage, key) for storage, key in singles)),
        asyncio.gather(*(multi_get(s, ["m0", "m4", "nope", "m0"]) for s in storages)),
        asyncio.gather(*(get(api, storage, "absent") for storage in storages)),
        get(api, never_written, "k0"),
    )
    assert single_answers == [(200, f"{storage.id}:{key[1:]}") for storage, key in singles]
    assert multi_gets == [{"m0": f"{s.id}:m0", "m4": f"{s.id}:m4", "nope": None} for s in storages]
    assert [status for status, _ in absent] == [404] * 3
    assert unwritten[0] == 404

    operations = len(set_statuses) + len(multi_answers) + len(single_answers) + 3 + 3 + 1
    requests = await route_requests(es, "/_mget", "/_bulk") - before
    assert 0 < requests < operations / 2, (requests, operations)


async def test_one_refused_document_fails_only_its_own_request(
    api: Client,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    storage_layout: str,
) -> None:
    """A storage whose index refuses writes (a write block, as a full disk sets it): its sets
    fail, the sets of other storages in the same batches succeed."""
    per_storage_only(storage_layout, "a storage's own index, closed to writes")
    blocked, healthy = await create_storage(), await create_storage()
    for storage in (blocked, healthy):
        assert await set_value(api, storage, "seed", "v") == 200
    await es.indices.add_block(index=IndexNames(index_prefix).data(blocked.id), block="write")
    before = await route_requests(es, "/_bulk")
    answers = await asyncio.gather(
        *(
            set_value(api, storage, f"k{n}", "v")
            for n in range(30)
            for storage in (healthy, blocked)
        )
    )
    requests = await route_requests(es, "/_bulk") - before
    assert answers == [200, 500] * 30
    assert requests < len(answers) / 2, requests  # they did share requests
    for n in range(30):
        assert await get(api, healthy, f"k{n}") == (200, "v")
    response = await api.put(
        path("set", blocked, "one"), data=b"v", headers={**blocked.headers, "Content-Type": TEXT}
    )
    body = await response.json()
    assert response.status == 500
    assert body["error"].startswith("Elasticsearch refused the request (request id ")


async def test_one_unreadable_document_fails_only_its_own_request(
    api: Client,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    storage_layout: str,
) -> None:
    """A storage whose index is closed: its documents come back from the _mget as errors;
    the gets of other storages in the same batches are answered."""
    per_storage_only(storage_layout, "a storage's own index, closed")
    closed, open_ = await create_storage(), await create_storage()
    for storage in (closed, open_):
        assert await set_value(api, storage, "k", "v") == 200
    await es.indices.close(index=IndexNames(index_prefix).data(closed.id))
    before = await route_requests(es, "/_mget")
    answers = await asyncio.gather(
        *(get(api, storage, "k") for _ in range(30) for storage in (open_, closed))
    )
    requests = await route_requests(es, "/_mget") - before
    assert [status for status, _ in answers] == [200, 500] * 30
    assert {text for status, text in answers if status == 200} == {"v"}
    assert all("Elasticsearch refused the request" in text for _, text in answers[1::2])
    assert requests < len(answers) / 2, requests


async def test_each_client_sees_its_own_writes(api: Client, create_storage: StorageFactory) -> None:
    """Set, then get, by 20 clients at once, 10 rounds each: every get sees the set before it."""
    storage = await create_storage()

    async def client(number: int) -> list[tuple[int, str]]:
        seen = []
        for round_ in range(10):
            value = f"{number}-{round_}"
            assert await set_value(api, storage, f"c{number}", value) == 200
            seen.append(await get(api, storage, f"c{number}"))
        return seen

    results = await asyncio.gather(*(client(n) for n in range(20)))
    for number, seen in enumerate(results):
        assert seen == [(200, f"{number}-{round_}") for round_ in range(10)]


def _actor(client: AsyncElasticsearch, prefix: str, **limits: int) -> StorageActor:
    class NoHistory:
        def record(self, records: Any) -> None:
            raise AssertionError("no history for these storages")

    return StorageActor(
        data=DataStore(client, IndexNames(prefix), ScrollConfig(page_size=100, keep_alive_s=60.0)),
        history=NoHistory(),
        scans=SharedPool(capacity=4, share=4, names=SCANS),
        batch_limits=BatchLimits(
            **{"max_operations": 1000, "max_bytes": 1 << 20, "max_in_flight": 1, **limits}
        ),
    )


def _storage(ref: StorageRef) -> Storage:
    return Storage(
        id=ref.id, type=StorageType.ACCOUNT, history_enabled=False, secret_key=ref.secret_key
    )


async def test_writes_of_one_key_in_one_batch_leave_the_later_value(
    initialised_config: Config,
    create_storage: StorageFactory,
    es_proxy: CountingProxy,
    index_prefix: str,
) -> None:
    """Sets sent in a known order (the actor takes messages in the order they are asked):
    the first goes alone, the 50 after it wait for it and go as one batch, in which the same
    key is written 50 times. The last write is the one that stays, and a read asked after all
    of them sees it."""
    ref = await create_storage()
    storage = _storage(ref)
    async with AsyncElasticsearch(es_proxy.url) as client:
        actor = _actor(client, index_prefix)
        actor.start()
        try:
            sets = [
                asyncio.create_task(actor.ask(SetValue(storage, "k", f"v{n}", 0)))
                for n in range(51)
            ]
            read = asyncio.create_task(actor.ask(GetValue(storage, "k")))
            await asyncio.gather(*sets)
            assert (await read).value == "v50"
        finally:
            await actor.stop()
    assert es_proxy.count(path_part="/_bulk") == 2, es_proxy.requests
    assert es_proxy.count(path_part="/_mget") == 1, es_proxy.requests


async def test_writes_of_one_key_keep_their_order_across_batches(
    initialised_config: Config,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """One key per batch at most, four batches in flight: writes of one key still go one
    after the other, so the last one asked is the one that stays."""
    ref = await create_storage()
    storage = _storage(ref)
    actor = _actor(es, index_prefix, max_operations=1, max_in_flight=4)
    actor.start()
    try:
        tasks = []
        for n in range(40):
            tasks.append(asyncio.create_task(actor.ask(SetValue(storage, f"k{n % 3}", f"{n}", 0))))
        await asyncio.gather(*tasks)
        values = await asyncio.gather(*(actor.ask(GetValue(storage, f"k{n}")) for n in range(3)))
    finally:
        await actor.stop()
    assert [found.value for found in values] == ["39", "37", "38"]


async def test_batches_are_bounded_by_the_configured_size(
    make_config: Callable[..., Config],
    initialised_config: Config,
    es_proxy: CountingProxy,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    config = make_config(
        KV_STORAGE_ELASTICSEARCH_URI=es_proxy.url,
        KV_STORAGE_ELASTICSEARCH_BATCH_MAX_OPERATIONS="5",
        KV_STORAGE_ELASTICSEARCH_BATCH_MAX_IN_FLIGHT="1",
    )
    api = await aiohttp_client(create_app(config))
    storage = await create_storage()
    assert await set_value(api, storage, "seed", "v") == 200
    es_proxy.clear()
    answers = await asyncio.gather(*(set_value(api, storage, f"k{n}", "v") for n in range(40)))
    assert set(answers) == {200}
    bulks = [body for body in es_proxy.bodies if b'"index"' in body]
    assert all(body.count(b'{"index"') <= 5 for body in bulks), [b.count(b"index") for b in bulks]
    assert len(bulks) >= 8
