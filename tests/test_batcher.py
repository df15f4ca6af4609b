"""The batching rules on their own (no Elasticsearch): what goes together, when, and in which
order. That the batches are then answered right is ``test_batching.py``, on the real node."""

from kv_storage.actors.batching import Batch, Batcher, Kind, Pending, keys_of
from kv_storage.config import BatchLimits

LIMITS = BatchLimits(max_operations=10, max_bytes=1000, max_in_flight=1)


def op(kind: Kind, *keys: str, size: int = 10, storage: str = "s") -> Pending[str]:
    return Pending(kind, storage, keys_of(storage, keys), size, f"{kind.value}:{keys}")


def payloads(batch: Batch[str]) -> list[str]:
    return [pending.payload for pending in batch.operations]


def test_an_operation_alone_goes_at_once_and_later_ones_wait_for_the_batch_in_flight() -> None:
    batcher = Batcher[str](LIMITS)
    batcher.add(op(Kind.READ, "a"))
    (first,) = batcher.take()
    assert payloads(first) == ["read:('a',)"]
    batcher.add(op(Kind.READ, "b"))
    batcher.add(op(Kind.READ, "c", storage="other"))
    assert batcher.take() == []  # the one slot is taken: they wait, no timer
    batcher.done(first)
    (second,) = batcher.take()
    assert payloads(second) == ["read:('b',)", "read:('c',)"]


def test_reads_and_writes_go_in_batches_of_their_own() -> None:
    batcher = Batcher[str](LIMITS)
    batcher.add(op(Kind.READ, "a"))
    batcher.add(op(Kind.WRITE, "b"))
    batches = batcher.take()
    assert sorted(batch.kind.value for batch in batches) == ["read", "write"]


def test_a_batch_is_bounded_by_keys_and_bytes_and_a_large_operation_goes_alone() -> None:
    batcher = Batcher[str](BatchLimits(max_operations=3, max_bytes=100, max_in_flight=1))
    for name in "abcd":
        batcher.add(op(Kind.WRITE, name))
    (batch,) = batcher.take()
    assert batch.keys == 3
    batcher.done(batch)
    batcher.add(op(Kind.WRITE, "big", size=500))
    batcher.add(op(Kind.WRITE, "e", size=60))
    (batch,) = batcher.take()
    assert payloads(batch) == ["write:('d',)", "write:('e',)"]  # big does not fit beside d
    batcher.done(batch)
    (batch,) = batcher.take()
    assert payloads(batch) == ["write:('big',)"]  # over max-bytes: alone
    batcher.done(batch)
    batcher.add(op(Kind.WRITE, *(f"k{n}" for n in range(7))))
    (batch,) = batcher.take()
    assert batch.keys == 7  # a multi-key operation larger than max-operations goes whole


def test_writes_of_one_key_share_a_batch_in_arrival_order() -> None:
    batcher = Batcher[str](LIMITS)
    batcher.add(op(Kind.WRITE, "k", size=1))
    batcher.add(op(Kind.WRITE, "k", size=2))
    (batch,) = batcher.take()
    assert [pending.size for pending in batch.operations] == [1, 2]


def test_a_write_waits_for_a_write_of_its_key_in_flight_even_with_a_free_slot() -> None:
    batcher = Batcher[str](BatchLimits(max_operations=10, max_bytes=1000, max_in_flight=4))
    batcher.add(op(Kind.WRITE, "k"))
    (first,) = batcher.take()
    batcher.add(op(Kind.WRITE, "k"))
    batcher.add(op(Kind.WRITE, "other"))
    (second,) = batcher.take()
    assert payloads(second) == ["write:('other',)"]  # the free slot serves other keys
    batcher.done(first)
    (third,) = batcher.take()
    assert payloads(third) == ["write:('k',)"]


def test_a_read_after_a_write_of_its_key_waits_for_the_write() -> None:
    batcher = Batcher[str](BatchLimits(max_operations=10, max_bytes=1000, max_in_flight=4))
    batcher.add(op(Kind.WRITE, "k"))
    batcher.add(op(Kind.READ, "k"))
    batcher.add(op(Kind.READ, "x"))
    batches = batcher.take()
    assert [payloads(batch) for batch in batches] == [["read:('x',)"], ["write:('k',)"]]
    assert batcher.take() == []  # the read of k waits while its write is in flight
    batcher.done(batches[1])
    (read,) = batcher.take()
    assert payloads(read) == ["read:('k',)"]


def test_a_write_after_a_read_of_its_key_waits_for_the_read() -> None:
    batcher = Batcher[str](BatchLimits(max_operations=10, max_bytes=1000, max_in_flight=4))
    batcher.add(op(Kind.READ, "k"))
    batcher.add(op(Kind.WRITE, "k"))
    (read,) = batcher.take()
    assert read.kind is Kind.READ
    assert batcher.take() == []
    batcher.done(read)
    (write,) = batcher.take()
    assert write.kind is Kind.WRITE


def test_an_operation_that_stays_behind_keeps_later_ones_of_its_key_behind_it() -> None:
    """Order holds among waiting operations too: a write that does not fit this batch is not
    overtaken by a later write of its key that would."""
    batcher = Batcher[str](BatchLimits(max_operations=2, max_bytes=1000, max_in_flight=1))
    batcher.add(op(Kind.WRITE, "a"))
    batcher.add(op(Kind.WRITE, "k", "b"))  # does not fit beside a
    batcher.add(op(Kind.WRITE, "k"))  # would fit, but must come after the one above
    (batch,) = batcher.take()
    assert payloads(batch) == ["write:('a',)"]
    batcher.done(batch)
    (batch,) = batcher.take()
    assert payloads(batch) == ["write:('k', 'b')"]
    batcher.done(batch)
    (batch,) = batcher.take()
    assert payloads(batch) == ["write:('k',)"]
    batcher.done(batch)
    assert batcher.take() == []
    assert batcher.waiting == 0


def test_same_key_in_other_storages_does_not_conflict() -> None:
    batcher = Batcher[str](BatchLimits(max_operations=10, max_bytes=1000, max_in_flight=4))
    batcher.add(op(Kind.WRITE, "k", storage="one"))
    batcher.add(op(Kind.READ, "k", storage="two"))
    assert len(batcher.take()) == 2


def test_storages_take_turns_so_one_storages_stream_does_not_hold_another_back() -> None:
    """Storage a has five operations that fill a batch each waiting; storage b's one
    operation, which arrived after them, goes in the second batch (a's queue was new, so it
    was first in turn), not the sixth, as it would in arrival order."""
    batcher = Batcher[str](BatchLimits(max_operations=3, max_bytes=1000, max_in_flight=1))
    batcher.add(op(Kind.WRITE, "x", "y", "z", storage="a"))
    (first,) = batcher.take()
    for n in range(5):
        batcher.add(op(Kind.WRITE, f"{n}1", f"{n}2", f"{n}3", storage="a"))
    batcher.add(op(Kind.WRITE, "k", storage="b"))
    order = []
    batch = first
    while True:
        batcher.done(batch)
        taken = batcher.take()
        if not taken:
            break
        (batch,) = taken
        order.append([pending.storage_id for pending in batch.operations])
    assert order == [["a"], ["b"], ["a"], ["a"], ["a"], ["a"]]


def test_a_storages_share_counts_its_keys_waiting_and_in_flight() -> None:
    batcher = Batcher[str](LIMITS)
    batcher.add(op(Kind.WRITE, "a", "b", storage="s"))
    assert batcher.held_by("s") == 2
    (batch,) = batcher.take()
    batcher.add(op(Kind.READ, "c", storage="s"))
    batcher.add(op(Kind.READ, "c", storage="t"))
    assert (batcher.held_by("s"), batcher.held_by("t")) == (3, 1)
    batcher.done(batch)
    assert batcher.held_by("s") == 1
    (reads,) = batcher.take()
    batcher.done(reads)
    assert (batcher.held_by("s"), batcher.held_by("t")) == (0, 0)
