"""The history buffer's rules, without a clock or a writer: time is a number passed in."""

import sys
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import pytest

from pipeline import buffer as buffer_module
from pipeline.buffer import Entry, HistoryBuffer
from pipeline.config import HistoryConfig
from pipeline.records import HistoryRecord, Operation
from pipeline.writer import WriteResult

TIMEOUT_S = 30.0
BUFFER_SOURCE = buffer_module.__file__


def buffer(
    *, flush_size: int = 3, retry_limit: int = 2, buffer_size: int = 100, share: int | None = None
) -> HistoryBuffer:
    config = HistoryConfig(
        flush_size=flush_size,
        flush_timeout_s=TIMEOUT_S,
        retry_limit=retry_limit,
        buffer_size=buffer_size,
        buffer_share_per_storage=buffer_size if share is None else share,
    )
    return HistoryBuffer(config, prefix="p-")


def failed(ids: Iterable[str]) -> WriteResult:
    """The writer's answer when these records were refused, to be retried."""
    return WriteResult(retry=frozenset(ids))


def records(count: int, storage: str = "s", start: int = 0) -> list[HistoryRecord]:
    return [
        HistoryRecord(storage, f"k{n}", "v", Operation.SET, n) for n in range(start, start + count)
    ]


def keys(entries: object) -> list[str | None]:
    return [entry.record.key for entry in entries]  # type: ignore[attr-defined]


def test_a_batch_goes_when_full_or_when_its_oldest_record_is_due() -> None:
    held = buffer(flush_size=3)
    held.add(records(2), now=0.0)
    assert not held.ready(now=TIMEOUT_S - 1)
    assert held.ready(now=TIMEOUT_S)  # the oldest has waited flush-timeout
    held.add(records(1, start=2), now=1.0)
    assert held.ready(now=1.0)  # a whole batch waits
    assert keys(held.take(now=1.0)) == ["k0", "k1", "k2"]
    assert held.next_due() is None
    assert len(held) == 3  # in flight until settled


def test_failed_records_go_again_after_flush_timeout_then_are_lost() -> None:
    held = buffer(flush_size=10, retry_limit=2)
    held.add(records(2), now=0.0)
    batch = held.take(now=0.0)
    ids = {entry.id for entry in batch}
    outcome = held.settle(failed(ids), now=5.0)
    assert (outcome.written, outcome.retried, outcome.lost) == (0, 2, [])
    assert held.next_due() == 5.0 + TIMEOUT_S
    assert not held.ready(now=5.0 + TIMEOUT_S - 1)
    assert held.take(now=5.0 + TIMEOUT_S - 1) == []  # not due: a retry waits its turn
    for attempt in (2, 3):
        now = 5.0 + attempt * TIMEOUT_S
        batch = held.take(now=now)
        assert [entry.attempts for entry in batch] == [attempt, attempt]
        outcome = held.settle(failed(ids), now=now)
    assert (outcome.retried, keys(outcome.lost)) == (0, ["k0", "k1"])  # 1 + 2 retries
    assert len(held) == 0


def test_retries_that_are_due_go_before_fresh_records() -> None:
    held = buffer(flush_size=3)
    held.add(records(3), now=0.0)
    first = held.take(now=0.0)
    held.settle(failed({first[0].id}), now=0.0)
    held.add(records(3, start=3), now=TIMEOUT_S)
    assert keys(held.take(now=TIMEOUT_S)) == ["k0", "k3", "k4"]


def test_a_full_buffer_drops_what_does_not_fit() -> None:
    held = buffer(buffer_size=5)
    assert not held.add(records(3), now=0.0)
    dropped = held.add(records(4, start=3), now=0.0)
    assert [record.key for record in dropped.buffer_full] == ["k5", "k6"]
    assert dropped.over_share == []
    assert len(held) == 5


def test_discard_drops_a_storages_records_and_keeps_its_batch_from_retrying() -> None:
    held = buffer(flush_size=2)
    held.add(records(2, storage="gone"), now=0.0)
    batch = held.take(now=0.0)  # the two of "gone"
    held.add(records(1, storage="gone", start=2) + records(2, storage="kept"), now=0.0)
    assert held.discard("gone") == 3  # in flight: not retried
    outcome = held.settle(failed(entry.id for entry in batch), now=1.0)
    assert (outcome.written, outcome.retried) == (0, 0)
    assert keys(held.empty_out()) == ["k0", "k1"]  # of "kept"
    assert held.held("gone") == held.held("kept") == 0


def test_the_shutdown_takes_retries_that_are_not_due() -> None:
    held = buffer(flush_size=5)
    held.add(records(2), now=0.0)
    batch = held.take(now=0.0)
    held.settle(failed(entry.id for entry in batch), now=0.0)
    assert held.take(now=1.0) == []
    assert keys(held.take(now=1.0, everything_due=True)) == ["k0", "k1"]


def test_record_ids_are_unique_and_carry_the_prefix() -> None:
    held = buffer(flush_size=1000, buffer_size=1000)
    held.add(records(500), now=0.0)
    ids = [entry.id for entry in held.take(now=0.0)]
    assert len(set(ids)) == 500
    assert all(identifier.startswith("p-") for identifier in ids)


def lines_run(call: Callable[[], object]) -> int:
    """Lines of ``pipeline/buffer.py`` that ``call`` runs: a count of the work done that does
    not depend on the machine's speed, and needs no counter in the buffer itself."""
    run = 0

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal run
        if frame.f_code.co_filename != BUFFER_SOURCE:
            return None
        if event == "line":
            run += 1
        return trace

    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(None)
    return run


@pytest.mark.parametrize("waiting", [1_000, 100_000])
def test_a_message_costs_the_same_however_much_waits(waiting: int) -> None:
    """The review measured milliseconds per message with 100,000 records to retry: every
    message scanned them all. Count the lines run per new record and per flush."""
    held = buffer(flush_size=1000, buffer_size=waiting + 10_000)
    held.add(records(waiting), now=0.0)
    while len(held) and (batch := held.take(now=TIMEOUT_S)):  # all fail once: now retries
        held.settle(failed(entry.id for entry in batch), now=TIMEOUT_S)
    assert len(held) == waiting

    def one_record() -> None:
        held.add(records(1, start=waiting), now=TIMEOUT_S + 1)
        held.ready(now=TIMEOUT_S + 1)
        held.next_due()

    assert lines_run(one_record) <= 100
    taken: list[Entry] = []

    def a_flush() -> None:  # what it sends, and no more
        taken.extend(held.take(now=3 * TIMEOUT_S))
        held.settle(WriteResult(), now=3 * TIMEOUT_S)

    assert lines_run(a_flush) <= 30 * 1000  # about 20 lines per entry; a scan: 100,000
    assert len(taken) == 1000


def test_a_storage_at_its_share_has_its_records_dropped_while_others_are_taken() -> None:
    held = buffer(flush_size=10, buffer_size=10, share=3)
    dropped = held.add(records(5, storage="flood"), now=0.0)
    assert [record.key for record in dropped.over_share] == ["k3", "k4"]
    assert dropped.buffer_full == []
    assert not held.add(records(3, storage="calm"), now=0.0)
    assert (held.held("flood"), held.held("calm"), len(held)) == (3, 3, 6)


def test_a_share_counts_what_waits_to_retry_and_is_in_flight_until_it_is_settled() -> None:
    held = buffer(flush_size=10, buffer_size=10, share=2)
    held.add(records(2, storage="a"), now=0.0)
    batch = held.take(now=0.0)
    assert held.add(records(1, storage="a", start=2), now=0.0).over_share  # in flight: held
    held.settle(failed({batch[0].id}), now=0.0)  # one written, one to retry
    assert held.held("a") == 1
    assert not held.add(records(1, storage="a", start=3), now=0.0)
    assert held.add(records(1, storage="a", start=4), now=0.0).over_share


def test_records_the_buffer_has_no_room_for_are_dropped_as_buffer_full() -> None:
    held = buffer(flush_size=10, buffer_size=4, share=2)
    held.add(records(2, storage="a") + records(2, storage="b"), now=0.0)
    dropped = held.add(records(1, storage="a", start=2) + records(1, storage="c"), now=0.0)
    assert (len(dropped.buffer_full), dropped.over_share) == (2, [])


def test_records_of_a_deleted_storage_are_dropped_at_once_and_free_its_share() -> None:
    held = buffer(flush_size=10, share=2)
    held.add(records(2, storage="deleted") + records(1, storage="kept"), now=0.0)
    batch = held.take(now=0.0)
    gone = frozenset(entry.id for entry in batch if entry.record.storage_id == "deleted")
    outcome = held.settle(WriteResult(gone=gone), now=0.0)
    assert (outcome.written, outcome.retried, outcome.lost) == (1, 0, [])
    assert keys(outcome.gone) == ["k0", "k1"]
    assert len(held) == 0
    assert held.held("deleted") == 0


def test_a_batch_takes_from_each_storage_in_turn() -> None:
    """One storage's flood does not fill the batches while another's records wait."""
    held = buffer(flush_size=4, buffer_size=100)
    held.add(records(20, storage="flood"), now=0.0)
    held.add(records(2, storage="calm", start=100), now=1.0)
    batch = held.take(now=TIMEOUT_S)
    assert [(e.record.storage_id, e.record.key) for e in batch] == [
        ("flood", "k0"),
        ("calm", "k100"),
        ("flood", "k1"),
        ("calm", "k101"),
    ]
    assert held.next_due() == TIMEOUT_S  # the flood's oldest still waits: it is due


def test_retries_take_at_most_half_a_batch_while_fresh_records_wait() -> None:
    held = buffer(flush_size=4, buffer_size=100)
    held.add(records(4, storage="refused"), now=0.0)
    batch = held.take(now=0.0)
    held.settle(failed(entry.id for entry in batch), now=0.0)
    held.add(records(3, storage="fresh", start=10), now=0.0)
    batch = held.take(now=TIMEOUT_S)
    assert keys(batch) == ["k0", "k1", "k10", "k11"]
    held.settle(WriteResult(), now=TIMEOUT_S)
    assert keys(held.take(now=TIMEOUT_S)) == ["k2", "k3", "k12"]  # none fresh: all theirs


def test_taking_in_turn_costs_what_the_batch_holds() -> None:
    """100,000 records of one storage ahead of another's: a batch still costs O(its size)."""
    held = buffer(flush_size=1000, buffer_size=200_000)
    held.add(records(100_000, storage="flood"), now=0.0)
    held.add(records(1, storage="calm"), now=0.0)
    taken: list[Entry] = []

    def a_flush() -> None:
        taken.extend(held.take(now=0.0))
        held.settle(WriteResult(), now=0.0)

    assert lines_run(a_flush) <= 30 * 1000  # about 20 lines per entry; a scan: 100,000
    assert "calm" in {entry.record.storage_id for entry in taken}
    assert lines_run(lambda: held.ready(now=0.0)) <= 50
