"""Where storage operations hand their history records over.

Storage requests never wait for history: ``record`` only enqueues. Until the history actor
exists, ``DroppingSink`` stands in for it.
"""

from collections.abc import Sequence
from typing import Protocol

from pipeline.records import HistoryRecord


class HistorySink(Protocol):
    def record(self, records: Sequence[HistoryRecord]) -> None:
        """Accept records for writing; must not block or raise for a full buffer."""


class DroppingSink:
    """Accepts and forgets every record."""

    def record(self, records: Sequence[HistoryRecord]) -> None:
        return None
