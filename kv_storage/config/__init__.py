"""Configuration: one validated, immutable object built at start-up and passed in."""

from kv_storage.config.loader import CONFIG_PATH_ENV, ConfigError, load_config
from kv_storage.config.model import (
    AdminConfig,
    AppConfig,
    BatchLimits,
    CacheConfig,
    Config,
    ElasticsearchConfig,
    ScrollConfig,
    ServerConfig,
    revocation_s,
)
from kv_storage.config.properties import PROPERTIES
from pipeline.config import HistoryConfig
from schemas.settings import Property

__all__ = [
    "CONFIG_PATH_ENV",
    "PROPERTIES",
    "AdminConfig",
    "AppConfig",
    "BatchLimits",
    "CacheConfig",
    "Config",
    "ConfigError",
    "ElasticsearchConfig",
    "HistoryConfig",
    "Property",
    "ScrollConfig",
    "ServerConfig",
    "load_config",
    "revocation_s",
]
