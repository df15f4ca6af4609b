"""The application factory: routes, middlewares, the API spec and the long-lived resources."""

import logging
import warnings
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp_apispec import setup_aiohttp_apispec

from kv_storage import __version__
from kv_storage.app_keys import CONFIG, ES_CLIENT, INDEX_NAMES
from kv_storage.config import Config
from kv_storage.es.client import create_client
from kv_storage.es.names import IndexNames
from kv_storage.handlers import health
from kv_storage.middlewares import error_middleware, timeout_middleware
from kv_storage.validation import validation_middleware

logger = logging.getLogger(__name__)

SPEC_URL = "/api/docs/swagger.json"
SWAGGER_UI_PATH = "/api/docs"


async def _elasticsearch_client(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    client = create_client(config.elasticsearch, request_timeout_s=config.app.request_timeout_s)
    app[ES_CLIENT] = client
    yield
    await client.close()


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
    health.add_routes(app)
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
