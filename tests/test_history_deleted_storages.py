"""History records of deleted storages, against the real node.

Deleting a storage puts a write block on its indices (and creates a missing history index
with one), so that no late write re-creates them. A record refused by that block is dropped
at once: counted as discarded, not retried, not lost; the batch's other records are written.
"""

import logging
from collections.abc import Callable

import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage.app import create_app
from kv_storage.app_keys import SERVICE
from kv_storage.config import Config
from kv_storage.es.history import HistoryStore
from kv_storage.es.names import IndexNames
from pipeline.records import HistoryRecord, Operation
from tests.conftest import StorageFactory
from tests.helpers import ClientFactory, path, put
from tests.waiting import wait_until

TOKEN = "admin-token-for-tests-0123456789"


async def test_records_refused_by_a_deleted_storages_write_block_are_discarded_at_once(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = await aiohttp_client(
        create_app(
            make_config(
                KV_STORAGE_APP_HISTORY_FLUSH_SIZE="8",  # the records below: one batch
                KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="1 hour",
                KV_STORAGE_APP_HISTORY_RETRY_LIMIT="5",
            )
        )
    )
    blocked = await create_storage(history_enabled=True)  # its history index exists
    created = await create_storage(history_enabled=True)  # had none: made with the block
    kept = await create_storage(history_enabled=True)
    blocked_index = IndexNames(index_prefix).history(blocked.id)
    await es.indices.create(index=blocked_index)
    await es.indices.add_block(index=blocked_index, block="write")
    await es.indices.create(
        index=IndexNames(index_prefix).history(created.id),
        settings={"index.blocks.write": True},
    )
    with caplog.at_level(logging.INFO, logger="pipeline.actor"):
        for storage, count in ((blocked, 3), (created, 2)):
            values = {f"k{n}": "v" for n in range(count)}
            response = await api.put(path("set", storage), json=values, headers=storage.headers)
            assert response.status == 200
        for n in range(3):
            await put(api, kept, f"k{n}", "v")
        history = api.app[SERVICE].history

        async def settled() -> bool:
            stats = await history.stats()
            return stats.flushes == 1 and stats.buffered == 0

        await wait_until(settled, what="the one batch settled")
    stats = await history.stats()
    assert (stats.written, stats.discarded, stats.retried, stats.lost) == (3, 5, 0, 0)
    await es.indices.refresh(index=IndexNames(index_prefix).history("*"))
    counts = {
        storage.id: (await es.count(index=IndexNames(index_prefix).history(storage.id)))["count"]
        for storage in (blocked, created, kept)
    }
    assert counts == {blocked.id: 0, created.id: 0, kept.id: 3}
    discarded = [line for line in caplog.records if "deleted storages" in line.getMessage()]
    assert [line.getMessage() for line in discarded] == [
        "history: 5 records of deleted storages discarded, their history indices refuse "
        f"writes (storages: {blocked.id} 3, {created.id} 2)"
    ]
    assert "Elasticsearch refused" not in caplog.text  # not a fault: nothing to warn about
    text = await (await api.get("/metrics")).text()
    assert "kv_storage_history_discarded_records_total 5.0" in text


async def test_history_buffered_by_another_instance_is_discarded_when_the_storage_is_deleted(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The deletion through one instance closes the indices; the history another instance
    still holds for the storage meets the block, and is dropped, not retried to its limit."""
    buffering = await aiohttp_client(
        create_app(
            make_config(
                KV_STORAGE_APP_HISTORY_FLUSH_SIZE="3",
                KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="1 hour",
            )
        )
    )
    deleting = await aiohttp_client(create_app(make_config(KV_STORAGE_ADMIN_TOKEN=TOKEN)))
    deleted = await create_storage(history_enabled=True)
    other = await create_storage(history_enabled=True)
    history = buffering.app[SERVICE].history
    await put(buffering, deleted, "k", "v")
    assert (await history.stats()).buffered == 1
    response = await deleting.delete(
        f"/admin/storages/{deleted.id}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status == 200
    with caplog.at_level(logging.INFO, logger="pipeline.actor"):
        await put(buffering, other, "k", "1")
        await put(buffering, other, "k", "2")  # a batch of three: the deleted storage's first

        async def settled() -> bool:
            stats = await history.stats()
            return stats.flushes == 1 and stats.buffered == 0

        await wait_until(settled, what="the batch settled")
    stats = await history.stats()
    assert (stats.written, stats.discarded, stats.retried, stats.lost) == (2, 1, 0, 0)
    assert (
        f"history: 1 records of deleted storages discarded, their history indices refuse "
        f"writes (storages: {deleted.id} 1)"
    ) in caplog.text


async def test_the_cause_of_a_refused_record_is_logged_without_its_value(
    initialised_config: Config,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    """Elasticsearch quotes the value it could not take in its reason ("Preview of field's
    value: '...'"); that reason reaches the log, the value must not."""
    storage = await create_storage(history_enabled=True)
    await es.indices.create(
        index=IndexNames(index_prefix).history(storage.id),
        mappings={"properties": {"value": {"type": "long"}}},
    )
    record = HistoryRecord(storage.id, "k", "secret-value-123", Operation.SET, 1000)
    result = await HistoryStore(es, IndexNames(index_prefix)).write([("record-1", record)])
    assert (result.retry, result.gone) == (frozenset({"record-1"}), frozenset())
    [(cause, count)] = result.causes.items()
    assert count == 1
    assert cause.startswith("document_parsing_exception (400): ") or cause.startswith(
        "mapper_parsing_exception (400): "
    ), cause
    assert "failed to parse field [value] of type [long]" in cause
    assert "secret-value-123" not in cause
    assert "record-1" not in cause
