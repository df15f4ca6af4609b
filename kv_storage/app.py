"""The application factory: routes, middlewares, the API spec and the long-lived resources."""

import logging
import warnings
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp_apispec import setup_aiohttp_apispec

from kv_storage import __version__
from kv_storage.actors.cache import CacheActor
from kv_storage.actors.storage import StorageActor
from kv_storage.app_keys import CACHE_ACTOR, CONFIG, ES_CLIENT, INDEX_NAMES, STORAGE_ACTOR
from kv_storage.config import Config
from kv_storage.es.client import create_client
from kv_storage.es.data import DataStore, ScanSettings
from kv_storage.es.names import IndexNames
from kv_storage.es.registry import Registry
from kv_storage.handlers import health, storage
from kv_storage.handlers.spec import finish_spec
from kv_storage.middlewares import error_middleware, timeout_middleware
from kv_storage.validation import validation_middleware
from pipeline.sink import DroppingSink

logger = logging.getLogger(__name__)

SPEC_URL = "/api/docs/swagger.json"
SWAGGER_UI_PATH = "/api/docs"


async def _elasticsearch_client(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    client = create_client(config.elasticsearch, request_timeout_s=config.app.request_timeout_s)
    app[ES_CLIENT] = client
    yield
    await client.close()


async def _actors(app: web.Application) -> AsyncIterator[None]:
    config, client, names = app[CONFIG], app[ES_CLIENT], app[INDEX_NAMES]
    cache = CacheActor(registry=Registry(client, names), config=config.app.cache)
    scan = ScanSettings(
        page_size=config.elasticsearch.scroll_page_size,
        keep_alive=f"{round(config.elasticsearch.scroll_keep_alive_s * 1000)}ms",
    )
    storage = StorageActor(
        cache=cache,
        data=DataStore(client, names, scan),
        history=DroppingSink(),
        index_prefix=config.elasticsearch.index_prefix,
    )
    cache.start()
    storage.start()
    app[CACHE_ACTOR], app[STORAGE_ACTOR] = cache, storage
    yield
    # Requests are finished by now; stop the callers before what they call.
    await storage.stop()
    await cache.stop()


def create_app(config: Config) -> web.Application:
    app = web.Application(
        client_max_size=config.server.max_body_size,
        middlewares=[
            error_middleware,
            timeout_middleware(config.app.request_timeout_s),
            validation_middleware,
        ],
    )
    app[CONFIG] = config
    app[INDEX_NAMES] = IndexNames(config.elasticsearch.index_prefix)
    app.cleanup_ctx.append(_elasticsearch_client)
    app.cleanup_ctx.append(_actors)
    health.add_routes(app)
    storage.add_routes(app)
    _setup_api_spec(app)
    return app


def _setup_api_spec(app: web.Application) -> None:
    """Builds the spec now, from the routes above, rather than while the app starts."""
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
            url=SPEC_URL,
            swagger_path=SWAGGER_UI_PATH,
            in_place=True,
        )
        finish_spec(app["swagger_dict"])
