"""How many of the cluster's shards are in use, against how many it allows.

Elasticsearch refuses to open more than ``cluster.max_shards_per_node`` shards per data node
(1,000 by default), replicas included. Every storage in the per-storage layout takes one or
two indices of its own, a shard each (and a replica each on a cluster of several nodes), so
that layout runs out near 500 to 1,000 storages per node; the shared layout takes two indices
in all. ``ShardBudget`` reads both numbers, for the health check's warning and for what a new
per-storage storage would need.
"""

from dataclasses import dataclass

from elasticsearch import AsyncElasticsearch

DEFAULT_MAX_SHARDS_PER_NODE = 1000


@dataclass(frozen=True, slots=True)
class ShardUsage:
    used: int
    """Shards of open indices, primaries and replicas, assigned or not."""
    limit: int
    """``cluster.max_shards_per_node`` times the data nodes."""
    replicas: int
    """The replicas an index of ``auto_expand_replicas: 0-1`` gets on this cluster."""

    @property
    def share(self) -> float:
        return self.used / self.limit if self.limit else 1.0


class ShardBudget:
    def __init__(self, client: AsyncElasticsearch) -> None:
        self._client = client

    async def usage(self) -> ShardUsage:
        health = await self._client.cluster.health(
            filter_path=[
                "number_of_data_nodes",
                "active_shards",
                "initializing_shards",
                "unassigned_shards",
            ]
        )
        settings = await self._client.cluster.get_settings(
            include_defaults=True, filter_path=["*.cluster.max_shards_per_node"]
        )
        per_node = DEFAULT_MAX_SHARDS_PER_NODE
        for scope in ("transient", "persistent", "defaults"):  # the first that sets it wins
            value = settings.get(scope, {}).get("cluster", {}).get("max_shards_per_node")
            if value is not None:
                per_node = int(value)
                break
        nodes = int(health.get("number_of_data_nodes", 1))
        used = sum(
            int(health.get(name, 0))
            for name in ("active_shards", "initializing_shards", "unassigned_shards")
        )
        return ShardUsage(used=used, limit=per_node * nodes, replicas=min(1, nodes - 1))
