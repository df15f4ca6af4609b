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

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from itertools import repeat
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
    keys: frozenset[Key]
    size: int
    """Its bytes in the request body."""
    payload: PayloadT
    """What the actor sends and answers; opaque here."""
    weight: int | None = None
    """What it counts against ``max_operations``; ``None``: its keys. (A search of a page
    of keys has no keys to order by, but asks for as many as its page holds.)"""

    @property
    def counted(self) -> int:
        return len(self.keys) if self.weight is None else self.weight


def keys_of(storage_id: str, keys: Iterable[str]) -> frozenset[Key]:
    return frozenset(zip(repeat(storage_id), keys))


@dataclass(eq=False, slots=True)
class Batch(Generic[PayloadT]):
    kind: Kind
    operations: list[Pending[PayloadT]] = field(default_factory=list)
    keys: int = 0
    size: int = 0

    def admits(self, operation: Pending[PayloadT], limits: BatchLimits) -> bool:
        """Room for ``operation``; an empty batch takes anything (a large operation alone)."""
        return not self.operations or (
            self.keys + operation.counted <= limits.max_operations
            and self.size + operation.size <= limits.max_bytes
        )

    def full(self, limits: BatchLimits) -> bool:
        return self.keys >= limits.max_operations or self.size >= limits.max_bytes

    def add(self, operation: Pending[PayloadT]) -> None:
        self.operations.append(operation)
        self.keys += operation.counted
        self.size += operation.size


class Batcher(Generic[PayloadT]):
    def __init__(self, limits: BatchLimits) -> None:
        self._limits = limits
        self._waiting: deque[Pending[PayloadT]] = deque()
        self._waiting_of = {Kind.READ: 0, Kind.WRITE: 0}
        self._in_flight: dict[Kind, list[Batch[PayloadT]]] = {Kind.READ: [], Kind.WRITE: []}

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def in_flight(self, kind: Kind) -> int:
        return len(self._in_flight[kind])

    def add(self, operation: Pending[PayloadT]) -> None:
        self._waiting.append(operation)
        self._waiting_of[operation.kind] += 1

    def take(self) -> list[Batch[PayloadT]]:
        """The batches that may go now, each to be sent as one request and reported ``done``.

        Costs nothing while no waiting operation has a free slot; else one pass over the
        waiting operations, with set operations (in C) per pair of operations, not per key."""
        limits = self._limits
        room = {
            kind: self._waiting_of[kind] > 0 and len(batches) < limits.max_in_flight
            for kind, batches in self._in_flight.items()
        }
        if not (room[Kind.READ] or room[Kind.WRITE]):
            return []
        filling: dict[Kind, Batch[PayloadT]] = {Kind.READ: Batch(Kind.READ)}
        filling[Kind.WRITE] = Batch(Kind.WRITE)
        being_read = [pending.keys for b in self._in_flight[Kind.READ] for pending in b.operations]
        being_written = [
            pending.keys for b in self._in_flight[Kind.WRITE] for pending in b.operations
        ]
        # Key sets, not merged: each operation is checked against each set (isdisjoint, in C),
        # so that an operation staying behind costs one append, whatever its keys.
        unreadable: list[frozenset[Key]] = []
        """Keys of earlier writes not yet answered: a read of them must come after."""
        unwritable: list[frozenset[Key]] = []
        """Keys of earlier operations that stay behind or go now in a read: a write of them
        must come after."""
        staying: deque[Pending[PayloadT]] = deque()
        waiting = self._waiting
        while waiting:
            operation = waiting.popleft()
            kind = operation.kind
            batch = filling[kind]
            keys = operation.keys
            goes = (
                room[kind]
                and batch.admits(operation, limits)
                and (
                    _free(keys, unreadable, being_written)
                    if kind is Kind.READ
                    else _free(keys, unwritable, being_written, being_read)
                )
            )
            if goes:
                batch.add(operation)
                (unwritable if kind is Kind.READ else unreadable).append(keys)
                if batch.full(limits):
                    room[kind] = False
                    if not (room[Kind.READ] or room[Kind.WRITE]):
                        break  # nothing more can go: the rest stays as it is, in order
                continue
            staying.append(operation)
            unwritable.append(keys)
            if kind is Kind.WRITE:
                unreadable.append(keys)
        staying.extend(waiting)
        self._waiting = staying
        batches = [batch for batch in filling.values() if batch.operations]
        for batch in batches:
            self._in_flight[batch.kind].append(batch)
            self._waiting_of[batch.kind] -= len(batch.operations)
        return batches

    def done(self, batch: Batch[PayloadT]) -> None:
        """``batch`` was answered (or failed): its slot and its keys are free again."""
        self._in_flight[batch.kind].remove(batch)


def _free(keys: frozenset[Key], *taken: list[frozenset[Key]]) -> bool:
    return all(keys.isdisjoint(held) for sets in taken for held in sets)
