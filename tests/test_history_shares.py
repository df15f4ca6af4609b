"""The history buffer's share per storage and the drop log lines, against the real node.

Finding 5: one storage's 10,000-key multi-sets filled the shared buffer, and the other
storages lost their history too. Finding 9: a full buffer logged "1 so far" once while 14,605
records were dropped. Here one storage floods while another works as usual.
"""

import logging
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from elasticsearch import AsyncElasticsearch
from prometheus_client.parser import text_string_to_metric_families

from kv_storage.app import create_app
from kv_storage.app_keys import SERVICE
from kv_storage.config import Config
from kv_storage.es.history import HistoryStore
from kv_storage.es.names import IndexNames
from pipeline.actor import HistoryActor
from pipeline.config import HistoryConfig
from pipeline.records import HistoryRecord, Operation
from tests.conftest import StorageFactory
from tests.helpers import ClientFactory, path, put
from tests.waiting import wait_until


def lines(caplog: pytest.LogCaptureFixture, part: str) -> list[str]:
    return [
        line.getMessage()
        for line in caplog.records
        if line.name == "pipeline.actor" and part in line.getMessage()
    ]


async def logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    async def found() -> bool:
        return any(text in line for line in lines(caplog, ""))

    await wait_until(found, what=f"the log line {text!r}")


async def history_keys(es: AsyncElasticsearch, index_prefix: str, storage_id: str) -> list[str]:
    index = IndexNames(index_prefix).history(storage_id)
    await es.indices.refresh(index=index)
    found = await es.search(index=index, size=1000)
    return sorted(hit["_source"]["key"] for hit in found["hits"]["hits"])


async def test_a_storage_at_its_share_loses_its_own_history_not_the_others(
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
                KV_STORAGE_APP_HISTORY_BUFFER_SIZE="100",
                KV_STORAGE_APP_HISTORY_BUFFER_SHARE_PER_STORAGE="10",
                KV_STORAGE_APP_HISTORY_FLUSH_SIZE="15",  # the flood's 10 and the other's 5
                KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="1 hour",
            )
        )
    )
    flood = await create_storage(history_enabled=True)
    calm = await create_storage(history_enabled=True)
    with caplog.at_level(logging.ERROR, logger="pipeline.actor"):
        for batch in range(3):
            values = {f"f{batch}-{n:02}": "flood-value-never-logged" for n in range(50)}
            response = await api.put(path("set", flood), json=values, headers=flood.headers)
            assert response.status == 200  # the storage's writes succeed: only history is lost
        for n in range(5):
            await put(api, calm, f"c{n}", "v")
        history = api.app[SERVICE].history

        async def written() -> bool:
            stats = await history.stats()
            return stats.written == 15 and stats.buffered == 0

        await wait_until(written, what="the flood's share and every other record written")
    stats = await history.stats()
    assert (stats.dropped_at_share, stats.dropped, stats.lost) == (140, 0, 0)
    assert await history_keys(es, index_prefix, calm.id) == [f"c{n}" for n in range(5)]
    assert len(await history_keys(es, index_prefix, flood.id)) == 10
    first = lines(caplog, "share of the buffer")[0]  # at once: the later ones come 10 s on
    assert first == (
        f"history: storage at its share of the buffer (10 records); dropping its new records: "
        f"{flood.id} 40 so far, 40 since the last line"
    )
    assert calm.id not in caplog.text
    assert "flood-value-never-logged" not in caplog.text

    text = await (await api.get("/metrics")).text()
    assert flood.id not in text
    dropped = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "kv_storage_history_dropped_records_total"
    }
    assert dropped == {"buffer_full": 0, "storage_share": 140}


def record(storage_id: str, n: int) -> HistoryRecord:
    return HistoryRecord(storage_id, f"k{n:03}", "value-never-logged", Operation.SET, 1000 + n)


@pytest.fixture
async def start_actor(
    initialised_config: Config, es: AsyncElasticsearch, index_prefix: str
) -> AsyncIterator[Callable[..., HistoryActor]]:
    """A history actor on the real node whose log lines come every 0.2 s, not every 10 s."""
    started: list[HistoryActor] = []

    def start(**settings: float) -> HistoryActor:
        actor = HistoryActor(
            writer=HistoryStore(es, IndexNames(index_prefix)),
            config=HistoryConfig(
                flush_size=int(settings.get("flush_size", 1000)),
                flush_timeout_s=settings.get("flush_timeout_s", 3600.0),
                retry_limit=3,
                buffer_size=int(settings["buffer_size"]),
                buffer_share_per_storage=int(settings["share"]),
            ),
            report_interval_s=0.2,
        )
        actor.start()
        started.append(actor)
        return actor

    yield start
    for actor in started:
        await actor.stop()


async def test_drops_at_a_share_are_logged_with_a_running_count_and_a_final_count(
    start_actor: Callable[..., HistoryActor],
    es: AsyncElasticsearch,
    index_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    flood, calm = f"flood-{uuid.uuid4()}", f"calm-{uuid.uuid4()}"
    history = start_actor(buffer_size=100, share=10, flush_size=20)
    with caplog.at_level(logging.WARNING, logger="pipeline.actor"):
        history.record([record(flood, n) for n in range(50)])
        await logged(caplog, f"{flood} 40 so far, 40 since the last line")
        history.record([record(flood, n) for n in range(50, 100)])
        await logged(caplog, f"{flood} 90 so far, 50 since the last line")  # not 1 line only
        history.record([record(calm, n) for n in range(10)])  # 20 waiting: a flush
        await logged(
            caplog,
            f"history: storage {flood} below its share of the buffer again; 90 of its records "
            "were dropped while it was at its share",
        )
    stats = await history.stats()
    assert (stats.written, stats.dropped_at_share, stats.buffered) == (20, 90, 0)
    assert len(await history_keys(es, index_prefix, calm)) == 10
    assert "value-never-logged" not in caplog.text


async def test_a_full_buffer_logs_its_running_count_and_a_final_count_when_it_drains(
    start_actor: Callable[..., HistoryActor],
    es: AsyncElasticsearch,
    index_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = f"full-{uuid.uuid4()}"
    history = start_actor(buffer_size=20, share=20, flush_timeout_s=0.3)
    with caplog.at_level(logging.WARNING, logger="pipeline.actor"):
        history.record([record(storage, n) for n in range(30)])
        history.record([record(storage, n) for n in range(30, 35)])
        await logged(
            caplog,
            "history: buffer full (20 records waiting, Elasticsearch is not taking them); "
            f"dropping new records, 10 so far, 10 since the last line (storages: {storage} 10)",
        )
        await logged(
            caplog,
            f"history: buffer taking records again; 15 were dropped while it was full "
            f"(storages: {storage} 15)",
        )
    stats = await history.stats()
    assert (stats.written, stats.dropped, stats.dropped_at_share) == (20, 15, 0)
    assert len(await history_keys(es, index_prefix, storage)) == 20
