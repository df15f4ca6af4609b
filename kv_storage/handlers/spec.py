"""Pieces of the API document shared by operations, and those that aiohttp-apispec cannot
express by itself; every error answer of the document is made here (``error_answers``).

The original's bodies are bare JSON maps and arrays, which no marshmallow schema describes;
aiohttp-apispec would try to convert any response ``schema`` into one. Such responses carry
their JSON schema under ``RAW_SCHEMA`` instead, and ``finish_spec`` moves it into place once
the document is built. For the same reason the parts that ``kv_storage.validation.validates``
declares (the key in the path, a single set's value, a bare JSON body) are described here.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from aiohttp_apispec import docs

from kv_storage.handlers.access import SECRET_KEY_HEADER
from schemas.errors import ErrorSchema

RAW_SCHEMA = "x-raw-schema"

SECRET_KEY_PARAMETER: dict[str, Any] = {
    "in": "header",
    "name": SECRET_KEY_HEADER,
    "required": True,
    "type": "string",
    "description": "The storage's secret key",
}


SECRET_KEY_ERRORS: Mapping[int, str] = {
    401: "The Secret-Key header is missing or wrong",
    404: "The storage does not exist",
}
"""What every operation authorised by a storage's secret may answer."""
ADMIN_ERRORS: Mapping[int, str] = {
    401: "The bearer token is missing or wrong",
    403: "The administration API is disabled (no admin.token)",
}
"""What every operation of the administration API may answer."""
FAILED = "Elasticsearch or the service failed; the message names the cause"
TOO_LARGE = (
    413,
    "The body is larger than server.max-body-size (a JSON body: server.max-json-body-size), "
    "or the request it makes is larger than Elasticsearch accepts",
)
PRECONDITION_FAILED = (
    412,
    "The condition does not hold (If-Match: the key is at another version or gone; "
    "If-None-Match: *: it exists); nothing changed",
)
INVALID_KEYS_BODY = (
    400,
    "The content type or body is invalid, or it has more than server.max-keys-per-request keys",
)
"""What the operations on several keys refuse."""


def error_answers(
    common: Mapping[int, str] | None, *own: tuple[int, str]
) -> dict[int, dict[str, Any]]:
    """An operation's error answers for the spec, each an ``ErrorSchema`` body: ``common``
    (``SECRET_KEY_ERRORS``, ``ADMIN_ERRORS`` or ``None``), then its ``own`` (which win over
    common ones of their status), and the 500 that any operation may answer."""
    texts = {**(common or {}), **dict(own)}
    texts.setdefault(500, FAILED)
    answers: dict[int, dict[str, Any]] = {}
    for status in sorted(texts):
        answers[status] = {"description": texts[status], "schema": ErrorSchema}
        if status in BUSY_STATUSES:
            answers[status]["headers"] = RETRY_AFTER_HEADER
    return answers


BUSY_STATUSES = frozenset({429, 503})
"""The answers that say "busy for now", each with when to try again."""
RETRY_AFTER_HEADER: dict[str, Any] = {
    "Retry-After": {"type": "integer", "description": "Seconds to wait before trying again"}
}


def storage_id_parameter(description: str = "The storage's id") -> dict[str, Any]:
    return {
        "in": "path",
        "name": "storage_id",
        "required": True,
        "type": "string",
        "description": description,
    }


KEY_PARAMETER: dict[str, Any] = {
    "in": "path",
    "name": "key",
    "required": True,
    "type": "string",
    "description": "The key, percent-encoded",
}
KEY_NOTE = (
    " Keys may hold any character: percent-encode them in the path (`/` as `%2F`, `.` and "
    "`..` as `%2E` and `%2E%2E`)."
)
"""The end of the description of every operation on a key in the path."""
ETAG_HEADER: dict[str, Any] = {
    "ETag": {
        "type": "string",
        "description": "The key's version, opaque: for If-Match and If-None-Match",
    }
}
"""The headers of an answer that carries a key's version."""


def body_parameter(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A body that no marshmallow schema describes (a text, a bare JSON array or map)."""
    return {"in": "body", "name": name, "required": True, "schema": schema}


def raw_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, RAW_SCHEMA: schema}


HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])


def storage_operation(
    tags: list[str],
    summary: str,
    *,
    answers: Mapping[int, dict[str, Any]],
    errors: Iterable[tuple[int, str]] = (),
    parameters: Iterable[dict[str, Any]] = (),
    **more: Any,
) -> Callable[[HandlerT], HandlerT]:
    """``docs`` of an operation authorised by a storage's secret: its ``Secret-Key`` and
    ``storage_id`` first, then its own ``parameters``; its ``answers`` of success, then
    ``error_answers`` with ``SECRET_KEY_ERRORS`` and its own ``errors``. ``more``: ``docs``'
    other arguments (``description``, ``consumes``, ``produces``)."""
    decorate: Callable[[HandlerT], HandlerT] = docs(
        tags=tags,
        summary=summary,
        parameters=[SECRET_KEY_PARAMETER, storage_id_parameter(), *parameters],
        responses={**answers, **error_answers(SECRET_KEY_ERRORS, *errors)},
        **more,
    )
    return decorate


def finish_spec(spec: dict[str, Any]) -> None:
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                if RAW_SCHEMA in response:
                    response["schema"] = response.pop(RAW_SCHEMA)
