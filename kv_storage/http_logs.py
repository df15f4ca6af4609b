"""The HTTP side of logging: the request id of each request, and the access log.

The request id comes from the client's ``X-Request-ID`` or is made here; the envelope
(``kv_storage.envelope``) sends it back in the same response header and puts it into every log
line the request causes (``kv_storage.logs``), also those written by the actors that work for it
(their work for a request runs in the request's task, as a plain call).
Logs and metrics name the route template, never a path with its ids and keys.
"""

import itertools
import re
import uuid

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

REQUEST_ID_HEADER = "X-Request-ID"

_ACCEPTED_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_made_ids = itertools.count()
_ID_PREFIX = uuid.uuid4().hex[:16]
"""Made ids are 32 hex digits: 16 random per process, then a count (no random bytes to draw
for every request: a system call each)."""
_ROUTE = web.RequestKey("route", str)

UNMATCHED = "unmatched"
"""The route of a request no route matched, and of one that never reached the router."""


def new_request_id(given: str | None) -> str:
    """The client's ``X-Request-ID`` when it is a sensible one, else a new id."""
    if given and _ACCEPTED_ID.match(given):
        return given
    return f"{_ID_PREFIX}{next(_made_ids):016x}"


def note_route(request: web.Request, template: str) -> None:
    """Records the route template of a request for the access log (``logged_route``)."""
    request[_ROUTE] = template


def route_of(request: web.Request) -> str:
    """The route template (``/get/{storage_id}/{key}``): what logs and metrics name, never a
    path, which holds storage ids and keys.

    Only for requests the application handles (middlewares, handlers): the router has resolved
    them. The access log takes what the envelope recorded instead (``logged_route``).
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
