"""Reads storages from the registry index, laid out as the original CloudStack plugin wrote it."""

from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from kv_storage.es.names import IndexNames
from kv_storage.model import Storage, StorageType

_FIELDS = ["type", "deleted", "history_enabled", "secret_key", "expiration_timestamp"]


class Registry:
    def __init__(self, client: AsyncElasticsearch, names: IndexNames) -> None:
        self._client = client
        self._names = names

    async def find(self, storage_id: str) -> Storage | None:
        """The live storage, or ``None`` when there is none or it is marked deleted."""
        try:
            document = await self._client.get(
                index=self._names.registry, id=storage_id, source_includes=_FIELDS
            )
        except NotFoundError:
            return None
        return _storage(storage_id, document["_source"])


def _storage(storage_id: str, source: dict[str, Any]) -> Storage | None:
    if source.get("deleted", False):
        return None
    try:
        storage_type = StorageType(str(source.get("type")))
    except ValueError:
        return None
    expiration = source.get("expiration_timestamp")
    return Storage(
        id=storage_id,
        type=storage_type,
        history_enabled=bool(source.get("history_enabled", False)),
        secret_key=str(source.get("secret_key") or ""),
        expiration_timestamp_ms=int(expiration) if expiration is not None else None,
    )
