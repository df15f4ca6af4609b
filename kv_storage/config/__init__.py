"""Configuration: one validated, immutable object built at start-up and passed in."""

from kv_storage.config.loader import CONFIG_PATH_ENV, ConfigError, load_config
from kv_storage.config.model import (
    AdminConfig,
    AppConfig,
    BatchLimits,
    CacheConfig,
    Config,
    ElasticsearchConfig,
    ServerConfig,
    revocation_s,
)
from kv_storage.config.properties import PROPERTIES, Property
from pipeline.config import HistoryConfig

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
    "ServerConfig",
    "load_config",
    "revocation_s",
]
