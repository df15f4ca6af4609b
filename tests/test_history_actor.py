"""The history actor's own logic, with a writer that stands in for Elasticsearch.

These are the faults a real node does not produce on demand (a request that hangs for good,
a failure of every request while thousands of records arrive); the behaviour against the
real node is in test_history_pipeline.py.
"""

import asyncio
import itertools
import logging
from collections.abc import Sequence

import pytest

from pipeline.actor import _DRAIN_BACKOFF_S, HistoryActor
from pipeline.config import HistoryConfig
from pipeline.records import HistoryRecord, Operation
from pipeline.writer import WriteFailedError, WriteResult
from tests.waiting import wait_until


class FakeWriter:
    def __init__(self) -> None:
        self.batches: list[list[HistoryRecord]] = []
        self.failing = False
        self.hanging = False
        self.refusing = False
        """Every record fails on its own (as under a write block), the request succeeds."""
        self.written: list[HistoryRecord] = []
        self.times: list[float] = []

    async def write(self, batch: Sequence[tuple[str, HistoryRecord]]) -> WriteResult:
        self.batches.append([record for _, record in batch])
        self.times.append(asyncio.get_running_loop().time())
        if self.hanging:
            await asyncio.Event().wait()
        if self.failing:
            raise WriteFailedError("Elasticsearch is unreachable: test")
        if self.refusing:
            return WriteResult(
                retry=frozenset(record_id for record_id, _ in batch), causes={"test": len(batch)}
            )
        self.written += [record for _, record in batch]
        return WriteResult()


def record(n: int, storage: str = "s1", request_id: str | None = None) -> HistoryRecord:
    return HistoryRecord(storage, f"k{n}", f"v{n}", Operation.SET, 1000 + n, request_id)


def actor(writer: FakeWriter, **settings: float) -> HistoryActor:
    config = HistoryConfig(
        flush_size=int(settings.get("flush_size", 10)),
        flush_timeout_s=settings.get("flush_timeout_s", 3600.0),
        retry_limit=int(settings.get("retry_limit", 3)),
        buffer_size=int(settings.get("buffer_size", 1000)),
        buffer_share_per_storage=int(settings.get("share", settings.get("buffer_size", 1000))),
    )
    history = HistoryActor(
        writer=writer, config=config, shutdown_timeout_s=settings.get("shutdown_s", 1.0)
    )
    history.start()
    return history


async def test_batches_hold_at_most_flush_size_records() -> None:
    writer = FakeWriter()
    history = actor(writer, flush_size=10)
    history.record([record(n) for n in range(25)])

    async def twenty_written() -> bool:
        return (await history.stats()).written == 20

    await wait_until(twenty_written)
    assert [len(batch) for batch in writer.batches] == [10, 10]
    assert (await history.stats()).buffered == 5
    await history.stop()
    assert [len(batch) for batch in writer.batches] == [10, 10, 5]


async def test_a_full_buffer_drops_new_records_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = FakeWriter()
    writer.hanging = True
    history = actor(writer, flush_size=5, buffer_size=20)
    with caplog.at_level(logging.ERROR, logger="pipeline.actor"):
        history.record([record(n) for n in range(30)])
        stats = await history.stats()
    assert (stats.buffered, stats.dropped) == (20, 10)
    assert "buffer full" in caplog.text
    assert "v29" not in caplog.text
    await history.stop(timeout_s=0.2)


async def test_after_a_failed_request_no_batch_goes_for_flush_timeout() -> None:
    writer = FakeWriter()
    writer.failing = True
    history = actor(writer, flush_size=1, flush_timeout_s=3600.0, retry_limit=5)
    history.record([record(1)])

    async def one_attempt() -> bool:
        return (await history.stats()).retried == 1

    await wait_until(one_attempt)
    history.record([record(n) for n in range(2, 50)])  # many full batches wait...
    stats = await history.stats()
    assert len(writer.batches) == 1  # ...but the pause holds them back
    assert stats.buffered == 49
    writer.failing = False
    await history.stop()  # the shutdown flush ignores the pause
    assert sorted(r.key or "" for r in writer.written) == sorted(f"k{n}" for n in range(1, 50))


async def test_shutdown_is_bounded_when_elasticsearch_hangs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = FakeWriter()
    writer.hanging = True
    history = actor(writer, flush_size=100, shutdown_s=0.3)
    history.record([record(n) for n in range(7)])
    with caplog.at_level(logging.INFO, logger="pipeline.actor"):
        async with asyncio.timeout(5):
            await history.stop()
    assert "7 records lost at shutdown" in caplog.text
    assert "shutdown flush wrote 0 records, 7 could not be written" in caplog.text


async def test_records_of_a_stopped_actor_are_logged_as_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    history = actor(FakeWriter())
    await history.stop()
    with caplog.at_level(logging.ERROR, logger="pipeline.actor"):
        history.record([record(1, storage="s9")])  # never raises into the storage request
    assert "1 records lost (storages: s9; requests: none)" in caplog.text


@pytest.mark.parametrize("fault", ["refusing", "failing"])
async def test_the_shutdown_flush_waits_between_retried_batches(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    writer = FakeWriter()
    setattr(writer, fault, True)
    history = actor(writer, retry_limit=4, shutdown_s=5.0)
    history.record([record(n) for n in range(3)])
    with caplog.at_level(logging.ERROR, logger="pipeline.actor"):
        await history.stop()
    assert len(writer.batches) == 5  # the first attempt and retry-limit retries...
    gaps = [later - earlier for earlier, later in itertools.pairwise(writer.times)]
    assert min(gaps) >= _DRAIN_BACKOFF_S * 0.9, gaps  # ...not spent in a few milliseconds
    assert "3 records lost after 5 attempts (1 + retry-limit 4 retries)" in caplog.text


async def test_the_shutdown_flush_backoff_stays_within_its_bound() -> None:
    writer = FakeWriter()
    writer.refusing = True
    history = actor(writer, retry_limit=1000, shutdown_s=0.5)
    history.record([record(1)])
    loop = asyncio.get_running_loop()
    began = loop.time()
    await history.stop()
    assert loop.time() - began < 1.5
    assert 2 <= len(writer.batches) <= 4  # about 0.5 s / _DRAIN_BACKOFF_S


async def test_a_failed_write_names_the_requests_behind_its_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = FakeWriter()
    writer.failing = True
    history = actor(writer, flush_size=2, retry_limit=5)
    with caplog.at_level(logging.WARNING, logger="pipeline.actor"):
        history.record([record(1, request_id="req-1"), record(2, request_id="req-2")])

        async def retried() -> bool:
            return (await history.stats()).retried == 2

        await wait_until(retried)
    assert "writing 2 records failed" in caplog.text
    assert "(requests: req-1, req-2)" in caplog.text
    await history.stop(timeout_s=0.1)


@pytest.mark.parametrize("retry_limit", [0, 2])
async def test_retry_limit_counts_retries_after_the_first_attempt(
    retry_limit: int, caplog: pytest.LogCaptureFixture
) -> None:
    """As the original: a record is tried at most retry-limit + 1 times, then it is lost."""
    writer = FakeWriter()
    writer.refusing = True
    history = actor(writer, flush_size=1, flush_timeout_s=0.02, retry_limit=retry_limit)
    with caplog.at_level(logging.ERROR, logger="pipeline.actor"):
        history.record([record(1)])

        async def lost() -> bool:
            return (await history.stats()).lost == 1

        await wait_until(lost, what="the record lost")
    stats = await history.stats()
    assert len(writer.batches) == retry_limit + 1
    assert (stats.retried, stats.buffered, stats.written) == (retry_limit, 0, 0)
    attempts = f"after {retry_limit + 1} attempts (1 + retry-limit {retry_limit} retries)"
    assert f"1 records lost {attempts}" in caplog.text
    await history.stop()


async def test_after_a_batch_refused_whole_no_batch_goes_for_flush_timeout() -> None:
    """A write-blocked index refuses every record while the request succeeds: the next
    batches wait out the pause instead of going, back to back, to be refused again."""
    writer = FakeWriter()
    writer.refusing = True
    history = actor(writer, flush_size=10, flush_timeout_s=3600.0, retry_limit=5)
    history.record([record(n) for n in range(10)])

    async def refused_once() -> bool:
        return (await history.stats()).retried == 10

    await wait_until(refused_once)
    history.record([record(n) for n in range(10, 60)])  # five full batches wait...
    stats = await history.stats()
    assert len(writer.batches) == 1  # ...held back by the pause
    assert stats.buffered == 60
    writer.refusing = False
    await history.stop()
    assert len(writer.written) == 60
