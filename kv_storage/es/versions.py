"""The versions of keys, without their values: what the watch actor polls for, many keys of
many storages in one ``_mget``."""

from collections.abc import Sequence

from elasticsearch import AsyncElasticsearch

from kv_storage.es.names import IndexNames
from kv_storage.es.placement import place
from kv_storage.model import DocumentKey, Location, Version


class Versions:
    def __init__(self, client: AsyncElasticsearch, names: IndexNames) -> None:
        self._client = client
        self._names = names

    async def versions(self, keys: Sequence[DocumentKey]) -> dict[DocumentKey, Version | None]:
        if not keys:
            return {}
        specs = []
        for where in keys:
            placement = place(self._names, Location(where.storage_id, where.layout))
            spec = {"_index": placement.data_index, "_id": placement.data_id(where.key)}
            if placement.routing is not None:
                spec["routing"] = placement.routing
            specs.append(spec)
        answer = await self._client.mget(
            docs=specs,
            source=False,
            # _id keeps every document in the answer, in its place.
            filter_path=["docs._id", "docs.found", "docs._seq_no", "docs._primary_term"],
        )
        found: dict[DocumentKey, Version | None] = dict.fromkeys(keys)
        # The answer keeps the order of the documents asked for; a missing index answers its
        # items with an error and no "found": no such key.
        for where, document in zip(keys, answer.get("docs", []), strict=True):
            if document.get("found"):
                found[where] = Version(document["_primary_term"], document["_seq_no"])
        return found
