"""The one middleware every request passes, and the one hook every answer passes.

In order, for each request: a request id (the client's ``X-Request-ID`` or a new one, in every
log line the request causes), the deadline (``app.request-timeout``), the administration token
on ``/admin/``, the storage's ``Secret-Key`` on storage routes (``handlers.access``), with the
content type checked between its presence and the storage's lookup, then the other declared
parts of the request (``kv_storage.validation``), the handler; whatever fails becomes
an error answer (``kv_storage.middlewares``); the answer is counted and timed. Then the hook
gives the answer the headers every answer carries (``kv_storage.headers``) and the original's
content type (``kv_storage.answers``).

One layer rather than one middleware per concern: each layer was a coroutine that every
resumption of the handler passes through, and a get resumes several times. What the layer
needs to know about a route (its template for logs and metrics, which checks apply, the
headers of its answers, its latency series) is worked out once per route, the first time the
route is asked for, and kept in a ``RoutePlan``.
"""

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from kv_storage.actors.storage import StorageClosedError
from kv_storage.answers import answer_as_the_original
from kv_storage.app_keys import KEEPS_OWN_CONTENT_TYPE, SERVICE
from kv_storage.config import Config
from kv_storage.es import waits
from kv_storage.handlers.access import (
    authorise_request,
    closed_answer,
    is_storage_route,
    required_secret,
)
from kv_storage.handlers.admin import ADMIN_PREFIX, admin_check
from kv_storage.headers import security_headers
from kv_storage.http_logs import REQUEST_ID_HEADER, UNMATCHED, new_request_id, note_route
from kv_storage.logs import request_id
from kv_storage.metrics import Metrics
from kv_storage.middlewares import DEADLINE, RequestTimeoutError, answer_failure
from kv_storage.validation import RouteValidation, limits_of, route_validation

_REQUEST_ID = web.RequestKey("request_id", str)


@dataclass(slots=True)
class RoutePlan:
    """What every request of one route needs, worked out once."""

    template: str
    """The route template (``/get/{storage_id}/{key}``): logs and metrics never name a path."""
    admin: bool | None
    """Whether the administration token is needed; ``None``: by the path (no route matched:
    a 404 under ``/admin/`` is the token's 401 first)."""
    storage: bool
    """A storage route: its caller must hold the storage's secret."""
    validation: RouteValidation | None
    """What its requests must be (``None``: nothing declared)."""
    headers: Mapping[str, str]
    """The security headers of its answers."""
    own_content_type: bool
    """Not the original's API (``/metrics``, the Swagger UI): its content type stays."""
    latency: Any
    count: Callable[[int], Any]
    """The counter of its answers with a status."""
    counts: dict[int, Any] = field(default_factory=dict)


_PLAN = web.RequestKey("route_plan", RoutePlan)


class RoutePlans:
    """A plan per route, made when the route is first asked for: routes may be added after
    the application is made (tests do), and a request no route matched gets the plan of its
    method under ``unmatched``."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._plans: dict[web.AbstractRoute, RoutePlan] = {}
        self._unmatched: dict[str, RoutePlan] = {}

    def of(self, request: web.Request) -> RoutePlan:
        match_info = request.match_info
        route = match_info.route
        plan = self._plans.get(route)
        if plan is not None:
            return plan
        if match_info.http_exception is not None or route.resource is None:
            # aiohttp makes a new route for each request it answers 404 or 405.
            method = request.method
            plan = self._unmatched.get(method)
            if plan is None:
                plan = self._unmatched[method] = self._make(request, UNMATCHED, None)
            return plan
        plan = self._plans[route] = self._make(request, route.resource.canonical, route)
        return plan

    def _make(
        self, request: web.Request, template: str, route: web.AbstractRoute | None
    ) -> RoutePlan:
        handler = route.handler if route is not None else None
        resource = route.resource if route is not None else None
        requests, latency = self._metrics.requests, self._metrics.latency
        method = request.method

        def count(status: int) -> Any:
            return requests.labels(method, template, str(status))

        return RoutePlan(
            template=template,
            admin=template.startswith(ADMIN_PREFIX) if route is not None else None,
            storage=is_storage_route(handler),
            validation=route_validation(handler, storage_route=is_storage_route(handler)),
            headers=security_headers(template),
            own_content_type=resource is not None
            and resource in request.app[KEEPS_OWN_CONTENT_TYPE],
            latency=latency.labels(method, template),
            count=count,
        )


def envelope(config: Config, metrics: Metrics, plans: RoutePlans) -> Middleware:
    timeout_s = config.app.request_timeout_s
    is_admin = admin_check(config.admin.token)
    limits = limits_of(config)
    perf_counter = time.perf_counter

    async def checked(
        request: web.Request, handler: Handler, plan: RoutePlan
    ) -> web.StreamResponse:
        """The checks, in the order of ``handlers.access``, then the handler."""
        if plan.admin or (plan.admin is None and request.path.startswith(ADMIN_PREFIX)):
            is_admin(request)
        validation = plan.validation
        secret = required_secret(request) if plan.storage else None
        if validation is not None:
            validation.check_content_type(request)
        if secret is not None:
            await authorise_request(request, secret)
        if validation is not None:
            await validation.load(request, limits)
        try:
            return await handler(request)
        except StorageClosedError as closed:
            raise await closed_answer(request.app[SERVICE].cache, closed) from None

    async def answered(
        request: web.Request, handler: Handler, plan: RoutePlan
    ) -> web.StreamResponse:
        """Within the deadline; what fails, as an error answer."""
        deadline = asyncio.timeout(timeout_s)
        request[DEADLINE] = deadline
        elasticsearch = waits.track()
        try:
            async with deadline:
                return await checked(request, handler, plan)
        except TimeoutError as error:
            if not deadline.expired():
                return answer_failure(request, error)
            cause = ": Elasticsearch did not answer in time" if elasticsearch.waiting else ""
            late = RequestTimeoutError(
                f"the request was not processed within {timeout_s:g} s{cause}"
            )
            return answer_failure(request, late)
        except Exception as error:
            return answer_failure(request, error)

    @web.middleware
    async def every_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = perf_counter()
        plan = plans.of(request)
        identifier = new_request_id(request.headers.get(REQUEST_ID_HEADER))
        request[_REQUEST_ID] = identifier
        request[_PLAN] = plan
        note_route(request, plan.template)
        token = request_id.set(identifier)
        status = 500
        try:
            response = await answered(request, handler, plan)
            status = response.status
            return response
        except web.HTTPException as passed_on:  # a redirect: aiohttp answers it
            status = passed_on.status
            raise
        finally:
            counted = plan.counts.get(status)
            if counted is None:
                counted = plan.counts[status] = plan.count(status)
            counted.inc()
            plan.latency.observe(perf_counter() - started)
            request_id.reset(token)

    return every_request


def finish_answer(plans: RoutePlans) -> Callable[[web.Request, web.StreamResponse], Any]:
    """``on_response_prepare``: runs once the answer's own headers are set, for every answer
    of a request that reached the router (handlers, errors, streamed answers, static files)."""

    async def finish(request: web.Request, response: web.StreamResponse) -> None:
        plan = request.get(_PLAN) or plans.of(request)
        headers = response.headers
        headers.popall(hdrs.SERVER, None)
        identifier = request.get(_REQUEST_ID)
        if identifier is not None:
            headers[REQUEST_ID_HEADER] = identifier
        headers.update(plan.headers)
        if not plan.own_content_type:
            answer_as_the_original(request, response)

    return finish
