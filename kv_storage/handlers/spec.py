"""Pieces of the API document that aiohttp-apispec cannot express by itself.

The original's bodies are bare JSON maps and arrays, which no marshmallow schema describes;
aiohttp-apispec would try to convert any response ``schema`` into one. Such responses carry
their JSON schema under ``RAW_SCHEMA`` instead, and ``finish_spec`` moves it into place once
the document is built.
"""

from collections.abc import Mapping
from typing import Any

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


def error_answers(
    common: Mapping[int, str] | None, *own: tuple[int, str]
) -> dict[int, dict[str, Any]]:
    """An operation's error answers for the spec, each an ``ErrorSchema`` body: ``common``
    (``SECRET_KEY_ERRORS``, ``ADMIN_ERRORS`` or ``None``), then its ``own`` (which win over
    common ones of their status), and the 500 that any operation may answer."""
    texts = {**(common or {}), **dict(own)}
    texts.setdefault(500, FAILED)
    return {
        status: {"description": texts[status], "schema": ErrorSchema} for status in sorted(texts)
    }


def storage_id_parameter(description: str = "The storage's id") -> dict[str, Any]:
    return {
        "in": "path",
        "name": "storage_id",
        "required": True,
        "type": "string",
        "description": description,
    }


def raw_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, RAW_SCHEMA: schema}


def finish_spec(spec: dict[str, Any]) -> None:
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                if RAW_SCHEMA in response:
                    response["schema"] = response.pop(RAW_SCHEMA)
