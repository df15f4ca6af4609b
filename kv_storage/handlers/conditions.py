"""Conditional requests on single keys: ``If-Match`` and ``If-None-Match``, declared as the
headers schemas of the routes that take them (``aiohttp_apispec.headers_schema``), so that the
request validation (``kv_storage.validation``) loads them with every other part, after the
caller was authorised, and the API document lists them from the declaration.

Every write of a key changes its version (``kv_storage.model.Version``), which the answers of
a get and of a set carry as an ``ETag``. A client that read a version can write only if the
key is still at it (``If-Match``: compare-and-set), create a key only if it does not exist
(``If-None-Match: *``), or wait for the key to move on from a version (``If-None-Match`` with
``?wait=``). Elasticsearch checks the condition itself, in the same operation as the write
(``if_seq_no``/``if_primary_term``, or ``create``): never a read then a write. A header that
is not one of our tags is 400; a condition that does not hold is 412 and changes nothing.

Declared here, not in ``schemas/``: the schemas load the headers into ``kv_storage.model``'s
``Version`` and ``Condition`` (what the storage actor takes), and ``schemas`` may import
nothing of ``kv_storage`` (tests/test_layering.py: the model itself imports ``schemas``).
"""

from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, pre_load

from kv_storage.model import Condition, MalformedTagError, Version, parse_etag

IF_MATCH = "If-Match"
IF_NONE_MATCH = "If-None-Match"
"""Plain strings, not aiohttp's ``hdrs`` (case-insensitive ``istr``): they name the fields,
and so the parameters of the API document, which must be plain JSON."""


class EntityTag(fields.String):
    """One tag as an ``ETag`` of this service gave it: the version it names."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Version:  # type: ignore[override]
        try:
            return parse_etag(super()._deserialize(value, attr, data, **kwargs))
        except MalformedTagError as error:
            raise ValidationError(
                f'{error} (one tag, as an ETag header gave it, such as "1-42")'
            ) from None


class KnownVersion(Schema):
    """A get's: the version the client holds, or ``None``."""

    if_none_match = EntityTag(
        data_key=IF_NONE_MATCH,
        metadata={
            "description": "A version (an ETag): 304 while the key is at it; with `wait`, wait "
            "for a change"
        },
    )

    @post_load
    def _version(self, data: dict[str, Version], **kwargs: Any) -> Version | None:
        return data.get("if_none_match")


class WriteCondition(Schema):
    """A set's: the ``Condition`` of the write, or ``None`` for an unconditional one."""

    if_match = EntityTag(
        data_key=IF_MATCH,
        metadata={"description": "Only if the key is at this version (an ETag): compare-and-set"},
    )
    if_none_match = fields.String(
        data_key=IF_NONE_MATCH,
        metadata={"description": "`*`: only if the key does not exist (create)"},
    )

    @pre_load
    def _one_condition(self, headers: dict[str, str], **kwargs: Any) -> dict[str, str]:
        """Before the tag is read, as the service always answered (an error of the whole
        request, naming no header: the message names them)."""
        if_none_match = headers.get(IF_NONE_MATCH)
        if if_none_match is None:
            return headers
        if IF_MATCH in headers:
            raise ValidationError("give If-Match or If-None-Match, not both")
        if if_none_match.strip() != "*":
            raise ValidationError(
                "If-None-Match on a write takes only * (create the key if it does not exist)"
            )
        return headers

    @post_load
    def _condition(self, data: dict[str, Any], **kwargs: Any) -> Condition | None:
        if "if_match" in data:
            return Condition(version=data["if_match"])
        if "if_none_match" in data:
            return Condition(absent=True)
        return None


class DeleteCondition(WriteCondition):
    """A delete's: ``If-Match`` only; there is nothing to create."""

    if_none_match = fields.String(
        data_key=IF_NONE_MATCH,
        metadata={"description": "Not taken (400): a delete is conditional on If-Match only"},
    )

    @post_load
    def _condition(self, data: dict[str, Any], **kwargs: Any) -> Condition | None:
        condition: Condition | None = super()._condition(data, **kwargs)
        if condition is not None and condition.absent:
            raise ValidationError("If-None-Match does not apply to a delete; use If-Match")
        return condition
