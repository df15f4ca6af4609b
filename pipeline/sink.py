"""Where storage operations hand their history records over: what the storage actor needs
of the history pipeline (the history actor is one)."""

from collections.abc import Sequence
from typing import Protocol

from pipeline.records import HistoryRecord


class HistorySink(Protocol):
    def record(self, records: Sequence[HistoryRecord]) -> None:
        """Accept records for writing; must not block or raise for a full buffer."""
