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
_ROUTE = web.RequestKey("route", str)

UNMATCHED = "unmatched"
"""The route of a request no route matched, and of one that never reached the router."""


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    identifier = (
        given if given and _ACCEPTED_ID.match(given) else f"{_ID_PREFIX}{next(_made_ids):016x}"
    )
    request[_REQUEST_ID] = identifier
    request[_ROUTE] = route_of(request)
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


def route_of(request: web.Request) -> str:
    """The route template (``/get/{storage_id}/{key}``): what logs and metrics name, never a
    path, which holds storage ids and keys.

    Only for requests the application handles (middlewares, handlers): the router has resolved
    them. The access log takes what ``request_id_middleware`` recorded instead (``logged_route``).
    """
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def logged_route(request: web.BaseRequest) -> str:
    """The route a request that reached the application was given; ``unmatched`` for those
    aiohttp answered itself (a malformed request line or header: 400), which never reached the
    router. Their ``match_info`` must not be touched: aiohttp asserts it exists, and each such
    request logged a traceback instead of its access line."""
    route = request.get(_ROUTE)
    return route if isinstance(route, str) else UNMATCHED


class RouteAccessLogger(AbstractAccessLogger):
    """One line per request: client, method, route template, status, size and seconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %d %.6f',
            request.remote,
            request.method,
            logged_route(request),
            response.status,
            response.body_length,
            time,
        )
