"""``GET /metrics``: what operators watch, in the Prometheus text format."""

from aiohttp import web
from aiohttp_apispec import docs
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kv_storage.actors.cache import CacheStats, GetCacheStats
from kv_storage.actors.watch import GetWatchStats
from kv_storage.app_keys import METRICS, SERVICE


@docs(
    tags=["operations"],
    summary="Metrics in the Prometheus text format",
    description=(
        "Requests by route template and status with latency histograms, Elasticsearch "
        "requests by outcome, the history pipeline (buffered, written, retried, lost, dropped by "
        "reason, discarded) "
        "the storage cache (hits, misses, entries) and blocking reads (waiters, wake-ups by "
        "cause). No label holds a storage id or key."
    ),
    produces=["text/plain"],
    responses={200: {"description": "The metrics"}},
)
async def metrics(request: web.Request) -> web.Response:
    history = await request.app[SERVICE].history.stats()
    cache: CacheStats = await request.app[SERVICE].cache.ask(GetCacheStats())
    watch = await request.app[SERVICE].watch.ask(GetWatchStats())
    sweep = request.app[SERVICE].expiry.stats
    collected = request.app[METRICS]
    collected.update(
        {
            "kv_storage_history_buffered_records": history.buffered,
            "kv_storage_history_written_records": history.written,
            "kv_storage_history_retried_records": history.retried,
            "kv_storage_history_lost_records": history.lost,
            "kv_storage_history_dropped_records": {
                "buffer_full": history.dropped,
                "storage_share": history.dropped_at_share,
            },
            "kv_storage_history_discarded_records": history.discarded,
            "kv_storage_cache_hits": cache.hits,
            "kv_storage_cache_misses": cache.misses,
            "kv_storage_cache_entries": cache.entries,
            "kv_storage_watch_waiters": watch.waiters,
            "kv_storage_share_refusals_operations": request.app[SERVICE].storage.refused_for_share
            + request.app[SERVICE].key_listing.refused_for_share,
            "kv_storage_share_refusals_waiters": watch.refused_for_share,
            "kv_storage_sweep_pending_storages": sweep.pending,
            "kv_storage_sweep_purged_documents": sweep.purged,
        }
    )
    body = generate_latest(collected.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics, allow_head=False)
