"""A typed Python client of kv-storage, asynchronous (``AsyncClient``) and synchronous
(``Client``). It needs aiohttp only: none of the service's own dependencies.

    async with AsyncClient("http://localhost:8080") as kv:
        settings = kv.storage(storage_id, secret_key)
        await settings.set("mode", "blue")
        async for change in settings.watch("mode"):
            ...
"""

from kv_storage_client.aio import AsyncAdmin, AsyncClient, AsyncStorage
from kv_storage_client.errors import (
    BadRequestError,
    CompareAndSetError,
    ConflictError,
    ForbiddenError,
    KvStorageError,
    NotFoundError,
    PayloadTooLargeError,
    PreconditionFailedError,
    ServerError,
    TooManyRequestsError,
    UnauthorizedError,
    UnavailableError,
)
from kv_storage_client.models import (
    Change,
    Credentials,
    HistoryPage,
    HistoryRecord,
    StorageInfo,
    StorageType,
    Versioned,
)
from kv_storage_client.sync import Admin, Client, Storage

__all__ = [
    "Admin",
    "AsyncAdmin",
    "AsyncClient",
    "AsyncStorage",
    "BadRequestError",
    "Change",
    "Client",
    "CompareAndSetError",
    "ConflictError",
    "Credentials",
    "ForbiddenError",
    "HistoryPage",
    "HistoryRecord",
    "KvStorageError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PreconditionFailedError",
    "ServerError",
    "Storage",
    "StorageInfo",
    "StorageType",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnavailableError",
    "Versioned",
]
