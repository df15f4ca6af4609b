"""TEMP expiry and the lease that lets one instance of many do it, against the real node."""

import asyncio
import time
from collections.abc import Callable

from elasticsearch import AsyncElasticsearch

from kv_storage import wiring
from kv_storage.actors.expiry import sweep_overlap_s
from kv_storage.app import create_app
from kv_storage.config import Config
from kv_storage.es.lease import Lease
from kv_storage.es.names import IndexNames
from kv_storage.es.registry import Registry
from tests.conftest import PartsStarter, StorageFactory
from tests.helpers import ClientFactory, get, put
from tests.waiting import wait_until

EXPIRY = (wiring.elasticsearch, wiring.lifecycle, wiring.expiry)
"""An instance that does nothing but the expiry sweep."""


async def test_expired_temp_storages_are_deleted_with_their_data(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    api = await aiohttp_client(create_app(make_config(KV_STORAGE_APP_EXPIRY_INTERVAL="200ms")))
    expiring = await create_storage("TEMP", expiration_timestamp=int(time.time() * 1000) + 1500)
    lasting = await create_storage("TEMP")
    for storage in (expiring, lasting):
        await put(api, storage, "k", "v")
    data_index = f"{index_prefix}storage-data-{expiring.id}"
    assert await es.indices.exists(index=data_index)

    async def expired_and_removed() -> bool:
        document = await es.get(index=f"{index_prefix}storage-registry", id=expiring.id)
        return bool(document["_source"]["deleted"]) and not await es.indices.exists(
            index=data_index
        )

    await wait_until(expired_and_removed, what="the expired storage deleted and its index removed")
    assert (await get(api, expiring, "k"))[0] == 404
    assert await get(api, lasting, "k") == (200, "v")
    lasting_document = await es.get(index=f"{index_prefix}storage-registry", id=lasting.id)
    assert lasting_document["_source"]["deleted"] is False


async def test_a_lease_has_one_holder_and_is_taken_over_when_not_renewed(
    es: AsyncElasticsearch, initialised_config: Config, index_prefix: str
) -> None:
    names = IndexNames(index_prefix)
    first = Lease(es, names, name="job", duration_s=0.5)
    second = Lease(es, names, name="job", duration_s=0.5)
    assert await first.acquire()
    assert not await second.acquire()
    assert await first.acquire()  # renewed
    assert not await second.acquire()
    # The first holder stops renewing (it died): after the lease's duration, it is free.
    await wait_until(second.acquire, interval_s=0.1, what="the lease taken over")
    assert not await first.acquire()  # and the old holder knows it lost it
    await second.release()
    assert await first.acquire()  # a released lease is free at once


async def test_two_expiry_actors_never_work_at_once_and_a_dead_owners_lease_is_taken_over(
    initialised_config: Config, make_config: Callable[..., Config], start_parts: PartsStarter
) -> None:
    config = make_config(KV_STORAGE_APP_EXPIRY_INTERVAL="200ms")
    parts = [await start_parts(config, EXPIRY) for _ in range(2)]
    actors = [instance.expiry for instance in parts]

    async def runs() -> list[int]:
        return [actor.stats.runs for actor in actors]

    async def owner_worked_a_while() -> bool:
        return max(await runs()) >= 5

    await wait_until(owner_worked_a_while, what="five runs")
    counts = await runs()
    assert sorted(counts)[0] == 0, counts  # only one of them ever worked
    owner, other = (actors[0], actors[1]) if counts[0] else (actors[1], actors[0])

    # The owner dies: its task ends without releasing the lease.
    assert owner._task is not None
    owner._task.cancel()
    await asyncio.gather(owner._task, return_exceptions=True)

    async def other_took_over() -> bool:
        stats = other.stats
        return bool(stats.runs >= 2)

    await wait_until(other_took_over, what="the other actor taking the lease over")


async def test_deleted_since_pages_through_every_deletion_once(
    es: AsyncElasticsearch, initialised_config: Config, index_prefix: str
) -> None:
    registry_index = f"{index_prefix}storage-registry"
    # Three deletions at one millisecond, more than a page: a page boundary falls among them.
    times = {"a": 1000, "b": 1000, "c": 1000, "d": 1001, "e": 1001, "f": 1002, "old": 999}
    for storage_id, last_updated in times.items():
        document = {"type": "ACCOUNT", "deleted": True, "last_updated": last_updated}
        await es.index(index=registry_index, id=storage_id, document=document)
    live = {"type": "ACCOUNT", "deleted": False, "last_updated": 1000}
    await es.index(index=registry_index, id="live", document=live, refresh=True)
    registry = Registry(es, IndexNames(index_prefix))
    seen = [entry.id async for page in registry.deleted_since(1000, size=2) for entry in page]
    assert sorted(seen) == ["a", "b", "c", "d", "e", "f"]  # each once, none skipped


def test_the_sweep_overlap_outlasts_every_late_write(make_config: Callable[..., Config]) -> None:
    app = make_config().app
    overlap = sweep_overlap_s(app)
    late_history = (app.history.retry_limit + 1) * app.history.flush_timeout_s  # attempts
    assert overlap >= app.cache.update_time_s + app.request_timeout_s + late_history
    # Each history attempt may take its bulk request's own bound (30 s), not the API's 3 s:
    # with the defaults, 6 attempts x (30 s apart + 30 s each) + a minute of polls.
    assert overlap >= 60 + 3 + 6 * (30 + 30)
    small = make_config(
        KV_STORAGE_APP_CACHE_UPDATE_TIME="1s",
        KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="1s",
        KV_STORAGE_APP_HISTORY_RETRY_LIMIT="2",
    ).app
    assert sweep_overlap_s(small) >= 1 + 3 + 3 * (1 + 30)  # the bulk bound, not 3 x (1 + 3)
    slow = make_config(KV_STORAGE_APP_CACHE_UPDATE_TIME="10 minutes").app
    assert sweep_overlap_s(slow) > 10 * 60


async def test_an_index_recreated_after_the_deletion_is_swept_again(
    make_config: Callable[..., Config],
    start_parts: PartsStarter,
    es: AsyncElasticsearch,
    initialised_config: Config,
    index_prefix: str,
    create_storage: StorageFactory,
) -> None:
    storage = await create_storage(deleted=True)
    # Deleted 90 s ago: longer ago than a minute, well within an instance's late writes.
    registry_index = f"{index_prefix}storage-registry"
    ninety_s_ago = int(time.time() * 1000) - 90_000
    await es.update(
        index=registry_index, id=storage.id, doc={"last_updated": ninety_s_ago}, refresh=True
    )
    data_index = f"{index_prefix}storage-data-{storage.id}"
    parts = await start_parts(make_config(KV_STORAGE_APP_EXPIRY_INTERVAL="1 hour"), EXPIRY)
    for _ in range(2):
        # A write by an instance that still has the storage cached re-creates its index.
        await es.index(index=data_index, id="k", document={"value": "v"}, refresh=True)
        await parts.expiry.run_now()
        assert not await es.indices.exists(index=data_index)


async def test_a_new_lease_holder_sweeps_on_from_where_the_last_one_got(
    make_config: Callable[..., Config],
    es: AsyncElasticsearch,
    initialised_config: Config,
    index_prefix: str,
    create_storage: StorageFactory,
) -> None:
    """Not every storage ever deleted on each restart: the first holder visits them all once,
    the next one only those deleted since (within the overlap)."""
    registry_index = f"{index_prefix}storage-registry"
    long_ago = await create_storage(deleted=True)
    a_day_ago = int(time.time() * 1000) - 86_400_000
    await es.update(
        index=registry_index, id=long_ago.id, doc={"last_updated": a_day_ago}, refresh=True
    )
    old_index = f"{index_prefix}storage-data-{long_ago.id}"

    async def sweep_once() -> None:
        """A new instance: it sweeps once, then stops (releasing the lease)."""
        parts = wiring.Parts(
            make_config(KV_STORAGE_APP_EXPIRY_INTERVAL="1 hour"), request_timeout_s=3
        )
        async with wiring.running(parts, EXPIRY):
            await parts.expiry.run_now()

    await es.index(index=old_index, id="k", document={"value": "v"}, refresh=True)
    await sweep_once()  # no mark yet: every deletion is visited
    assert not await es.indices.exists(index=old_index)

    recent = await create_storage(deleted=True)
    await es.indices.refresh(index=registry_index)
    recent_index = f"{index_prefix}storage-data-{recent.id}"
    for index in (old_index, recent_index):
        await es.index(index=index, id="k", document={"value": "v"}, refresh=True)
    await sweep_once()  # a new holder: from the mark, less the overlap
    assert not await es.indices.exists(index=recent_index)
    assert await es.indices.exists(index=old_index)  # a day ago: not visited again
