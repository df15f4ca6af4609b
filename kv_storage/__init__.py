"""kv-storage: key-value storages for Apache CloudStack, kept in Elasticsearch."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kv-storage")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0"

from kv_storage.app import create_app

__all__ = ["__version__", "create_app"]
