"""The history buffer's drop log lines, against the real node.

Finding 9: a full buffer logged "1 so far" once while 14,605 records were dropped.
"""

import logging
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage.config import Config
from kv_storage.es.history import HistoryStore
from kv_storage.es.names import IndexNames
from pipeline.actor import HistoryActor
from pipeline.config import HistoryConfig
from pipeline.records import HistoryRecord, Operation
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
    index = f"{index_prefix}storage-history-{storage_id}"
    await es.indices.refresh(index=index)
    found = await es.search(index=index, size=1000)
    return sorted(hit["_source"]["key"] for hit in found["hits"]["hits"])


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
            ),
            report_interval_s=0.2,
        )
        actor.start()
        started.append(actor)
        return actor

    yield start
    for actor in started:
        await actor.stop()


async def test_a_full_buffer_logs_its_running_count_and_a_final_count_when_it_drains(
    start_actor: Callable[..., HistoryActor],
    es: AsyncElasticsearch,
    index_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = f"full-{uuid.uuid4()}"
    history = start_actor(buffer_size=20, flush_timeout_s=0.3)
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
    assert (stats.written, stats.dropped) == (20, 15)
    assert len(await history_keys(es, index_prefix, storage)) == 20
