"""Validates each request against the schemas its handler declares for the API spec.

The handlers' ``aiohttp_apispec`` decorators (``querystring_schema``, ``request_schema``, ...)
name one schema per location; this middleware parses every location with webargs before the
handler runs and keeps the results under a typed request key. A failure is a marshmallow
``ValidationError``, which the error middleware answers with 400.
"""

from typing import Any, NoReturn

from aiohttp import web
from aiohttp.typedefs import Handler
from marshmallow import EXCLUDE, Schema, ValidationError
from webargs.aiohttpparser import AIOHTTPParser

_VALIDATED = web.RequestKey("validated", dict[str, Any])

_parser = AIOHTTPParser()


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
