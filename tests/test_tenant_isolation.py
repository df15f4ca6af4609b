"""Tenants share batches, never their fate: what one storage sends cannot fail another's
operations, against the real node.

The bad operations here are built past the handlers' checks on purpose (a condition the
handlers now refuse with 400): they stand for whatever a future bug might let through, and
Elasticsearch refuses them for real, for the whole request they travel in.
"""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, BadRequestError

from kv_storage.actors.shares import SCANS, SharedPool
from kv_storage.actors.storage import (
    Clear,
    GetValue,
    ListKeys,
    SetValue,
    SetValues,
    StorageActor,
)
from kv_storage.app import create_app
from kv_storage.config import BatchLimits, Config, ScrollConfig
from kv_storage.errors import TooManyRequestsError
from kv_storage.es.data import DataStore
from kv_storage.es.names import IndexNames
from kv_storage.model import Condition, Storage, StorageType, Version
from tests.conftest import CountingProxy, StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory, path
from tests.waiting import wait_until

TEXT = "text/plain"


class _NoHistory:
    def record(self, records: Any) -> None:
        raise AssertionError("no history for these storages")


def _storage(ref: StorageRef) -> Storage:
    return Storage(
        id=ref.id, type=StorageType.ACCOUNT, history_enabled=False, secret_key=ref.secret_key
    )


async def test_a_batch_refused_as_a_whole_fails_only_the_operation_at_fault(
    initialised_config: Config,
    create_storage: StorageFactory,
    es_proxy: CountingProxy,
    index_prefix: str,
) -> None:
    """One set goes alone; while it is out, 60 sets of three victims' storages and two
    forged conditional sets of the attacker's (primary term 0, a sequence number beyond a
    long) wait, and would go as one _bulk, which Elasticsearch refuses as a whole. Every
    victim's set succeeds, each attacker's set fails alone, and the victims' values are
    there."""
    victims = [await create_storage() for _ in range(3)]
    attacker = await create_storage()
    forged = [
        Condition(version=Version(primary_term=0, seq_no=1)),
        Condition(version=Version(primary_term=1, seq_no=2**63)),
    ]
    async with AsyncElasticsearch(es_proxy.url) as client:
        actor = StorageActor(
            data=DataStore(
                client, IndexNames(index_prefix), ScrollConfig(page_size=100, keep_alive_s=60.0)
            ),
            history=_NoHistory(),
            scans=SharedPool(capacity=4, share=4, names=SCANS),
            batch_limits=BatchLimits(max_operations=1000, max_bytes=1 << 20, max_in_flight=1),
        )
        actor.start()
        try:

            def set_of(ref: StorageRef, key: str, value: str, **condition: Condition) -> Any:
                message = SetValue(_storage(ref), key, value, 0, *condition.values())
                return asyncio.create_task(actor.ask(message))

            first = set_of(victims[0], "first", "v")
            victim_sets = [
                set_of(ref, f"k{n}", f"{ref.id}{n}") for n in range(10) for ref in victims
            ]
            attack = set_of(attacker, "x", "y", condition=forged[0])
            victim_sets += [
                set_of(ref, f"k{n}", f"{ref.id}{n}") for n in range(10, 20) for ref in victims
            ]
            second_attack = set_of(attacker, "z", "y", condition=forged[1])
            await first
            outcomes = await asyncio.gather(*victim_sets, return_exceptions=True)
            assert [o for o in outcomes if isinstance(o, BaseException)] == []
            for refused in (attack, second_attack):
                with pytest.raises(BadRequestError):
                    await refused
            values = await asyncio.gather(
                *(actor.ask(GetValue(_storage(ref), f"k{n}")) for n in range(20) for ref in victims)
            )
            assert [found.value for found in values] == [
                f"{ref.id}{n}" for n in range(20) for ref in victims
            ]
        finally:
            await actor.stop()
    bulks = [body for body in es_proxy.bodies if b'"index"' in body]
    # The forged conditions did travel with the victims' sets, in one _bulk at first.
    assert any(b'"if_primary_term":0' in body and body.count(b'{"index"') > 10 for body in bulks)


async def test_forged_conditions_of_one_storage_fail_no_write_of_another(
    api: Client, create_storage: StorageFactory
) -> None:
    """The attack as a client makes it: forged If-Match headers on one storage while another
    storage's ordinary sets are under way."""
    victim, attacker = await create_storage(), await create_storage()
    forged = ['"0-1"', '"1-9223372036854775808"', '"9223372036854775808-1"']

    async def put(ref: StorageRef, key: str, **headers: str) -> int:
        response = await api.put(
            path("set", ref, key),
            data="v",
            headers={**ref.headers, "Content-Type": "text/plain", **headers},
        )
        return response.status

    answers = await asyncio.gather(
        *(put(victim, f"k{n}") for n in range(60)),
        *(put(attacker, "x", **{"If-Match": forged[n % 3]}) for n in range(30)),
    )
    assert answers == [200] * 60 + [400] * 30


async def test_a_storage_at_its_share_of_open_scans_is_429_while_another_lists(
    initialised_config: Config,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """Lists hold a scroll each until their last page is sent; storage a holds its share
    (2 of 4): its next list and clear are 429, storage b still lists and clears."""
    a, b = await create_storage(), await create_storage()
    actor = StorageActor(
        data=DataStore(
            es, IndexNames(index_prefix), ScrollConfig(page_size=100, keep_alive_s=60.0)
        ),
        history=_NoHistory(),
        scans=SharedPool(capacity=4, share=2, names=SCANS),
        batch_limits=BatchLimits(max_operations=1000, max_bytes=1 << 20, max_in_flight=1),
    )
    actor.start()
    try:
        for ref in (a, b):
            await actor.ask(SetValues(_storage(ref), {"k": "v"}, 0))
        held = [await actor.ask(ListKeys(_storage(a))) for _ in range(2)]
        for refused in (ListKeys(_storage(a)), Clear(_storage(a), 0)):
            with pytest.raises(TooManyRequestsError) as error:
                await actor.ask(refused)
            assert error.value.headers == {"Retry-After": "1"}
            assert "elasticsearch.scroll.max-open-per-storage" in error.value.message
        scan = await actor.ask(ListKeys(_storage(b)))
        assert [key async for page in scan for key in page] == ["k"]
        await scan.close()
        await actor.ask(Clear(_storage(b), 0))
        await held[0].close()
        scan = await actor.ask(ListKeys(_storage(a)))  # a slot of its share again
        await scan.close()
        await held[1].close()
        assert actor.refused_for_share == 2
    finally:
        await actor.stop()


async def _metric(api: Client, name: str) -> float:
    text = await (await api.get("/metrics")).text()
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


async def test_a_storage_at_its_share_of_waiters_is_429_while_another_waits(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    api = await aiohttp_client(
        create_app(
            make_config(
                KV_STORAGE_APP_WATCH_MAX_WAITERS="10",
                KV_STORAGE_APP_WATCH_MAX_WAITERS_PER_STORAGE="3",
            )
        )
    )
    a, b = await create_storage(), await create_storage()

    async def set_and_tag(ref: StorageRef, value: str) -> str:
        response = await api.put(
            path("set", ref, "k"), data=value, headers={**ref.headers, "Content-Type": TEXT}
        )
        return response.headers["ETag"]

    def wait(ref: StorageRef, tag: str) -> Any:
        return api.get(
            path("get", ref, "k"),
            params={"wait": "30s"},
            headers={**ref.headers, "If-None-Match": tag},
        )

    tag_a, tag_b = await set_and_tag(a, "1"), await set_and_tag(b, "1")
    held = [asyncio.create_task(wait(a, tag_a)) for _ in range(3)]

    async def three_wait() -> bool:
        return await _metric(api, "kv_storage_watch_waiters") == 3

    await wait_until(three_wait, what="a's three waiters")
    refused = await wait(a, tag_a)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    assert "app.watch.max-waiters-per-storage" in (await refused.json())["error"]
    waiting_b = asyncio.create_task(wait(b, tag_b))

    async def four_wait() -> bool:
        return await _metric(api, "kv_storage_watch_waiters") == 4

    await wait_until(four_wait, what="b waiting beside a's three")
    await set_and_tag(b, "2")
    answer = await waiting_b
    assert (answer.status, await answer.text()) == (200, "2")
    await set_and_tag(a, "2")
    assert [(await task).status for task in held] == [200, 200, 200]
    assert await _metric(api, "kv_storage_share_refusals_waiters_total") == 1


async def test_a_storage_at_its_share_of_batched_keys_is_429_while_another_writes(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    """Storage a sends 20 multi-sets of 1,000 keys at once, beyond its share of 1,000 keys
    waiting for Elasticsearch: those beyond are 429 with Retry-After, the others written;
    storage b's single sets meanwhile all succeed."""
    api = await aiohttp_client(
        create_app(make_config(KV_STORAGE_ELASTICSEARCH_BATCH_MAX_KEYS_PER_STORAGE="1000"))
    )
    a, b = await create_storage(), await create_storage()

    async def multi_set(n: int) -> tuple[int, Any]:
        pairs = {f"m{n}-{k}": "v" for k in range(1000)}
        response = await api.put(path("set", a), json=pairs, headers=a.headers)
        return response.status, response.headers.get("Retry-After")

    async def single_set(n: int) -> int:
        response = await api.put(
            path("set", b, f"k{n}"), data=b"v", headers={**b.headers, "Content-Type": TEXT}
        )
        return response.status

    answers = await asyncio.gather(
        *(multi_set(n) for n in range(20)), *(single_set(n) for n in range(50))
    )
    by_a = answers[:20]
    assert set(answers[20:]) == {200}
    assert {status for status, _ in by_a} == {200, 429}, by_a
    assert all(retry == "1" for status, retry in by_a if status == 429)
    refusals = sum(1 for status, _ in by_a if status == 429)
    assert await _metric(api, "kv_storage_share_refusals_operations_total") == refusals
    written = [n for n, (status, _) in enumerate(by_a) if status == 200]
    keys = [f"m{n}-0" for n in written]
    response = await api.post(path("get", a), json=keys, headers=a.headers)
    assert await response.json() == dict.fromkeys(keys, "v")
