"""The application factory: routes, middlewares, the API spec and the long-lived resources."""

import copy
import logging
import warnings
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp_apispec import setup_aiohttp_apispec

from kv_storage import __version__
from kv_storage.actors.batching import BatchLimits
from kv_storage.actors.cache import CacheActor
from kv_storage.actors.cache_update import CacheUpdateActor
from kv_storage.actors.expiry import ExpiryActor, sweep_overlap_s
from kv_storage.actors.history_query import HistoryQueryActor
from kv_storage.actors.lifecycle import LifecycleActor
from kv_storage.actors.storage import StorageActor
from kv_storage.answers import answer_head_like_get, as_the_original_answered, keep_own_content_type
from kv_storage.app_keys import (
    CACHE_ACTOR,
    CONFIG,
    ES_CLIENT,
    HISTORY_ACTOR,
    HISTORY_QUERY_ACTOR,
    INDEX_NAMES,
    LIFECYCLE_ACTOR,
    METRICS,
    STORAGE_ACTOR,
)
from kv_storage.config import Config
from kv_storage.es.client import create_client
from kv_storage.es.data import DataStore, ScanSettings
from kv_storage.es.history import HistoryStore
from kv_storage.es.lease import Lease, Mark
from kv_storage.es.names import IndexNames
from kv_storage.es.registry import Registry
from kv_storage.es.signing_keys import SigningKeys
from kv_storage.handlers import admin, docs, health, history, management, operations, storage
from kv_storage.handlers.access import storage_access_middleware
from kv_storage.handlers.spec import finish_spec
from kv_storage.headers import add_security_headers
from kv_storage.logs import add_request_id_header, request_id_middleware
from kv_storage.metrics import Metrics
from kv_storage.middlewares import error_middleware, timeout_middleware
from kv_storage.validation import validation_middleware
from pipeline.actor import HistoryActor

logger = logging.getLogger(__name__)

SPEC_URL = "/api/docs/swagger.json"
_HISTORY_SHUTDOWN_TIMEOUT_S = 10.0
"""How long the history pipeline may take to write what it holds when the service stops."""


async def _elasticsearch_client(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    client = create_client(
        config.elasticsearch,
        request_timeout_s=config.app.request_timeout_s,
        transport_class=app[METRICS].transport_class(),
    )
    app[ES_CLIENT] = client
    yield
    await client.close()


async def _history(app: web.Application) -> AsyncIterator[None]:
    """The history pipeline outlives the storage actors: it writes what they handed over."""
    config = app[CONFIG]
    history = HistoryActor(
        writer=HistoryStore(app[ES_CLIENT], app[INDEX_NAMES]),
        config=config.app.history,
        shutdown_timeout_s=_HISTORY_SHUTDOWN_TIMEOUT_S,
    )
    history.start()
    app[HISTORY_ACTOR] = history
    yield
    await history.stop()


async def _actors(app: web.Application) -> AsyncIterator[None]:
    config, client, names = app[CONFIG], app[ES_CLIENT], app[INDEX_NAMES]
    prefix = config.elasticsearch.index_prefix
    registry = Registry(client, names)
    cache = CacheActor(registry=registry, config=config.app.cache)
    scan = ScanSettings(
        page_size=config.elasticsearch.scroll_page_size,
        keep_alive=f"{round(config.elasticsearch.scroll_keep_alive_s * 1000)}ms",
    )
    data = DataStore(client, names, scan)
    storage = StorageActor(
        data=data,
        history=app[HISTORY_ACTOR],
        max_open_scans=config.elasticsearch.scroll_max_open,
        batch_limits=BatchLimits(
            max_operations=config.elasticsearch.batch.max_operations,
            max_bytes=config.elasticsearch.batch.max_bytes,
            max_in_flight=config.elasticsearch.batch.max_in_flight,
        ),
    )
    history_store = HistoryStore(client, names)
    history_query = HistoryQueryActor(
        cache=cache, store=history_store, keys=SigningKeys(client, names)
    )
    lifecycle = LifecycleActor(
        registry=registry,
        data=data,
        history=history_store,
        cache=cache,
        index_prefix=prefix,
        history_buffer=app[HISTORY_ACTOR],
        retry_for_s=config.app.request_timeout_s,
    )
    expiry = ExpiryActor(
        registry=registry,
        lifecycle=lifecycle,
        lease=Lease(client, names, name="expiry", duration_s=3 * config.app.expiry_interval_s),
        swept_until=Mark(client, names, name="expiry-swept-until"),
        interval_s=config.app.expiry_interval_s,
        sweep_overlap_s=sweep_overlap_s(config.app),
    )
    cache_update = CacheUpdateActor(
        registry=registry,
        cache=cache,
        update_time_s=config.app.cache.update_time_s,
        request_timeout_s=config.app.request_timeout_s,
    )
    # Started callees first, stopped callers first.
    actors = (cache, storage, history_query, lifecycle, expiry, cache_update)
    for actor in actors:
        actor.start()
    app[CACHE_ACTOR], app[STORAGE_ACTOR], app[HISTORY_QUERY_ACTOR] = cache, storage, history_query
    app[LIFECYCLE_ACTOR] = lifecycle
    yield
    for actor in reversed(actors):
        await actor.stop()


def create_app(config: Config) -> web.Application:
    metrics = Metrics()
    app = web.Application(
        client_max_size=config.server.max_body_size,
        middlewares=[
            metrics.middleware(),
            request_id_middleware,
            error_middleware,
            timeout_middleware(config.app.request_timeout_s),
            admin.admin_guard(config.admin.token),
            storage_access_middleware,
            validation_middleware,
        ],
    )
    app[CONFIG] = config
    app.on_response_prepare.append(add_request_id_header)
    app.on_response_prepare.append(as_the_original_answered)
    app.on_response_prepare.append(add_security_headers)
    app[METRICS] = metrics
    app[INDEX_NAMES] = IndexNames(config.elasticsearch.index_prefix)
    app.cleanup_ctx.append(_elasticsearch_client)
    app.cleanup_ctx.append(_history)
    app.cleanup_ctx.append(_actors)
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
