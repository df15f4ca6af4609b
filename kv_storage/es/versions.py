"""The versions of keys, without their values: what the watch actor polls for, many keys of
many storages in one ``_mget``."""

from collections.abc import Sequence

from elasticsearch import AsyncElasticsearch

from kv_storage.es.names import IndexNames
from kv_storage.model import DocumentKey, Version


class Versions:
    def __init__(self, client: AsyncElasticsearch, names: IndexNames) -> None:
        self._client = client
        self._names = names

    async def versions(self, keys: Sequence[DocumentKey]) -> dict[DocumentKey, Version | None]:
        if not keys:
            return {}
        by_document = {(self._names.data(k.storage_id), k.key): k for k in keys}
        answer = await self._client.mget(
            docs=[{"_index": index, "_id": key} for index, key in by_document],
            source=False,
            filter_path=[
                "docs._index",
                "docs._id",
                "docs.found",
                "docs._seq_no",
                "docs._primary_term",
            ],
        )
        found: dict[DocumentKey, Version | None] = dict.fromkeys(keys)
        for document in answer.get("docs", []):
            # A missing index answers its items with an error and no "found": no such key.
            where = by_document.get((document.get("_index"), document.get("_id")))
            if where is not None and document.get("found"):
                found[where] = Version(document["_primary_term"], document["_seq_no"])
        return found
