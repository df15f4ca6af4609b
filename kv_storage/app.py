"""The application factory: routes, middlewares, the API spec and the long-lived resources."""

import copy
import logging
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp_apispec import setup_aiohttp_apispec

from kv_storage import __version__, wiring
from kv_storage.actors.watch import WakeAll
from kv_storage.answers import answer_head_like_get, keep_own_content_type
from kv_storage.app_keys import CONFIG, METRICS, SERVICE
from kv_storage.config import Config
from kv_storage.envelope import RoutePlans, envelope, finish_answer
from kv_storage.handlers import admin, docs, health, history, management, operations, storage
from kv_storage.handlers.openapi3 import as_openapi3
from kv_storage.handlers.spec import finish_spec
from kv_storage.metrics import Metrics
from kv_storage.wiring import Part, Service

logger = logging.getLogger(__name__)

SPEC_URL = "/api/docs/swagger.json"
"""The Swagger 2.0 document, as aiohttp-apispec builds it (for the tools that read 2.0)."""
OPENAPI_URL = "/api/docs/openapi.json"
"""The OpenAPI 3.0.3 document (``handlers.openapi3``): the Swagger UI's, and generators'."""
_OPENAPI = web.AppKey("openapi", dict[str, Any])


def _run_service(parts: Sequence[Part]) -> Callable[[web.Application], AsyncIterator[None]]:
    """One ``cleanup_ctx``: the whole service in one ``AsyncExitStack`` (``wiring.running``)."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        async with wiring.running(app[SERVICE], parts):
            yield

    return run


async def _answer_waiters(app: web.Application) -> None:
    """On SIGTERM, before aiohttp waits for the requests in flight: blocking reads answer
    now (304), so that the shutdown need not wait for their ``wait`` to pass."""
    watch = app[SERVICE].started_watch
    if watch is not None:  # None: the service did not get as far as starting it
        await watch.ask(WakeAll())


def create_app(config: Config, parts: Sequence[Part] = wiring.HTTP_SERVICE) -> web.Application:
    """The service as an aiohttp application; ``parts``: ``wiring.SERVE`` adds the start-up
    probe of Elasticsearch that ``kv-storage serve`` logs."""
    metrics = Metrics()
    plans = RoutePlans(metrics)
    app = web.Application(
        client_max_size=config.server.max_body_size,
        middlewares=[envelope(config, metrics, plans)],
    )
    app[CONFIG] = config
    app.on_response_prepare.append(finish_answer(plans))
    app[METRICS] = metrics
    app[SERVICE] = Service(
        config,
        request_timeout_s=config.app.request_timeout_s,
        transport_class=metrics.transport_class(),
    )
    app.cleanup_ctx.append(_run_service(parts))
    app.on_shutdown.append(_answer_waiters)
    health.add_routes(app)
    storage.add_routes(app)
    history.add_routes(app)
    management.add_routes(app)
    admin.add_routes(app)
    the_original_api = set(app.router.resources())
    operations.add_routes(app)
    if config.app.docs_enabled:
        _setup_api_spec(app)
        docs.add_routes(app)
    # /metrics, the Swagger UI and its spec are not the original's API: their types stay.
    keep_own_content_type(app, set(app.router.resources()) - the_original_api)
    answer_head_like_get(app)  # after the spec, which documents GET only
    return app


def _setup_api_spec(app: web.Application) -> None:
    """Builds the spec now, from the routes above, rather than while the app starts.

    aiohttp-apispec serves the document only; the Swagger UI it bundles is outdated
    (``handlers.docs`` serves a current one)."""
    _restore_handler_docs(app)
    with warnings.catch_warnings():
        # aiohttp-apispec keeps its own state under plain string keys.
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        setup_aiohttp_apispec(
            app,
            title="kv-storage",
            version=__version__,
            info={
                "description": (
                    "Key-value storages for Apache CloudStack, kept in Elasticsearch. "
                    "Storage calls are authorised by the storage's `Secret-Key` header."
                )
            },
            securityDefinitions=admin.SECURITY_DEFINITIONS,
            url=SPEC_URL,
            in_place=True,
        )
        finish_spec(app["swagger_dict"])
    app[_OPENAPI] = as_openapi3(app["swagger_dict"], admin_scheme=admin.ADMIN_SCHEME)
    app.router.add_get(OPENAPI_URL, _openapi_document)


async def _openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[_OPENAPI])


def _restore_handler_docs(app: web.Application) -> None:
    """aiohttp-apispec consumes the documentation its decorators leave on each handler (it
    pops the schemas and extends the parameters), so a second app in one process would lose
    its body schemas. Each app starts from a copy of the decorators' original documentation."""
    for route in app.router.routes():
        handler: Any = route.handler
        if not hasattr(handler, "__apispec__"):
            continue
        if not hasattr(handler, "__apispec_original__"):
            handler.__apispec_original__ = copy.deepcopy(handler.__apispec__)
        handler.__apispec__ = copy.deepcopy(handler.__apispec_original__)
        # A stable name per operation, for generated clients: the handler's own.
        handler.__apispec__.setdefault("operationId", handler.__name__)
