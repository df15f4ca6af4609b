"""Which registry documents changed, in the order Elasticsearch gave the changes: by each
shard's sequence numbers, never by a writer's clock.

``last_updated`` is stamped by whoever writes (an instance, the command line, the CloudStack
plugin), with its own wall clock: a writer whose clock is behind stamps changes in the past,
where a poll by time never looks (a rotated secret went on working for ten minutes). Every
change of a document gets a ``_seq_no`` from its shard's primary instead, in the order the
shard applied them, whoever wrote it and whatever their clocks say.

A reader holds a ``Position``: per shard, the sequence number up to which it has seen every
change. It reads the shards' global checkpoints first (every change at or below one has been
applied on every in-sync copy), then refreshes the index, then asks for documents whose
``_seq_no`` is above its position: every change up to the checkpoints is visible by then, so
none is missed. Changes above the checkpoints that already show are reported again next
time, which costs a cache entry nothing. A new index (re-created: another uuid) or a
checkpoint below the position (a restore) makes the position unusable: the reader must then
assume that anything may have changed.
"""

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from elasticsearch import AsyncElasticsearch

from kv_storage.es.names import IndexNames
from kv_storage.model import Layout


@dataclass(frozen=True, slots=True)
class Position:
    index_uuid: str
    seq_nos: Mapping[int, int]
    """Per shard number: every change at or below this sequence number has been seen."""

    def follows(self, earlier: "Position") -> bool:
        """Whether this position comes after ``earlier`` in one and the same index."""
        return (
            self.index_uuid == earlier.index_uuid
            and self.seq_nos.keys() == earlier.seq_nos.keys()
            and all(self.seq_nos[shard] >= seq_no for shard, seq_no in earlier.seq_nos.items())
        )


@dataclass(frozen=True, slots=True)
class Deletion:
    """A registry document whose latest change marked it deleted."""

    storage_id: str
    shard: int
    seq_no: int
    layout: Layout = Layout.PER_STORAGE
    """Where its data was: what the sweep removes differs."""


class RegistryChanges:
    def __init__(self, client: AsyncElasticsearch, names: IndexNames) -> None:
        self._client = client
        self._index = names.registry

    async def position(self) -> Position:
        """Where the registry stands now: each shard's global checkpoint, read from its
        primary."""
        stats = await self._client.indices.stats(
            index=self._index,
            metric="docs",
            level="shards",
            filter_path=[
                "indices.*.uuid",
                "indices.*.shards.*.routing.primary",
                "indices.*.shards.*.seq_no.global_checkpoint",
            ],
        )
        (index,) = stats["indices"].values()
        seq_nos: dict[int, int] = {}
        for shard, copies in index["shards"].items():
            for copy in copies:
                if copy["routing"]["primary"]:
                    seq_nos[int(shard)] = int(copy["seq_no"]["global_checkpoint"])
        return Position(str(index["uuid"]), seq_nos)

    async def changed_ids(self, after: Position, *, limit: int) -> list[str] | None:
        """Ids of documents changed after ``after``; ``None`` when there are more than
        ``limit``. Call ``position`` first and pass it on next time: see the module."""
        await self._client.indices.refresh(index=self._index)
        ids: list[str] = []
        for shard, seq_no in after.seq_nos.items():
            found = await self._client.search(
                index=self._index,
                preference=f"_shards:{shard}",
                query={"range": {"_seq_no": {"gt": seq_no}}},
                size=limit,
                source=False,
                track_total_hits=True,
                filter_path=["hits.total.value", "hits.hits._id"],
            )
            hits = found["hits"]
            listed = hits.get("hits", [])
            if hits["total"]["value"] > len(listed):
                return None
            ids += [hit["_id"] for hit in listed]
            if len(ids) > limit:
                return None
        return ids

    async def deletions(self, after: Position, *, page_size: int) -> AsyncIterator[list[Deletion]]:
        """Documents marked deleted by a change after ``after``, in pages, each shard's in the
        order of its changes. Refreshes the index first, as ``changed_ids`` does."""
        await self._client.indices.refresh(index=self._index)
        for shard, seq_no in after.seq_nos.items():
            search_after: list[Any] | None = None
            while True:
                found = await self._client.search(
                    index=self._index,
                    preference=f"_shards:{shard}",
                    query={
                        "bool": {
                            "filter": [
                                {"term": {"deleted": True}},
                                {"range": {"_seq_no": {"gt": seq_no}}},
                            ]
                        }
                    },
                    sort=[{"_seq_no": "asc"}],
                    search_after=search_after,
                    size=page_size,
                    source_includes=["layout"],
                    filter_path=["hits.hits._id", "hits.hits.sort", "hits.hits._source"],
                )
                hits = found.body.get("hits", {}).get("hits", [])
                if hits:
                    yield [_deletion(hit, shard) for hit in hits]
                if len(hits) < page_size:
                    break
                search_after = hits[-1]["sort"]


def _deletion(hit: Mapping[str, Any], shard: int) -> Deletion:
    layout = (hit.get("_source") or {}).get("layout")
    shared = layout == Layout.SHARED.value
    return Deletion(
        str(hit["_id"]),
        shard,
        int(hit["sort"][0]),
        Layout.SHARED if shared else Layout.PER_STORAGE,
    )
