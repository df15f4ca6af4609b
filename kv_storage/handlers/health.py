"""``GET /health``: liveness without ``detailed``, the Elasticsearch checks with it."""

from aiohttp import web
from aiohttp_apispec import docs, querystring_schema

from kv_storage.app_keys import CONFIG, SERVICE
from kv_storage.es.health import HEALTHY, UNHEALTHY, check_components
from kv_storage.handlers.spec import error_answers
from kv_storage.validation import validated
from schemas.health import HealthQuerySchema, HealthSchema

_CHECK_SHARE_OF_TIMEOUT = 0.8
"""The checks must finish before the request timeout, leaving time to answer."""

_health_schema = HealthSchema()


@docs(
    tags=["health"],
    summary="Check the service's health",
    description=(
        "Without `detailed`, answers 200 with an empty body while the service runs. With "
        "`detailed=true`, also checks that the storage registry index and the data and "
        "history templates exist in Elasticsearch."
    ),
    produces=["application/json", "text/plain"],
    responses={
        200: {"description": "Healthy (a body only with `detailed=true`)", "schema": HealthSchema},
        **error_answers(None, (400, "`detailed` is not a boolean")),
        # Not an error body: the checks, one of which failed.
        500: {"description": "Unhealthy: at least one check failed", "schema": HealthSchema},
    },
)
@querystring_schema(HealthQuerySchema)
async def health(request: web.Request) -> web.Response:
    if not validated(request, "querystring")["detailed"]:
        return web.Response(status=200, content_type="text/plain")
    timeout_s = request.app[CONFIG].app.request_timeout_s * _CHECK_SHARE_OF_TIMEOUT
    checks = await check_components(
        request.app[SERVICE].client, request.app[SERVICE].names, timeout_s=timeout_s
    )
    healthy = all(check.status == HEALTHY for check in checks)
    body = _health_schema.dump({"status": HEALTHY if healthy else UNHEALTHY, "checks": checks})
    return web.json_response(body, status=200 if healthy else 500)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health, allow_head=False)
