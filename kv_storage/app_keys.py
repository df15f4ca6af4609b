"""Typed keys of everything the application object holds."""

from aiohttp import web
from elasticsearch import AsyncElasticsearch

from kv_storage.actors.cache import CacheActor
from kv_storage.actors.history_query import HistoryQueryActor
from kv_storage.actors.key_listing import KeyListingActor
from kv_storage.actors.lifecycle import LifecycleActor
from kv_storage.actors.storage import StorageActor
from kv_storage.actors.watch import WatchActor
from kv_storage.config import Config
from kv_storage.es.names import IndexNames
from kv_storage.metrics import Metrics
from kv_storage.wiring import Parts
from pipeline.actor import HistoryActor

CONFIG = web.AppKey("config", Config)
PARTS = web.AppKey("parts", Parts)
"""Everything the service runs (``kv_storage.wiring``); the keys below name the parts the
handlers use."""
METRICS = web.AppKey("metrics", Metrics)
INDEX_NAMES = web.AppKey("index_names", IndexNames)
ES_CLIENT = web.AppKey("es_client", AsyncElasticsearch)
CACHE_ACTOR = web.AppKey("cache_actor", CacheActor)
STORAGE_ACTOR = web.AppKey("storage_actor", StorageActor)
HISTORY_ACTOR = web.AppKey("history_actor", HistoryActor)
HISTORY_QUERY_ACTOR = web.AppKey("history_query_actor", HistoryQueryActor)
LIFECYCLE_ACTOR = web.AppKey("lifecycle_actor", LifecycleActor)
KEY_LISTING_ACTOR = web.AppKey("key_listing_actor", KeyListingActor)
WATCH_ACTOR = web.AppKey("watch_actor", WatchActor)
KEEPS_OWN_CONTENT_TYPE = web.AppKey("keeps_own_content_type", frozenset[web.AbstractResource])
"""The resources whose answers are not the original's API and keep their own content type."""
