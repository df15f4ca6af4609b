"""Tenants share batches, never their fate: what one storage sends cannot fail another's
operations, against the real node.

The bad operations here are built past the handlers' checks on purpose (a condition the
handlers now refuse with 400): they stand for whatever a future bug might let through, and
Elasticsearch refuses them for real, for the whole request they travel in.
"""

import asyncio
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, BadRequestError

from kv_storage.actors.batching import BatchLimits
from kv_storage.actors.storage import GetValue, SetValue, StorageActor
from kv_storage.config import Config
from kv_storage.es.data import DataStore, ScanSettings
from kv_storage.es.names import IndexNames
from kv_storage.model import Condition, Storage, StorageType, Version
from tests.conftest import CountingProxy, StorageFactory, StorageRef
from tests.helpers import Client, path


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
            data=DataStore(client, IndexNames(index_prefix), ScanSettings(100, "1m")),
            history=_NoHistory(),
            max_open_scans=4,
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
