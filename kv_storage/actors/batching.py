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

Storages take turns (``Batcher.take``): one storage's stream of operations cannot keep
another's waiting behind it, however large its operations.

Operations on one key keep their arrival order: an operation does not go while an earlier
one on its key that conflicts with it (a write and anything else) waits or is in flight,
except that writes of one key may share a batch, where Elasticsearch carries them out in the
order sent. So a read sees every write of its key that arrived before it, and a later write
of a key is never overtaken by an earlier one.

This module holds no I/O: ``actors.batch_runner`` feeds it (for the storage actor, the key
listing and the cache's registry reads), sends what ``take`` hands out, and reports each
batch ``done``.
"""

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from itertools import repeat
from typing import Generic, TypeVar

from kv_storage.config import BatchLimits
from kv_storage.model import KeyId

PayloadT = TypeVar("PayloadT")


class Kind(Enum):
    READ = "read"
    WRITE = "write"


@dataclass(eq=False, slots=True)
class Pending(Generic[PayloadT]):
    kind: Kind
    storage_id: str
    """Whose operation it is: storages take turns, each within its share."""
    keys: frozenset[KeyId]
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


def keys_of(storage_id: str, keys: Iterable[str]) -> frozenset[KeyId]:
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
        self._queues: OrderedDict[str, deque[Pending[PayloadT]]] = OrderedDict()
        """Per storage, its waiting operations in arrival order; storages in their turn."""
        self._waiting = 0
        self._waiting_of = {Kind.READ: 0, Kind.WRITE: 0}
        self._in_flight: dict[Kind, list[Batch[PayloadT]]] = {Kind.READ: [], Kind.WRITE: []}
        self._busy: dict[str, dict[Kind, dict[int, frozenset[KeyId]]]] = {}
        """Per storage, the keys of its operations in flight, by kind."""
        self._held: dict[str, int] = {}
        """Per storage, the keys it has waiting or in flight (what its share bounds)."""

    @property
    def waiting(self) -> int:
        return self._waiting

    def in_flight(self, kind: Kind) -> int:
        return len(self._in_flight[kind])

    def held_by(self, storage_id: str) -> int:
        """Keys of ``storage_id`` waiting or in flight."""
        return self._held.get(storage_id, 0)

    def add(self, operation: Pending[PayloadT]) -> None:
        queue = self._queues.get(operation.storage_id)
        if queue is None:
            queue = self._queues[operation.storage_id] = deque()
        queue.append(operation)
        self._waiting += 1
        self._waiting_of[operation.kind] += 1
        self._held[operation.storage_id] = self.held_by(operation.storage_id) + operation.counted

    def take(self) -> list[Batch[PayloadT]]:
        """The batches that may go now, each to be sent as one request and reported ``done``.

        Storages take turns: each in the order of its turn takes what may go of its waiting
        operations, in their order, and a storage that got some goes to the back of the
        turns. So one storage's stream of large operations fills at most every other batch,
        and a storage with one operation waiting is in the next batch or the one after.

        Costs nothing while no waiting operation has a free slot; else one pass over the
        waiting operations, with set operations (in C) per pair of operations of a storage,
        not per key."""
        limits = self._limits
        room = {
            kind: self._waiting_of[kind] > 0 and len(batches) < limits.max_in_flight
            for kind, batches in self._in_flight.items()
        }
        if not (room[Kind.READ] or room[Kind.WRITE]):
            return []
        filling: dict[Kind, Batch[PayloadT]] = {Kind.READ: Batch(Kind.READ)}
        filling[Kind.WRITE] = Batch(Kind.WRITE)
        served: list[str] = []
        for storage_id, queue in list(self._queues.items()):
            if not (room[Kind.READ] or room[Kind.WRITE]):
                break  # nothing more can go: the rest stays as it is, in order
            staying, took = self._take_from(storage_id, queue, filling, room)
            if staying:
                self._queues[storage_id] = staying
            else:
                del self._queues[storage_id]
            if took:
                served.append(storage_id)
        for storage_id in served:
            if storage_id in self._queues:
                self._queues.move_to_end(storage_id)
        batches = [batch for batch in filling.values() if batch.operations]
        for batch in batches:
            self._in_flight[batch.kind].append(batch)
            self._waiting -= len(batch.operations)
            self._waiting_of[batch.kind] -= len(batch.operations)
            for operation in batch.operations:
                busy = self._busy.setdefault(operation.storage_id, {Kind.READ: {}, Kind.WRITE: {}})
                busy[batch.kind][id(operation)] = operation.keys
        return batches

    def _take_from(
        self,
        storage_id: str,
        queue: deque[Pending[PayloadT]],
        filling: dict[Kind, Batch[PayloadT]],
        room: dict[Kind, bool],
    ) -> tuple[deque[Pending[PayloadT]], bool]:
        """One storage's turn: what of its queue goes into ``filling``, in order; answers
        what stays, in order, and whether anything went."""
        limits = self._limits
        busy = self._busy.get(storage_id)
        being_read = busy[Kind.READ].values() if busy else ()
        being_written = busy[Kind.WRITE].values() if busy else ()
        # Key sets, not merged: each operation is checked against each set (isdisjoint, in C),
        # so that an operation staying behind costs one append, whatever its keys.
        unreadable: list[frozenset[KeyId]] = []
        """Keys of earlier writes not yet answered: a read of them must come after."""
        unwritable: list[frozenset[KeyId]] = []
        """Keys of earlier operations that stay behind or go now in a read: a write of them
        must come after."""
        staying: deque[Pending[PayloadT]] = deque()
        took = False
        while queue:
            operation = queue.popleft()
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
                took = True
                (unwritable if kind is Kind.READ else unreadable).append(keys)
                if batch.full(limits):
                    room[kind] = False
                    if not (room[Kind.READ] or room[Kind.WRITE]):
                        break
                continue
            staying.append(operation)
            unwritable.append(keys)
            if kind is Kind.WRITE:
                unreadable.append(keys)
        staying.extend(queue)
        return staying, took

    def done(self, batch: Batch[PayloadT]) -> None:
        """``batch`` was answered (or failed): its slot and its keys are free again."""
        self._in_flight[batch.kind].remove(batch)
        for operation in batch.operations:
            storage_id = operation.storage_id
            busy = self._busy[storage_id]
            del busy[batch.kind][id(operation)]
            if not (busy[Kind.READ] or busy[Kind.WRITE]):
                del self._busy[storage_id]
            held = self._held[storage_id] - operation.counted
            if held > 0:
                self._held[storage_id] = held
            else:
                del self._held[storage_id]


def _free(keys: frozenset[KeyId], *taken: Iterable[frozenset[KeyId]]) -> bool:
    return all(keys.isdisjoint(held) for sets in taken for held in sets)
