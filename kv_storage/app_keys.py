"""Typed keys of everything the application object holds."""

from aiohttp import web

from kv_storage.config import Config
from kv_storage.metrics import Metrics
from kv_storage.wiring import Service

CONFIG = web.AppKey("config", Config)
SERVICE = web.AppKey("service", Service)
"""Everything the service runs (``kv_storage.wiring``): the handlers find each part there
(``request.app[SERVICE].storage``)."""
METRICS = web.AppKey("metrics", Metrics)
KEEPS_OWN_CONTENT_TYPE = web.AppKey("keeps_own_content_type", frozenset[web.AbstractResource])
"""The resources whose answers are not the original's API and keep their own content type."""
