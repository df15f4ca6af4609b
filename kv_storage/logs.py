"""Structured logs: one JSON object (or one logfmt line) per record, with the request id.

The request id comes from the client's ``X-Request-ID`` or is made here; it goes back in the
same response header and into every log line the request causes, also those written by the
actors that work for it (they run each message in the sender's context).
"""

import contextvars
import itertools
import json
import logging
import re
import sys
import time
import uuid

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

REQUEST_ID_HEADER = "X-Request-ID"
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_ACCEPTED_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_made_ids = itertools.count()
_ID_PREFIX = uuid.uuid4().hex[:16]
"""Made ids are 32 hex digits: 16 random per process, then a count (no random bytes to draw
for every request: a system call each)."""
_REQUEST_ID = web.RequestKey("request_id", str)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    identifier = (
        given if given and _ACCEPTED_ID.match(given) else f"{_ID_PREFIX}{next(_made_ids):016x}"
    )
    request[_REQUEST_ID] = identifier
    token = request_id.set(identifier)
    try:
        return await handler(request)
    finally:
        request_id.reset(token)


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: also streamed answers, whose headers go before the handler ends."""
    identifier = request.get(_REQUEST_ID)
    if identifier is not None:
        response.headers[REQUEST_ID_HEADER] = identifier


def route_of(request: web.BaseRequest) -> str:
    """The route template (``/get/{storage_id}/{key}``): what logs and metrics name, never a
    path, which holds storage ids and keys."""
    match_info = getattr(request, "match_info", None)
    route = match_info.route if match_info is not None else None
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


class RouteAccessLogger(AbstractAccessLogger):
    """One line per request: client, method, route template, status, size and seconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %d %.6f',
            request.remote,
            request.method,
            route_of(request),
            response.status,
            response.body_length,
            time,
        )


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, object]:
    fields: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage(),
    }
    identifier = getattr(record, "request_id", None)
    if identifier:
        fields["request_id"] = identifier
    if record.exc_info:
        fields["error"] = formatter.formatException(record.exc_info)
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record, self), ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(
            f"{key}={_logfmt_value(value)}" for key, value in _fields(record, self).items()
        )


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not re.search(r'[\s="\\]', text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


FORMATTERS: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "logfmt": LogfmtFormatter}


def configure(log_format: str, level: int = logging.INFO) -> None:
    """The process's logging: one handler on standard error, in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[log_format]())
    handler.addFilter(_RequestIdFilter())
    handler.addFilter(_without_client_traceback)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The client logs every request at INFO (far too much) and node failures with a traceback;
    # a failing node is worth a line, its stack is not.
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)


def _without_client_traceback(record: logging.LogRecord) -> bool:
    if record.name.startswith("elastic_transport"):
        record.exc_info = None
        record.exc_text = None
    return True
