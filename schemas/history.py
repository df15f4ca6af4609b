"""Shapes of the history API: the search parameters, the page and scroll answers, and the
scroll continuation request, with every validation rule of the original service."""

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from schemas.fields import MAX_KEEP_ALIVE_MS, QueryInteger, StrictInteger
from schemas.storage import limits

OPERATIONS = ("set", "delete", "clear")
SORT_FIELDS = ("key", "value", "timestamp", "operation")
MAX_WINDOW = 10_000
"""Elasticsearch's default ``index.max_result_window``: the most one page or batch may hold."""


class CommaSeparated(fields.String):
    """``a,b,c`` in the query string; empty items are ignored. Documented as a string."""

    def _deserialize(  # type: ignore[override]
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> list[str]:
        text = super()._deserialize(value, attr, data, **kwargs)
        return [item for item in text.split(",") if item]


def _positive(description: str, **kwargs: Any) -> fields.Integer:
    return QueryInteger(
        validate=validate.Range(min=1), metadata={"description": description}, **kwargs
    )


class HistoryQuerySchema(Schema):
    keys = CommaSeparated(metadata={"description": "Comma-separated keys (any of them)"})
    operations = CommaSeparated(
        validate=validate.ContainsOnly(OPERATIONS),
        metadata={"description": "Comma-separated operations among set, delete and clear"},
    )
    start = _positive("Records with a timestamp (epoch ms) >= start")
    end = _positive("Records with a timestamp (epoch ms) <= end")
    sort = CommaSeparated(
        metadata={
            "description": "Comma-separated fields among key, value, timestamp and operation, "
            "each optionally prefixed with - for descending order (default: timestamp)"
        }
    )
    page = _positive("Page number, from 1; ignored when scroll is given", load_default=1)
    size = QueryInteger(
        validate=validate.Range(min=1, max=MAX_WINDOW),
        metadata={
            "description": "Records per page or scroll batch (default: app.default-page-size)"
        },
    )
    scroll = QueryInteger(
        validate=validate.Range(min=1, max=MAX_KEEP_ALIVE_MS),
        metadata={
            "description": "Scroll: the answer's scrollId stays valid this many ms "
            f"(at most {MAX_KEEP_ALIVE_MS}, 24 h)"
        },
    )

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        start, end = data.get("start"), data.get("end")
        if start is not None and end is not None and start > end:
            raise ValidationError("must not be greater than end", "start")
        directions: dict[str, bool] = {}
        for item in data.get("sort", []):
            field = item.removeprefix("-")
            if field not in SORT_FIELDS:
                raise ValidationError(
                    f"{item!r} is not a field to sort by; use {', '.join(SORT_FIELDS)}", "sort"
                )
            descending = item.startswith("-")
            if directions.setdefault(field, descending) != descending:
                raise ValidationError(f"{field} is asked in both directions", "sort")
        if data.get("scroll") is None:
            check_page_window(data.get("page", 1), data.get("size", limits()["default_page_size"]))


def check_page_window(page: int, size: int) -> None:
    """Refuses a page beyond the first ``MAX_WINDOW`` records, before Elasticsearch sees it.

    Elasticsearch refuses such a page too, but a huge ``page`` makes ``from + size`` overflow
    its int first, and that failure is not one a client can tell from an outage. A request
    that gives no size has the configured default (``LIMITS``).
    """
    if page * size > MAX_WINDOW:  # the page's last record, (page - 1) * size + size
        message = (
            f"page {page} of size {size} reaches beyond the first {MAX_WINDOW} records that "
            "paging can return; use scroll instead"
        )
        raise ValidationError({"page": [message]})  # named also when raised outside a schema


class HistoryItemSchema(Schema):
    key = fields.String(allow_none=True, metadata={"description": "null for clear"})
    value = fields.String(allow_none=True, metadata={"description": "null for delete and clear"})
    operation = fields.String(validate=validate.OneOf(OPERATIONS))
    timestamp = fields.Integer(metadata={"description": "When the request arrived, epoch ms"})


class HistoryPageSchema(Schema):
    total = fields.Integer(required=True, metadata={"description": "All matching records"})
    size = fields.Integer(required=True, metadata={"description": "Records in this answer"})
    page = fields.Integer(required=True)
    items = fields.List(fields.Nested(HistoryItemSchema), required=True)


class HistoryScrollSchema(Schema):
    total = fields.Integer(required=True, metadata={"description": "All matching records"})
    size = fields.Integer(required=True, metadata={"description": "Records in this answer"})
    scrollId = fields.String(
        required=True,
        metadata={
            "description": "Pass it to POST /history for the next batch; after the last "
            "batch, it answers batches with no items"
        },
    )
    items = fields.List(fields.Nested(HistoryItemSchema), required=True)


class HistorySearchAnswerSchema(Schema):
    """What ``GET /history/<id>`` answers: a page or the first batch of a scroll.

    Swagger 2.0 has no ``oneOf``: one shape that both satisfy, saying which field comes when.
    """

    class Meta:
        description = (
            "A page (no `scroll` parameter): `page` is given, `scrollId` is not. The first "
            "batch of a scroll (`scroll` parameter): `scrollId` is given, `page` is not."
        )

    total = fields.Integer(required=True, metadata={"description": "All matching records"})
    size = fields.Integer(required=True, metadata={"description": "Records in this answer"})
    page = fields.Integer(metadata={"description": "The page number; only in a page answer"})
    scrollId = fields.String(
        metadata={
            "description": "Only in a scroll answer: pass it to POST /history for the next batch"
        }
    )
    items = fields.List(fields.Nested(HistoryItemSchema), required=True)


class ScrollRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    scrollId = fields.String(required=True)
    timeout = StrictInteger(
        required=True,
        validate=validate.Range(min=1, max=MAX_KEEP_ALIVE_MS),
        metadata={
            "description": "The answer's scrollId stays valid this many ms "
            f"(at most {MAX_KEEP_ALIVE_MS}, 24 h)"
        },
    )
