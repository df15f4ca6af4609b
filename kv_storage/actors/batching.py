"""Which waiting key/value operations go to Elasticsearch together, and when.

Group commit, without a timer: an operation that arrives while a slot is free goes at once
(alone, when nothing else waits: its latency is that of a request of its own). While every
slot is taken, operations wait; when a batch is answered, everything waiting that may go goes
as one request. So the busier the service, the larger the batches, and the fewer the
Elasticsearch requests per operation.

Reads (one ``_mget``) and writes (one ``_bulk``) are batched apart, each with at most
``max_in_flight`` batches in flight. A batch holds at most ``max_operations`` keys and
``max_bytes`` of body, except that an operation larger than that goes alone (a multi-key
operation is never split).

Operations on one key keep their arrival order: an operation does not go while an earlier
one on its key that conflicts with it (a write and anything else) waits or is in flight,
except that writes of one key may share a batch, where Elasticsearch carries them out in the
order sent. So a read sees every write of its key that arrived before it, and a later write
of a key is never overtaken by an earlier one.

This module holds no I/O: the storage actor feeds it, sends what ``take`` hands out, and
reports each batch ``done``.
"""

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

PayloadT = TypeVar("PayloadT")

Key = tuple[str, str]
"""A storage id and a key of it."""


class Kind(Enum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_operations: int
    """Keys in one batch (a multi-key operation counts each of its keys)."""
    max_bytes: int
    """Bytes of one batch's request body."""
    max_in_flight: int
    """Batches of one kind (reads, writes) waiting for Elasticsearch at once."""


@dataclass(eq=False, slots=True)
class Pending(Generic[PayloadT]):
    kind: Kind
    keys: tuple[Key, ...]
    size: int
    """Its bytes in the request body."""
    payload: PayloadT
    """What the actor sends and answers; opaque here."""


@dataclass(eq=False, slots=True)
class Batch(Generic[PayloadT]):
    kind: Kind
    operations: list[Pending[PayloadT]] = field(default_factory=list)
    keys: int = 0
    size: int = 0

    def admits(self, operation: Pending[PayloadT], limits: BatchLimits) -> bool:
        """Room for ``operation``; an empty batch takes anything (a large operation alone)."""
        return not self.operations or (
            self.keys + len(operation.keys) <= limits.max_operations
            and self.size + operation.size <= limits.max_bytes
        )

    def add(self, operation: Pending[PayloadT]) -> None:
        self.operations.append(operation)
        self.keys += len(operation.keys)
        self.size += operation.size


class Batcher(Generic[PayloadT]):
    def __init__(self, limits: BatchLimits) -> None:
        self._limits = limits
        self._waiting: deque[Pending[PayloadT]] = deque()
        self._in_flight = {Kind.READ: 0, Kind.WRITE: 0}
        self._read_keys: Counter[Key] = Counter()
        """Keys of the reads in flight."""
        self._written_keys: Counter[Key] = Counter()
        """Keys of the writes in flight."""

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def in_flight(self, kind: Kind) -> int:
        return self._in_flight[kind]

    def add(self, operation: Pending[PayloadT]) -> None:
        self._waiting.append(operation)

    def take(self) -> list[Batch[PayloadT]]:
        """The batches that may go now, each to be sent as one request and reported ``done``."""
        limit = self._limits.max_in_flight
        room = {Kind.READ: self._in_flight[Kind.READ] < limit}
        room[Kind.WRITE] = self._in_flight[Kind.WRITE] < limit
        if not self._waiting or not (room[Kind.READ] or room[Kind.WRITE]):
            return []
        filling: dict[Kind, Batch[PayloadT]] = {Kind.READ: Batch(Kind.READ)}
        filling[Kind.WRITE] = Batch(Kind.WRITE)
        unreadable: set[Key] = set()
        """Keys of earlier writes not yet answered: a read of them must come after."""
        unwritable: set[Key] = set()
        """Keys of earlier operations that stay behind or go now in a read: a write of them
        must come after."""
        staying: deque[Pending[PayloadT]] = deque()
        for operation in self._waiting:
            batch = filling[operation.kind]
            if room[operation.kind] and batch.admits(operation, self._limits):
                if operation.kind is Kind.READ:
                    goes = _free(operation.keys, unreadable, self._written_keys)
                else:
                    goes = _free(operation.keys, unwritable, self._written_keys, self._read_keys)
            else:
                goes = False
            if goes:
                batch.add(operation)
                (unwritable if operation.kind is Kind.READ else unreadable).update(operation.keys)
                continue
            staying.append(operation)
            unwritable.update(operation.keys)
            if operation.kind is Kind.WRITE:
                unreadable.update(operation.keys)
        self._waiting = staying
        batches = [batch for batch in filling.values() if batch.operations]
        for batch in batches:
            self._in_flight[batch.kind] += 1
            counts = self._read_keys if batch.kind is Kind.READ else self._written_keys
            for operation in batch.operations:
                counts.update(operation.keys)
        return batches

    def done(self, batch: Batch[PayloadT]) -> None:
        """``batch`` was answered (or failed): its slot and its keys are free again."""
        self._in_flight[batch.kind] -= 1
        counts = self._read_keys if batch.kind is Kind.READ else self._written_keys
        for operation in batch.operations:
            counts.subtract(operation.keys)
            for key in operation.keys:
                if counts[key] <= 0:
                    del counts[key]


def _free(keys: Iterable[Key], *taken: "set[Key] | Counter[Key]") -> bool:
    return not any(key in held for key in keys for held in taken)
