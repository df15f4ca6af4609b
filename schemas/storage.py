"""Shapes of the key/value endpoints, as the original service's clients send and expect them.

Bodies of these endpoints are bare JSON arrays and maps (not objects with named fields), so
they are described by marshmallow fields rather than schemas; ``*_SPEC`` is the same shape in
the API document.
"""

import json
from collections.abc import Mapping
from typing import Any

from marshmallow import fields


class KeyList(fields.Field[list[str]]):
    """A JSON array of strings, checked in one pass: a body may hold 10,000 keys, and a
    marshmallow round per key would cost more than the Elasticsearch request."""

    default_error_messages = {"invalid": "Not a JSON array of strings."}  # noqa: RUF012

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(key, str) for key in value):
            raise self.make_error("invalid")
        return value


class PairMap(fields.Field[dict[str, str | None]]):
    """A JSON object of key -> value, with values taken as the original service took them.

    Its JSON library turned numbers and booleans into their JSON text (``5`` is stored as
    ``"5"``, ``true`` as ``"true"``). ``null``, objects and arrays are no values: such a pair
    maps to ``None`` here and is answered ``false``, not written.
    """

    default_error_messages = {"invalid": "Not a JSON object."}  # noqa: RUF012

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> dict[str, str | None]:
        if not isinstance(value, Mapping):
            raise self.make_error("invalid")
        return {key: _as_value(item) for key, item in value.items()}


def _as_value(item: object) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, bool | int | float):
        return json.dumps(item)
    return None


KEYS = KeyList(required=True)
"""``POST /get/<id>`` and ``POST /delete/<id>``: the keys."""

PAIRS = PairMap(required=True)
"""``PUT /set/<id>``: key -> value (``None`` for a value that cannot be stored)."""

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
