"""What the history pipeline holds, and which records go next: pure and synchronous.

No clock, no I/O: the caller passes the time in, and the actor around it (``pipeline.actor``)
owns the timing and the writer. So the rules (flush on size or age, retries spaced by
``flush-timeout``, a retry limit, a bounded buffer, a share of it per storage) are tested
without waiting, and every operation costs what it touches, not what is buffered:

- fresh records wait in arrival order, so the oldest is the head; each storage's also wait in
  a queue of its own, and a flush takes from those queues in turn, so that one storage's flood
  does not fill every batch while another storage's records wait behind it. A record taken
  that way is marked and leaves the arrival order when it reaches the head (each record is
  removed from each queue once: O(1) per record however the turns go);
- records to retry wait in the order they failed, each due ``flush-timeout`` after its
  failure, so they are in due order too and the next due is the head. While fresh records
  wait, retries take at most half a batch: a backlog of refused records does not crowd out
  the others;
- a count per storage of what it holds keeps it within its share of the buffer
  (``buffer-share-per-storage``): one storage at its share has its new records dropped while
  the others' are still taken;
- a flush takes from the heads only, and booking its outcome touches only what it sent.

With 100,000 records waiting during an outage, a new record still costs O(1), which is what
keeps storage requests from paying for history.
"""

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import count

from pipeline.config import HistoryConfig
from pipeline.records import HistoryRecord
from pipeline.writer import WriteResult

_ids = count()


@dataclass(slots=True)
class Entry:
    id: str
    record: HistoryRecord
    due_at: float
    """The time after which this entry goes, even in a batch that is not full."""
    attempts: int = 0
    taken: bool = False
    """Taken out of its storage's queue while still in the arrival order (left there until it
    reaches the head)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a settled batch came to."""

    written: int
    retried: int
    lost: list[Entry] = field(default_factory=list)
    """Failed for the last time allowed (``retry-limit`` retries after the first attempt)."""
    gone: list[Entry] = field(default_factory=list)
    """Refused because their storage was deleted: dropped at once, never retried."""


@dataclass(frozen=True, slots=True)
class Dropped:
    """Records ``add`` could not take, by why."""

    buffer_full: list[HistoryRecord] = field(default_factory=list)
    over_share: list[HistoryRecord] = field(default_factory=list)
    """Records the buffer had room for, but whose storage held its share of it
    (``buffer-share-per-storage``) already."""

    def __bool__(self) -> bool:
        return bool(self.buffer_full or self.over_share)


class HistoryBuffer:
    def __init__(self, config: HistoryConfig, *, prefix: str) -> None:
        """``prefix`` makes record ids unique across processes (an id is written as the
        record's ``_id``: its retries overwrite nothing and duplicate nothing)."""
        self._config = config
        self._prefix = prefix
        self._arrivals: deque[Entry] = deque()
        """Fresh entries in arrival order (with taken ones among them, until the head)."""
        self._queues: dict[str, deque[Entry]] = {}
        """Fresh entries of each storage that has any, in arrival order."""
        self._turns: deque[str] = deque()
        """The storages of ``_queues``, in the order a flush takes from them."""
        self._fresh = 0
        self._retries: deque[Entry] = deque()
        self._in_flight: list[Entry] = []
        self._held: dict[str, int] = {}
        """Entries (fresh, to retry, in flight) of each storage that has any."""

    def __len__(self) -> int:
        return self._fresh + len(self._retries) + len(self._in_flight)

    def held(self, storage_id: str) -> int:
        """Entries of one storage, against its share."""
        return self._held.get(storage_id, 0)

    def add(self, records: Sequence[HistoryRecord], now: float) -> Dropped:
        """Takes records in; answers those dropped for want of room (the buffer's, or their
        storage's share)."""
        dropped = Dropped()
        due_at = now + self._config.flush_timeout_s
        share = self._config.buffer_share_per_storage
        room = self._config.buffer_size - len(self)
        for record in records:
            storage_id = record.storage_id
            held = self._held.get(storage_id, 0)
            if room <= 0:
                dropped.buffer_full.append(record)
                continue
            if held >= share:
                dropped.over_share.append(record)
                continue
            room -= 1
            self._held[storage_id] = held + 1
            entry = Entry(f"{self._prefix}{next(_ids):x}", record, due_at)
            self._arrivals.append(entry)
            queue = self._queues.get(storage_id)
            if queue is None:
                queue = self._queues[storage_id] = deque()
                self._turns.append(storage_id)
            queue.append(entry)
            self._fresh += 1
        return dropped

    @property
    def full(self) -> bool:
        """A whole batch of fresh records waits."""
        return self._fresh >= self._config.flush_size

    @property
    def in_flight(self) -> Sequence[Entry]:
        """The batch taken last and not settled yet."""
        return tuple(self._in_flight)

    def next_due(self) -> float | None:
        """When the oldest waiting entry must go (``None``: nothing waits)."""
        self._pass_taken()
        heads = [queue[0].due_at for queue in (self._arrivals, self._retries) if queue]
        return min(heads) if heads else None

    def ready(self, now: float) -> bool:
        """Whether a batch should go now: one is full, or an entry is due."""
        due = self.next_due()
        return self.full or (due is not None and due <= now)

    def take(self, now: float, *, everything_due: bool = False) -> list[Entry]:
        """The next batch (at most ``flush-size``): retries that are due first, then fresh
        records, one storage at a time in turn. ``everything_due``: every retry counts as due
        (the shutdown flush)."""
        batch: list[Entry] = []
        size = self._config.flush_size
        for_retries = size - min(self._fresh, size // 2)
        while self._retries and len(batch) < for_retries:
            if not everything_due and self._retries[0].due_at > now:
                break
            batch.append(self._retries.popleft())
        while self._turns and len(batch) < size:
            storage_id = self._turns.popleft()
            queue = self._queues[storage_id]
            entry = queue.popleft()
            entry.taken = True
            batch.append(entry)
            self._fresh -= 1
            if queue:
                self._turns.append(storage_id)
            else:
                del self._queues[storage_id]
        self._pass_taken()
        for entry in batch:
            entry.attempts += 1
        self._in_flight = batch
        return batch

    def _pass_taken(self) -> None:
        """Removes the taken entries at the head of the arrival order."""
        arrivals = self._arrivals
        while arrivals and arrivals[0].taken:
            arrivals.popleft()

    def settle(self, result: WriteResult, now: float) -> Outcome:
        """Books the batch in flight: written, to retry ``flush-timeout`` from now, lost, or
        gone with its storage."""
        batch, self._in_flight = self._in_flight, []
        written = retried = 0
        lost: list[Entry] = []
        gone: list[Entry] = []
        due_at = now + self._config.flush_timeout_s
        for entry in batch:
            if entry.id in result.gone:
                gone.append(entry)
            elif entry.id not in result.retry:
                written += 1
            elif entry.attempts > self._config.retry_limit:  # the first attempt, then retries
                lost.append(entry)
            else:
                entry.due_at = due_at
                self._retries.append(entry)
                retried += 1
                continue
            self._release(entry.record.storage_id)
        return Outcome(written, retried, lost, gone)

    def _release(self, storage_id: str) -> None:
        held = self._held[storage_id] - 1
        if held:
            self._held[storage_id] = held
        else:
            del self._held[storage_id]

    def fail_in_flight(self, now: float) -> Outcome:
        """The batch in flight failed as a whole."""
        return self.settle(WriteResult(retry=frozenset(e.id for e in self._in_flight)), now)

    def discard(self, storage_id: str) -> int:
        """Drops a deleted storage's entries (waiting and to retry) and keeps those in flight
        from being retried; answers how many. Rare, so a pass over everything is fine."""

        def others(entries: Iterable[Entry]) -> list[Entry]:
            return [e for e in entries if e.record.storage_id != storage_id]

        before = len(self)
        queue = self._queues.pop(storage_id, None)
        if queue is not None:
            self._turns.remove(storage_id)
            self._fresh -= len(queue)
        self._arrivals = deque(e for e in others(self._arrivals) if not e.taken)
        self._retries = deque(others(self._retries))
        self._in_flight = others(self._in_flight)
        self._held.pop(storage_id, None)
        return before - len(self)

    def empty_out(self) -> list[Entry]:
        """Everything still held (in flight, to retry, waiting): the shutdown's leftovers."""
        fresh = [entry for entry in self._arrivals if not entry.taken]
        leftovers = [*self._in_flight, *self._retries, *fresh]
        self._in_flight = []
        self._retries.clear()
        self._arrivals.clear()
        self._queues.clear()
        self._turns.clear()
        self._fresh = 0
        self._held.clear()
        return leftovers
