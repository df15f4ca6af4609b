"""Validates each request against the schemas its handler declares for the API spec, and reads
request bodies within their bounds.

The handlers' ``aiohttp_apispec`` decorators (``querystring_schema``, ``request_schema``, ...)
name one schema per location; this middleware parses every location with webargs before the
handler runs and keeps the results under a typed request key. A failure is a marshmallow
``ValidationError``, which the error middleware answers with 400.

Bodies are read only here and only after the caller was authorised (the middlewares before
this one decide that), and never beyond a bound: a JSON body over
``server.max-json-body-size`` is refused with 413 as soon as its size is known, before it is
parsed, so that nobody can make the service parse many megabytes of JSON.
"""

import json
import re
from typing import Any, NoReturn

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from marshmallow import EXCLUDE, Schema, ValidationError
from webargs import core
from webargs.aiohttpparser import AIOHTTPParser

from kv_storage.app_keys import CONFIG
from kv_storage.errors import BadRequestError, PayloadTooLargeError

_VALIDATED = web.RequestKey("validated", dict[str, Any])

_CHUNK_BYTES = 64 * 1024


async def read_body(request: web.Request, max_bytes: int, *, what: str = "body") -> bytes:
    """The whole body, refused with 413 once it is known to exceed ``max_bytes``.

    A declared ``Content-Length`` over the bound is refused before a byte is read; a chunked
    body is read only up to the bound.
    """
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise _too_large(what, max_bytes)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(what, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(what: str, max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the {what} is larger than {max_bytes} bytes")


def require_content_type(request: web.Request, expected: str) -> None:
    """Media-type parameters such as ``; charset=utf-8`` are fine."""
    if request.content_type != expected:
        given = request.headers.get("Content-Type", "none")
        raise BadRequestError(f"the content type must be {expected}, not {given}")


_LONG_NUMBER = re.compile(rb"\d{19}")
"""Digits enough to pass 2^63: orjson would read such an integer as a float."""


def parse_json(raw: bytes) -> Any:
    """JSON text as Python values; 400 for anything that is not JSON in UTF-8.

    orjson is fast and refuses nesting deeper than 1024 levels. The standard library reads
    what orjson refuses (to word the error with a position) and bodies with integers that
    orjson would round (a multi-set value of 20 digits must be stored as written). Both run
    on at most ``server.max-json-body-size`` bytes.
    """
    if not _LONG_NUMBER.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequestError("the body is not valid UTF-8") from None
    except RecursionError:
        raise BadRequestError("the body is JSON nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, or a number of thousands of digits
        raise BadRequestError(f"the body is not valid JSON: {error}") from None


async def read_json(request: web.Request) -> Any:
    """The body of a request that must be JSON, within ``server.max-json-body-size`` (and
    ``server.max-body-size``, the bound of every body)."""
    require_content_type(request, "application/json")
    server = request.app[CONFIG].server
    limit = min(server.max_json_body_size, server.max_body_size)
    return parse_json(await read_body(request, limit, what="JSON body"))


class _BoundedParser(AIOHTTPParser):
    """webargs' parser, reading JSON bodies through ``read_json`` (bounded, and with the
    same answers to bad JSON as every other route)."""

    async def load_json(self, req: web.Request, schema: Schema) -> Any:
        if not req.body_exists:
            return core.missing
        return await read_json(req)


_parser = _BoundedParser()


@_parser.error_handler
def _raise_validation_error(
    error: ValidationError,
    request: web.Request,
    schema: Schema,
    *,
    error_status_code: int | None,
    error_headers: dict[str, str] | None,
) -> NoReturn:
    raise error


@web.middleware
async def validation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    declared = getattr(request.match_info.handler, "__schemas__", None)
    if declared:
        request[_VALIDATED] = {
            entry["location"]: await _parser.parse(
                entry["schema"], request, location=entry["location"], unknown=_unknown(entry)
            )
            for entry in declared
        }
    return await handler(request)


def _unknown(entry: dict[str, Any]) -> str | None:
    """Query parameters the handler does not know are ignored, as the original did (a
    monitor's cache-buster must not fail a health check); bodies keep their schema's rule."""
    return EXCLUDE if entry["location"] in ("querystring", "query") else None


def validated(request: web.Request, location: str) -> Any:
    """What the handler's schema for ``location`` (``querystring``, ``json``, ...) loaded."""
    return request[_VALIDATED][location]
