"""Log lines about what can happen thousands of times a second: bounded in rate, exact in count.

A review found a full buffer logged "dropping new records, 1 so far" once while 14,605 were
dropped, and records refused one by one retried without a word. So here: the first event of a
kind is logged at once; the later ones are counted and told together at most every
``interval_s``; a count still untold when its interval ends is told then, even if nothing
else happens (the actor wakes for it: ``due_at``). Drops come in episodes (a storage at its
share, a full buffer): their lines carry the running count of the episode, and its end, once
records are taken again, a line with the whole count.

Pure, like the buffer: the time is passed in, and the lines go to a callable the actor gives.
"""

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(slots=True)
class Tally:
    """What happened since the last line: records by storage, and by cause where there is one."""

    storages: Counter[str] = field(default_factory=Counter)
    causes: Counter[str] = field(default_factory=Counter)

    def __bool__(self) -> bool:
        return bool(self.storages or self.causes)

    @property
    def records(self) -> int:
        return self.storages.total()


class ThrottledLine:
    """One kind of log line, written at most every ``interval_s`` and never short of a count."""

    def __init__(self, interval_s: float, write: Callable[[Tally], None]) -> None:
        self._interval_s = interval_s
        self._write = write
        self._pending = Tally()
        self._next_at = float("-inf")

    def add(
        self, now: float, storages: Mapping[str, int], causes: Mapping[str, int] | None = None
    ) -> None:
        """Counts one event's records (by storage) and their causes."""
        self._pending.storages.update(storages)
        self._pending.causes.update(causes or {})
        self.tick(now)

    def forget(self, storage_id: str) -> int:
        """Takes a storage's untold count back (a line that ends its episode tells it)."""
        return self._pending.storages.pop(storage_id, 0)

    def tick(self, now: float) -> None:
        if self._pending and now >= self._next_at:
            told, self._pending = self._pending, Tally()
            self._next_at = now + self._interval_s
            self._write(told)

    def due_at(self) -> float | None:
        return self._next_at if self._pending else None


class Drops:
    """Records dropped for one reason, in episodes per key (a storage, or one for the whole
    buffer). An episode ends once its key has been free of drops for ``interval_s`` and
    records are taken again: so a storage that hovers at its limit, dropping after every
    flush, is one episode with one running count, not a pair of lines per flush."""

    def __init__(
        self,
        interval_s: float,
        *,
        dropping: Callable[[Tally, Mapping[str, int]], None],
        ended: Callable[[str, int, Counter[str]], None],
    ) -> None:
        """``dropping(since the last line, running count by key)``; ``ended(key, count of the
        episode, its records by storage)``."""
        self._interval_s = interval_s
        self._ended = ended
        self._totals: dict[str, Counter[str]] = {}
        self._last_drop_at: dict[str, float] = {}
        self._line = ThrottledLine(interval_s, lambda told: dropping(told, self.running_counts()))

    def __len__(self) -> int:
        """Episodes open."""
        return len(self._totals)

    def add(self, key: str, storages: Mapping[str, int], now: float) -> None:
        """Drops of ``key``'s episode, by storage."""
        if not storages:
            return
        self._totals.setdefault(key, Counter()).update(storages)
        self._last_drop_at[key] = now
        self._line.add(now, storages)

    def running_counts(self) -> dict[str, int]:
        return {key: total.total() for key, total in self._totals.items()}

    def tick(self, now: float, taking: Callable[[str], bool]) -> None:
        """Tells what is due; ends the quiet episodes whose key ``taking`` says has room."""
        for key, last in list(self._last_drop_at.items()):
            if now - last >= self._interval_s and taking(key):
                del self._last_drop_at[key]
                totals = self._totals.pop(key)
                for storage_id in totals:
                    self._line.forget(storage_id)
                self._ended(key, totals.total(), totals)
        self._line.tick(now)

    def due_at(self, now: float) -> float | None:
        """The next time ``tick`` has work: a line due, or an episode that may end (one past
        that time whose key is still full waits for a flush, which wakes the actor anyway)."""
        times = [last + self._interval_s for last in self._last_drop_at.values()]
        later = [at for at in times if at > now]
        line = self._line.due_at()
        if line is not None:
            later.append(line)
        return min(later) if later else None
