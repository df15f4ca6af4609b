"""What the history pipeline needs of the store it writes to, and how that store says the
whole request failed. The service adapts Elasticsearch to it (``kv_storage.es.history``)."""

from collections.abc import Sequence
from typing import Protocol

from pipeline.records import HistoryRecord


class WriteFailedError(Exception):
    """A writer's whole request failed; the message names the cause and holds no values."""


class HistoryWriter(Protocol):
    async def write(self, batch: Sequence[tuple[str, HistoryRecord]]) -> set[str]:
        """Writes ``(record id, record)`` pairs in one request; answers the ids that failed.

        Raises (preferably ``WriteFailedError``) when the request as a whole failed. Writing
        a record twice under its id is harmless, so a retry never duplicates history.
        """
