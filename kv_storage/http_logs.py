"""The HTTP side of logging: the request id of each request, and the access log.

The request id comes from the client's ``X-Request-ID`` or is made here; it goes back in the
same response header and into every log line the request causes (``kv_storage.logs``), also
those written by the actors that work for it (they run each message in the sender's context).
Logs and metrics name the route template, never a path with its ids and keys.
"""

import itertools
import re
import uuid

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from kv_storage.logs import request_id

REQUEST_ID_HEADER = "X-Request-ID"

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
