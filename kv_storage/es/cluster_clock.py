"""Elasticsearch's time, as this process can tell it: what TEMP expirations are compared with.

An expiration is a point on one time line, shared by every instance and the command line;
each machine's own clock may be seconds or minutes off that line. So the time a storage is
judged expired by is Elasticsearch's (a node's clock, read with its statistics), carried
forward between readings by this process's monotonic clock, which no clock step moves.
Until the first reading succeeds it is the local wall clock.
"""

import logging
import time

from elasticsearch import AsyncElasticsearch

from kv_storage.es.errors import describe

logger = logging.getLogger(__name__)

RESYNC_S = 30.0
"""How often the reading is renewed: monotonic clocks drift by far less than a millisecond
in that time."""


class ClusterClock:
    def __init__(self, client: AsyncElasticsearch) -> None:
        self._client = client
        self._cluster_ms: float | None = None
        self._read_at_s = 0.0
        """``time.monotonic()`` when the answer that gave ``_cluster_ms`` came."""
        self._tried_at_s = float("-inf")

    def now_ms(self) -> int:
        if self._cluster_ms is None:
            return time.time_ns() // 1_000_000
        return int(self._cluster_ms + (time.monotonic() - self._read_at_s) * 1000)

    @property
    def due(self) -> bool:
        """The last reading (or failed attempt: a credential without the ``monitor``
        privilege is warned of every ``RESYNC_S``, not every poll) is ``RESYNC_S`` old."""
        return time.monotonic() - self._tried_at_s >= RESYNC_S

    async def sync(self) -> None:
        """Reads a node's clock; a failure is logged and leaves the last reading in use."""
        sent = self._tried_at_s = time.monotonic()
        try:
            stats = await self._client.nodes.stats(
                node_id="_local", metric="jvm", filter_path=["nodes.*.timestamp"]
            )
            (node,) = stats["nodes"].values()
            cluster_ms = float(node["timestamp"])
        except Exception as error:
            logger.warning("reading Elasticsearch's clock failed: %s", describe(error))
            return
        received = time.monotonic()
        self._cluster_ms = cluster_ms + (received - sent) * 500  # the answer left mid-way
        self._read_at_s = received
