"""How failures become answers, and the request's deadline (the envelope applies both to
every request: ``kv_storage.envelope``).

All errors leave the service as ``{"error": "<message>"}`` from one place, so handlers raise
and never build error answers themselves.
"""

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from marshmallow import ValidationError
from marshmallow.exceptions import SCHEMA

from kv_storage.errors import ServiceError
from kv_storage.es.errors import answer_status, classify, describe, is_elasticsearch_error
from kv_storage.http_logs import route_of
from kv_storage.logs import request_id

logger = logging.getLogger(__name__)

WHOLE_LOCATIONS = frozenset({"key", "value", "body"})
"""Request parts that are one value each: the key in the path, a single set's value, a bare
JSON body (``kv_storage.validation`` reads them)."""


class RequestTimeoutError(Exception):
    """The request took longer than ``app.request-timeout``."""


def error_body(message: str, status: int, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


_LOCATIONS = frozenset(
    {"querystring", "query", "json", "headers", "match_info", "path", "form", *WHOLE_LOCATIONS}
)
"""webargs nests messages under the location they were read from."""


def describe_validation_error(error: ValidationError) -> str:
    """``"size: Must be greater than or equal to 1."``, naming every offending field.

    A location that is one value (the key, the value, a bare JSON body) is not named: its
    field's own message says what is wrong (``the key is empty``); nor is a rule of a whole
    schema (marshmallow's ``_schema``: ``give If-Match or If-None-Match, not both``).
    """
    parts: list[str] = []

    def walk(messages: Any, path: str, whole: str | None = None) -> None:
        if isinstance(messages, Mapping):
            for field, nested in messages.items():
                name = str(field)
                if name == SCHEMA:
                    walk(nested, path)
                elif not path and whole is None and name in _LOCATIONS:
                    walk(nested, "", name if name in WHOLE_LOCATIONS else None)
                elif not path and name == whole:
                    walk(nested, "")
                else:
                    walk(nested, f"{path}.{name}" if path else name)
        elif isinstance(messages, list | tuple):
            texts = [str(item) for item in messages if not isinstance(item, Mapping | list)]
            if texts:
                parts.append(f"{path}: {' '.join(texts)}" if path else " ".join(texts))
            for item in messages:
                if isinstance(item, Mapping | list):
                    walk(item, path)
        else:
            parts.append(f"{path}: {messages}" if path else str(messages))

    walk(error.messages, "")
    return "; ".join(parts) or "invalid request"


def _http_exception_message(error: web.HTTPException) -> str:
    if isinstance(error, web.HTTPNotFound):
        return "no such endpoint"
    if isinstance(error, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(error.allowed_methods))
        return f"method {error.method} is not allowed here; allowed: {allowed}"
    text = (error.text or "").strip()
    return text if text and not text.startswith(str(error.status)) else error.reason


_STREAMING = web.RequestKey("streaming", web.StreamResponse)


async def start_streaming(request: web.Request, response: web.StreamResponse) -> None:
    """Sends the status line and headers of an answer whose body follows piece by piece.

    From then on a failure can no longer become an error answer: the error middleware cuts
    the connection instead, so the client sees an incomplete body rather than a second HTTP
    answer written into the first one's body.
    """
    await response.prepare(request)
    request[_STREAMING] = response


def answer_failure(request: web.Request, error: Exception) -> web.StreamResponse:
    """The error answer for what a request raised; a redirect (an ``HTTPException`` below 400)
    is raised again, for aiohttp to answer."""
    streaming: web.StreamResponse | None = request.get(_STREAMING)
    if streaming is None:
        return _error_answer(request, error)
    logger.error(
        "%s %s failed after its answer began; cutting the answer off: %s",
        request.method,
        route_of(request),
        _describe(error),
    )
    if request.transport is not None:
        request.transport.close()
    return streaming


def _error_answer(request: web.Request, error: Exception) -> web.StreamResponse:
    if isinstance(error, ServiceError):
        return error_body(error.message, error.status, error.headers)
    if isinstance(error, ValidationError):
        return error_body(describe_validation_error(error), 400)
    if isinstance(error, web.HTTPException):
        if error.status < 400:
            raise error
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return error_body(_http_exception_message(error), error.status, headers)
    route = route_of(request)
    if isinstance(error, RequestTimeoutError):
        logger.warning("%s %s: %s", request.method, route, error)
        return error_body(_with_request_id(str(error)), 500)
    if is_elasticsearch_error(error):
        logger.error("%s %s: %s", request.method, route, describe(error))
        return error_body(_with_request_id(classify(error)), answer_status(error))
    logger.exception("%s %s failed", request.method, route, exc_info=error)
    return error_body(_with_request_id("internal error of the service"), 500)


def _with_request_id(message: str) -> str:
    """Failures of Elasticsearch or of the service name the request, for finding its log."""
    return f"{message} (request id {request_id.get()})"


def _describe(error: Exception) -> str:
    return error.message if isinstance(error, ServiceError) else describe(error)


DEADLINE = web.RequestKey("deadline", asyncio.Timeout)
"""The request's deadline: ``app.request-timeout`` from its start."""


def extend_deadline(request: web.Request, timeout_s: float) -> None:
    """Gives a streaming answer ``timeout_s`` more: each batch, not the whole, is bounded."""
    request[DEADLINE].reschedule(asyncio.get_running_loop().time() + timeout_s)
