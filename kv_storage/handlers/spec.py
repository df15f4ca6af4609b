"""Pieces of the API document that aiohttp-apispec cannot express by itself.

The original's bodies are bare JSON maps and arrays, which no marshmallow schema describes;
aiohttp-apispec would try to convert any response ``schema`` into one. Such responses carry
their JSON schema under ``RAW_SCHEMA`` instead, and ``finish_spec`` moves it into place once
the document is built.
"""

from typing import Any

from kv_storage.handlers.access import SECRET_KEY_HEADER

RAW_SCHEMA = "x-raw-schema"

SECRET_KEY_PARAMETER: dict[str, Any] = {
    "in": "header",
    "name": SECRET_KEY_HEADER,
    "required": True,
    "type": "string",
    "description": "The storage's secret key",
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
