"""A pool of slots that storages share, each within a share of its own: open scans,
blocking reads.

A pool bounds what one instance holds at once (scroll contexts in Elasticsearch, waiters in
memory). Were it first come, first served, one storage could take every slot and every other
storage would be refused. So each storage may hold at most its share of the pool: one at its
share is answered 429, with ``Retry-After``, while the others still find slots; only a pool
that is full for everyone answers 503.

A pool is one per instance for what it bounds: the open scans' pool is handed to both actors
that open scans (the storage actor's lists and clears, the key listing's full scans), so that
an instance holds at most ``elasticsearch.scroll.max-open`` of them, as the setting says. Its
``take`` and ``give_back`` are synchronous: the event loop runs each whole, so the actors that
share it need no mailbox for it.
"""

from dataclasses import dataclass

from kv_storage.errors import ServiceUnavailableError, TooManyRequestsError


@dataclass(frozen=True, slots=True)
class PoolNames:
    """How a pool's answers name it: what a slot holds and the properties that bound it."""

    held: str
    """Plural, such as ``lists and clears``."""
    capacity_property: str
    share_property: str


SCANS = PoolNames(
    held="lists and clears",
    capacity_property="elasticsearch.scroll.max-open",
    share_property="elasticsearch.scroll.max-open-per-storage",
)
"""The open scans' pool: each holds a scroll context in Elasticsearch."""


class SharedPool:
    def __init__(self, *, capacity: int, share: int, names: PoolNames) -> None:
        self._capacity = capacity
        self._share = min(share, capacity)
        self._names = names
        self._held = 0
        self._held_by: dict[str, int] = {}
        self.refused_for_share = 0
        """Slots refused because their storage held its share (429)."""

    @property
    def held(self) -> int:
        return self._held

    def take(self, storage_id: str) -> None:
        """One slot for ``storage_id``, or 503 (the pool is full) or 429 (its share is)."""
        mine = self._held_by.get(storage_id, 0)
        names = self._names
        if self._held >= self._capacity:
            raise ServiceUnavailableError(
                f"{self._held} {names.held} are in progress on this instance, the most it "
                f"runs at once ({names.capacity_property}); try again shortly"
            )
        if mine >= self._share:
            self.refused_for_share += 1
            raise TooManyRequestsError(
                f"storage {storage_id} has {mine} {names.held} in progress on this instance, "
                f"its share ({names.share_property}); try again shortly"
            )
        self._held += 1
        self._held_by[storage_id] = mine + 1

    def give_back(self, storage_id: str) -> None:
        self._held -= 1
        mine = self._held_by[storage_id] - 1
        if mine:
            self._held_by[storage_id] = mine
        else:
            del self._held_by[storage_id]
