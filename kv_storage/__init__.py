"""kv-storage: key-value storages for Apache CloudStack, kept in Elasticsearch.

Importing the package loads nothing else: the command line loads what each command needs
(``kv_storage.app.create_app`` builds the HTTP service).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kv-storage")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
