"""The record a storage operation hands to the history pipeline."""

from dataclasses import dataclass
from enum import StrEnum


class Operation(StrEnum):
    SET = "set"
    DELETE = "delete"
    CLEAR = "clear"


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    storage_id: str
    key: str | None
    """``None`` for ``clear``."""
    value: str | None
    """``None`` for ``delete`` and ``clear``."""
    operation: Operation
    timestamp_ms: int
    """When the request that caused the operation arrived, in epoch milliseconds."""
    request_id: str | None = None
    """The request that caused it, for the log lines about the record (never stored)."""
    layout: str = "per-storage"
    """Where its storage's history lives: ``per-storage`` (an index of its own) or ``shared``
    (``kv_storage.model.Layout``)."""
