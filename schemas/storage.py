"""Shapes of the key/value endpoints, as the original service's clients send and expect them.

Bodies of these endpoints are bare JSON arrays and maps (not objects with named fields), and
keys come from the path, so each is described by a marshmallow field that the request
validation loads (``kv_storage.validation``); ``*_SPEC`` is the same shape in the API
document. What a deployment configures (the largest key, the largest value) reaches the
fields through marshmallow's context (``LIMITS``), set for each request.

The multi-key fields check each item in one pass: a body may hold 10,000 keys, and a
marshmallow round per item would cost more than the Elasticsearch request.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from marshmallow import Schema, ValidationError, fields, validate, validates
from marshmallow.experimental.context import Context

from schemas.durations import Duration
from schemas.fields import MAX_KEY_BYTES, QueryInteger


class Limits(TypedDict):
    key_max_bytes: int
    value_max_bytes: int | None
    """``None``: values of any size."""
    max_wait_s: float
    """The longest blocking read (``app.watch.max-wait``)."""
    default_page_size: int
    """The size of a history page that gives none (``app.default-page-size``)."""


LIMITS = Context[Limits]
_NO_CONFIGURATION = Limits(
    key_max_bytes=MAX_KEY_BYTES, value_max_bytes=None, max_wait_s=300.0, default_page_size=50
)


def limits() -> Limits:
    """What the deployment allows, for the request being validated (its defaults outside a
    request)."""
    return LIMITS.get(_NO_CONFIGURATION)


class NotUtf8:
    """Stands for text whose bytes are not UTF-8, so that the field can refuse it by name."""


NOT_UTF8 = NotUtf8()


def key_problem(key: str, max_bytes: int) -> str | None:
    """Why ``key`` cannot be a key, or ``None`` when it can."""
    size = _utf8_size(key)
    if size is None:
        return "the key is not valid UTF-8"
    if size == 0:
        return "the key is empty"
    if size > max_bytes:
        return f"the key is {size} bytes of UTF-8; the limit is {max_bytes}"
    return None


def value_problem(value: str, max_bytes: int | None) -> str | None:
    """Why ``value`` cannot be stored, or ``None`` when it can (``max_bytes`` None: no limit)."""
    size = _utf8_size(value)
    if size is None:
        return "the value is not valid UTF-8"
    if max_bytes is not None and size > max_bytes:
        return f"the value is {size} bytes of UTF-8; the limit is {max_bytes}"
    return None


def _utf8_size(text: str) -> int | None:
    """Bytes of UTF-8, or ``None`` for text that has no UTF-8 form (lone surrogates)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


class StorageKey(fields.Field[str]):
    """The key of a single-key call: refused (400) when it cannot be a key."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, NotUtf8):
            raise ValidationError("the key is not valid UTF-8")
        problem = key_problem(str(value), limits()["key_max_bytes"])
        if problem:
            raise ValidationError(problem)
        return str(value)


class StoredValue(fields.Field[str]):
    """The value of a single set: refused (400) when it cannot be stored."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, NotUtf8):
            raise ValidationError("the body is not valid UTF-8")
        problem = value_problem(str(value), limits()["value_max_bytes"])
        if problem:
            raise ValidationError(problem)
        return str(value)


@dataclass(frozen=True, slots=True)
class KeySelection:
    keys: list[str]
    """Every key of the request, as given: the answer has one entry for each."""
    valid: tuple[str, ...]
    """Those that can be keys: only these go to Elasticsearch."""


class KeyList(fields.Field[KeySelection]):
    """A JSON array of strings; keys that cannot be keys are answered, not refused."""

    default_error_messages = {"invalid": "the body must be a JSON array of strings"}  # noqa: RUF012

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> KeySelection:
        if not isinstance(value, list) or not all(isinstance(key, str) for key in value):
            raise self.make_error("invalid")
        max_bytes = limits()["key_max_bytes"]
        valid = tuple(key for key in value if key_problem(key, max_bytes) is None)
        return KeySelection(value, valid)


class PairMap(fields.Field[dict[str, str | None]]):
    """A JSON object of key -> value, with values taken as the original service took them.

    Its JSON library turned numbers and booleans into their JSON text (``5`` is stored as
    ``"5"``, ``true`` as ``"true"``). ``null``, objects and arrays are no values, and pairs
    whose key or value is over its limit cannot be stored: such a pair maps to ``None`` here
    and is answered ``false``, not written.
    """

    default_error_messages = {"invalid": "the body must be a JSON object"}  # noqa: RUF012

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> dict[str, str | None]:
        if not isinstance(value, Mapping):
            raise self.make_error("invalid")
        allowed = limits()
        pairs: dict[str, str | None] = {}
        for key, item in value.items():
            text = _as_value(item)
            storable = (
                text is not None
                and key_problem(key, allowed["key_max_bytes"]) is None
                and value_problem(text, allowed["value_max_bytes"]) is None
            )
            pairs[key] = text if storable else None
        return pairs


def _as_value(item: object) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, bool | int | float):
        return json.dumps(item)
    return None


MAX_PAGE = 10_000
"""Most keys in one page of a listing by prefix."""


class GetQuerySchema(Schema):
    """``GET /get/<id>/<key>``: a blocking read waits for a change of the ``If-None-Match``
    version."""

    wait = Duration(
        metadata={
            "description": "With If-None-Match: wait up to this long (ms, or with a unit such "
            "as 30s) for the key to change; 304 when it did not (at most app.watch.max-wait)"
        }
    )

    @validates("wait")
    def _within_the_longest_wait(self, value: float, **kwargs: Any) -> None:
        longest = limits()["max_wait_s"]
        if not 0 < value <= longest:
            raise ValidationError(
                f"must be more than 0 and at most {longest:g} s (app.watch.max-wait)"
            )


class KeyListQuerySchema(Schema):
    """``GET /list/<id>`` by prefix in pages; without any of these, every key (the original)."""

    prefix = fields.String(metadata={"description": "Only keys that start with this"})
    after = fields.String(
        metadata={"description": "Only keys after this one (the last key of the page before)"}
    )
    limit = QueryInteger(
        validate=validate.Range(min=1, max=MAX_PAGE),
        metadata={"description": f"At most this many keys (1 to {MAX_PAGE}); default: all"},
    )


KEY = StorageKey(required=True)
"""A single-key call's key, from the path."""

VALUE = StoredValue(required=True)
"""A single set's value, the body as text."""

KEYS = KeyList(required=True)
"""``POST /get/<id>`` and ``POST /delete/<id>``: the keys."""

PAIRS = PairMap(required=True)
"""``PUT /set/<id>``: key -> value (``None`` for a pair that cannot be stored)."""

KEYS_SPEC: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string"},
    "example": ["key1", "key2", "key3"],
}
PAIRS_SPEC: dict[str, Any] = {
    "type": "object",
    "description": "Key -> value. Numbers and booleans are stored as their JSON text; a pair "
    "whose value is null, an object or an array is answered false and not written",
    # Any JSON value: Swagger 2.0 cannot say "string, number or boolean" (no oneOf); the
    # description says what each kind of value becomes.
    "additionalProperties": {},
    "example": {"key1": "value1", "key2": "value2", "key3": "value3"},
}
VALUES_SPEC: dict[str, Any] = {
    "type": "object",
    "description": "Every requested key, with null where the storage has no such key",
    "additionalProperties": {"type": "string", "x-nullable": True},
    "example": {"key1": "value1", "key2": None, "key3": "value3"},
}
RESULTS_SPEC: dict[str, Any] = {
    "type": "object",
    "description": "Every key of the request, true where the operation succeeded",
    "additionalProperties": {"type": "boolean"},
    "example": {"key1": True, "key2": False, "key3": True},
}
KEY_LIST_SPEC: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string"},
    "example": ["key1", "key2", "key3"],
}
