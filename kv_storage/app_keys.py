"""Typed keys of everything the application object holds."""

from aiohttp import web
from elasticsearch import AsyncElasticsearch

from kv_storage.actors.cache import CacheActor
from kv_storage.actors.storage import StorageActor
from kv_storage.config import Config
from kv_storage.es.names import IndexNames

CONFIG = web.AppKey("config", Config)
INDEX_NAMES = web.AppKey("index_names", IndexNames)
ES_CLIENT = web.AppKey("es_client", AsyncElasticsearch)
CACHE_ACTOR = web.AppKey("cache_actor", CacheActor)
STORAGE_ACTOR = web.AppKey("storage_actor", StorageActor)
