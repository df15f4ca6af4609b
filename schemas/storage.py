"""Shapes of the key/value endpoints, as the original service's clients send and expect them.

Bodies of these endpoints are bare JSON arrays and maps (not objects with named fields), so
they are described by marshmallow fields rather than schemas; ``*_SPEC`` is the same shape in
the API document.
"""

from typing import Any

from marshmallow import fields

KEYS = fields.List(fields.String(), required=True)
"""``POST /get/<id>`` and ``POST /delete/<id>``: the keys."""

PAIRS = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
"""``PUT /set/<id>``: key -> value."""

KEYS_SPEC: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string"},
    "example": ["key1", "key2", "key3"],
}
PAIRS_SPEC: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {"type": "string"},
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
