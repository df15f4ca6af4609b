"""What the history pipeline needs of the store it writes to, and what the store answers.

The service adapts Elasticsearch to it (``kv_storage.es.history``). The store, which knows its
errors, sorts each refused record into one of two kinds (try again later, or never); the
pipeline only acts on that sorting, so it needs no knowledge of the store's error codes.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.records import HistoryRecord


class WriteFailedError(Exception):
    """A writer's whole request failed; the message names the cause and holds no values."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What became of the records of one write; those it does not name were written."""

    retry: frozenset[str] = frozenset()
    """Refused for a reason that may pass (a read-only index, a busy node): they go again."""
    gone: frozenset[str] = frozenset()
    """Refused because their storage was deleted (its index is closed to writes for good):
    trying again would only be refused again, or re-create the index of a deleted storage."""
    causes: Mapping[str, int] = field(default_factory=dict)
    """Why the ``retry`` records were refused, in the store's words (never a value), with how
    many records each cause refused: for the operator's log line."""


class HistoryWriter(Protocol):
    async def write(self, batch: Sequence[tuple[str, HistoryRecord]]) -> WriteResult:
        """Writes ``(record id, record)`` pairs in one request; answers what was refused.

        Raises (preferably ``WriteFailedError``) when the request as a whole failed. Writing
        a record twice under its id is harmless, so a retry never duplicates history.
        """
