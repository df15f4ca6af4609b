"""The API document in OpenAPI 3.0.3, made from the Swagger 2.0 one that aiohttp-apispec
builds from the handlers' declarations.

aiohttp-apispec (3.0.0b2, the only release that works with marshmallow 4) writes Swagger 2.0
only: it makes its apispec ``APISpec`` with ``openapi_version="2.0"`` fixed, and its
converters emit 2.0's shapes (body parameters, ``produces``). Its maintained fork,
aiohttp-apigami, writes 3.x from the same decorators but requires marshmallow below 4. So
the handlers keep declaring their documentation with aiohttp-apispec, and this module
translates the finished 2.0 document, which is a mechanical mapping (docs/design.md, "The
API document"):

- a body parameter becomes the ``requestBody``, with a media type per ``consumes``;
- every other parameter keeps its place, its type moved into a ``schema``;
- a response's schema goes under ``content``: ``text/plain`` for a string (a single value),
  ``application/json`` otherwise; response headers get a ``schema`` too;
- ``definitions`` become ``components/schemas`` (and every ``$ref`` follows),
  ``securityDefinitions`` ``components/securitySchemes``: the administration token as HTTP
  bearer, and the storages' ``Secret-Key`` header as an API key.
"""

import copy
from collections.abc import Mapping
from typing import Any

OPENAPI_VERSION = "3.0.3"
_SCHEMA_KEYS = frozenset(
    {
        "type",
        "format",
        "items",
        "enum",
        "default",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "multipleOf",
        "example",
    }
)
_PARAMETER_KEYS = frozenset({"name", "in", "required", "description", "deprecated"})
SECRET_KEY_SCHEME = "SecretKey"


def as_openapi3(swagger: Mapping[str, Any], *, admin_scheme: str) -> dict[str, Any]:
    """The 3.0.3 document of the Swagger 2.0 ``swagger``; ``admin_scheme``: the name of the
    administration token's security definition (turned into HTTP bearer)."""
    document = _references(copy.deepcopy(dict(swagger)))
    schemes: dict[str, Any] = {}
    for name, definition in document.pop("securityDefinitions", {}).items():
        if name == admin_scheme:
            schemes[name] = {
                "type": "http",
                "scheme": "bearer",
                "description": "The administration token (admin.token)",
            }
        else:
            schemes[name] = definition
    schemes[SECRET_KEY_SCHEME] = {
        "type": "apiKey",
        "in": "header",
        "name": "Secret-Key",
        "description": "The storage's secret key (each operation also lists the header)",
    }
    paths = {
        path: {method: _operation(op) for method, op in operations.items()}
        for path, operations in document.pop("paths", {}).items()
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": document.get("info", {}),
        "paths": paths,
        "components": {
            "schemas": document.pop("definitions", {}),
            "securitySchemes": schemes,
        },
    }


def _references(node: Any) -> Any:
    """Every ``$ref`` to ``#/definitions/`` pointed at ``#/components/schemas/``."""
    if isinstance(node, dict):
        return {
            key: (
                value.replace("#/definitions/", "#/components/schemas/", 1)
                if key == "$ref" and isinstance(value, str)
                else _references(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_references(item) for item in node]
    return node


def _operation(operation: Mapping[str, Any]) -> dict[str, Any]:
    consumes = operation.get("consumes") or ["application/json"]
    converted: dict[str, Any] = {
        key: value
        for key, value in operation.items()
        if key not in ("parameters", "responses", "consumes", "produces")
    }
    parameters = []
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "body":
            converted["requestBody"] = {
                "required": bool(parameter.get("required", False)),
                **({"description": parameter["description"]} if "description" in parameter else {}),
                "content": {media: {"schema": parameter.get("schema", {})} for media in consumes},
            }
            continue
        parameters.append(_parameter(parameter))
    if parameters:
        converted["parameters"] = parameters
    if any(p.get("in") == "header" and p.get("name") == "Secret-Key" for p in parameters):
        converted.setdefault("security", [{SECRET_KEY_SCHEME: []}])
    converted["responses"] = {
        status: _response(response) for status, response in operation.get("responses", {}).items()
    }
    return converted


def _parameter(parameter: Mapping[str, Any]) -> dict[str, Any]:
    converted = {key: value for key, value in parameter.items() if key in _PARAMETER_KEYS}
    schema = dict(parameter.get("schema") or {})
    schema.update({key: value for key, value in parameter.items() if key in _SCHEMA_KEYS})
    converted["schema"] = schema or {"type": "string"}
    if parameter.get("collectionFormat") == "csv":
        converted.update(style="form", explode=False)
    return converted


def _response(response: Mapping[str, Any]) -> dict[str, Any]:
    converted: dict[str, Any] = {"description": response.get("description", "")}
    if "headers" in response:
        converted["headers"] = {
            name: {
                **({"description": header["description"]} if "description" in header else {}),
                "schema": {k: v for k, v in header.items() if k in _SCHEMA_KEYS}
                or {"type": "string"},
            }
            for name, header in response["headers"].items()
        }
    schema = response.get("schema")
    if schema is not None:
        media = "text/plain" if schema.get("type") == "string" else "application/json"
        converted["content"] = {media: {"schema": schema}}
    return converted
