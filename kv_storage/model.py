"""What the service knows about a storage, as read from the registry."""

import hmac
import re
from dataclasses import dataclass, field
from enum import StrEnum

from schemas.fields import STORAGE_ID_PATTERN


class StorageType(StrEnum):
    ACCOUNT = "ACCOUNT"
    VM = "VM"
    TEMP = "TEMP"


class Layout(StrEnum):
    """Where a storage's keys and history live in Elasticsearch."""

    PER_STORAGE = "per-storage"
    """Indices of its own (``storage-data-<id>``, ``storage-history-<id>``): the original's
    layout, and that of every registry document without a layout field (written by the
    original or the CloudStack plugin)."""
    SHARED = "shared"
    """In the shared indices of every such storage, routed by its id: one shard holds all of
    a storage, and a deployment's shard count does not grow with its storages."""


@dataclass(frozen=True, slots=True)
class Location:
    """A storage as the Elasticsearch access layer needs it: which, and in which layout."""

    storage_id: str
    layout: Layout = Layout.PER_STORAGE


@dataclass(frozen=True, slots=True)
class Storage:
    id: str
    type: StorageType
    history_enabled: bool
    secret_key: str = field(repr=False)
    expiration_timestamp_ms: int | None = None
    layout: Layout = Layout.PER_STORAGE
    moving: bool = False
    """Being moved into the shared layout: read as usual, written not (503) until done."""

    @property
    def location(self) -> Location:
        return Location(self.id, self.layout)

    def accepts(self, secret_key: str) -> bool:
        """Constant-time comparison: the answer time says nothing about the secret.

        A storage without a secret (a registry document with none, or an empty one) accepts
        no key at all: an empty ``Secret-Key`` header must not open it. A header that is not
        UTF-8 reaches us with its bytes kept as surrogates; they go back to those bytes, which
        match no secret.
        """
        given = secret_key.encode("utf-8", "surrogateescape")
        matches = hmac.compare_digest(self.secret_key.encode(), given)
        return matches and bool(self.secret_key)

    def expired(self, now_ms: int) -> bool:
        return (
            self.type is StorageType.TEMP
            and self.expiration_timestamp_ms is not None
            and self.expiration_timestamp_ms <= now_ms
        )

    @property
    def keeps_history(self) -> bool:
        return self.history_enabled and self.type is not StorageType.TEMP


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Which history records a search wants, and in which order."""

    keys: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()
    start_ms: int | None = None
    end_ms: int | None = None
    sort: tuple[tuple[str, bool], ...] = ()
    """(field, descending) pairs; empty means by timestamp, oldest first."""


_STORAGE_ID = re.compile(STORAGE_ID_PATTERN)


def is_storage_id(storage_id: str) -> bool:
    """Whether ``storage_id`` can name a storage (``schemas.fields.STORAGE_ID_PATTERN``)."""
    return _STORAGE_ID.fullmatch(storage_id) is not None


@dataclass(frozen=True, slots=True)
class Version:
    """Where a key's value stands in Elasticsearch: its ``_primary_term`` and ``_seq_no``,
    which every write of the key changes, the same seen from every instance."""

    primary_term: int
    seq_no: int

    @property
    def etag(self) -> str:
        """A strong entity tag, opaque to clients: ``"<term>-<seq_no>"``."""
        return f'"{self.primary_term}-{self.seq_no}"'


class MalformedTagError(ValueError):
    """Not an entity tag this service made."""


_ETAG = re.compile(r'^"([0-9]{1,19})-([0-9]{1,19})"$')
_MAX_LONG = 2**63 - 1
"""Elasticsearch's ``if_primary_term`` and ``if_seq_no`` are signed 64-bit longs."""


def parse_etag(text: str) -> Version:
    """The version an ``ETag`` of ours names (``If-Match``, ``If-None-Match``).

    Only what Elasticsearch can take as ``if_primary_term``/``if_seq_no``: a primary term of
    at least 1 and both numbers within a signed long. Anything else it refuses for the whole
    ``_bulk`` the condition travels in, so a forged tag would fail other requests' writes."""
    match = _ETAG.match(text.strip())
    if match is None:
        raise MalformedTagError(f"{text.strip()!r} is not an entity tag of this service")
    term, seq_no = int(match.group(1)), int(match.group(2))
    if not (1 <= term <= _MAX_LONG and seq_no <= _MAX_LONG):
        raise MalformedTagError(f"{text.strip()!r} names no version a key can be at")
    return Version(term, seq_no)


@dataclass(frozen=True, slots=True)
class Condition:
    """What must hold for a write of a key to happen (a conditional request)."""

    version: Version | None = None
    """``If-Match``: the key is at this version."""
    absent: bool = False
    """``If-None-Match: *``: the key does not exist."""


KeyId = tuple[str, str]
"""Which key of which storage, ``(storage id, key)``: what a ``DocumentKey`` is compared by,
as a plain tuple where many are hashed and compared at once (the batcher's sets of keys,
compared in C)."""


@dataclass(frozen=True, slots=True)
class DocumentKey:
    """A key of a storage: one document of its data index. Its layout says where that
    document is; it is no part of which key it is (equality and hash: its ``KeyId``)."""

    storage_id: str
    key: str
    layout: Layout = field(default=Layout.PER_STORAGE, compare=False)
