"""What the client answers with: plain frozen dataclasses, named as the API names things."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class StorageType(StrEnum):
    ACCOUNT = "ACCOUNT"
    VM = "VM"
    TEMP = "TEMP"


@dataclass(frozen=True, slots=True)
class Versioned:
    """A key's value and its version (the ``ETag``, for ``if_match``)."""

    value: str
    etag: str


@dataclass(frozen=True, slots=True)
class Change:
    """What ``watch`` saw happen to a key: a new value, or (``value is None``) its deletion."""

    key: str
    value: str | None
    etag: str | None

    @property
    def deleted(self) -> bool:
        return self.value is None


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One change of a storage with history: ``key`` and ``value`` are ``None`` for a clear,
    ``value`` is ``None`` for a delete; ``timestamp`` in epoch milliseconds."""

    key: str | None
    value: str | None
    operation: str
    timestamp: int

    @classmethod
    def of(cls, item: dict[str, Any]) -> "HistoryRecord":
        return cls(item.get("key"), item.get("value"), item["operation"], item["timestamp"])


@dataclass(frozen=True, slots=True)
class HistoryPage:
    total: int
    page: int
    size: int
    items: list[HistoryRecord]


@dataclass(frozen=True, slots=True)
class StorageInfo:
    """A storage's record as the administration API shows it (never with its secret)."""

    id: str
    type: StorageType
    deleted: bool
    history_enabled: bool
    account: str | None = None
    name: str | None = None
    description: str | None = None
    ttl_ms: int | None = None
    expiration_timestamp_ms: int | None = None
    last_updated_ms: int | None = None

    @classmethod
    def of(cls, body: dict[str, Any]) -> "StorageInfo":
        return cls(
            id=body["id"],
            type=StorageType(body["type"]),
            deleted=bool(body.get("deleted", False)),
            history_enabled=bool(body.get("historyEnabled", False)),
            account=body.get("account"),
            name=body.get("name"),
            description=body.get("description"),
            ttl_ms=body.get("ttl"),
            expiration_timestamp_ms=body.get("expirationTimestamp"),
            last_updated_ms=body.get("lastUpdated"),
        )


@dataclass(frozen=True, slots=True)
class Credentials:
    """A storage's id and secret: what a creation or a rotation hands out, once."""

    id: str
    secret_key: str
