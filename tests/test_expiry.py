"""TEMP expiry and the lease that lets one instance of many do it, against the real node."""

import asyncio
import time
from collections.abc import Callable

import pytest
from elasticsearch import AsyncElasticsearch, AuthorizationException

from kv_storage import wiring
from kv_storage.actors.expiry import drop_delay_s
from kv_storage.app import create_app
from kv_storage.app_keys import SERVICE
from kv_storage.config import Config
from kv_storage.es.lease import Lease
from kv_storage.es.names import IndexNames
from kv_storage.es.registry_changes import RegistryChanges
from tests.conftest import BOTH_LAYOUTS, ServiceStarter, StorageFactory
from tests.helpers import ClientFactory, get, placed, put
from tests.waiting import wait_until

EXPIRY = (wiring.elasticsearch, wiring.lifecycle, wiring.expiry)
"""An instance that does nothing but the expiry sweep."""


@BOTH_LAYOUTS
async def test_expired_temp_storages_are_deleted_with_their_data(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    storage_layout: str,
) -> None:
    """Per-storage: its index removed; shared: its documents purged from the shared index."""
    app = create_app(make_config(KV_STORAGE_APP_EXPIRY_INTERVAL="200ms"))
    app[SERVICE].drop_delay_s = 0.0  # not the minutes a late write may take to come
    api = await aiohttp_client(app)
    expiring = await create_storage("TEMP", expiration_timestamp=int(time.time() * 1000) + 1500)
    lasting = await create_storage("TEMP")
    for storage in (expiring, lasting):
        await put(api, storage, "k", "v")
    where = placed(index_prefix, expiring.id, storage_layout)

    async def data_left() -> int:
        if not where.shared:
            return int(bool(await es.indices.exists(index=where.data_index)))
        await es.indices.refresh(index=where.data_index)
        counted = await es.count(index=where.data_index, routing=where.routing, query=where.query())
        return int(counted["count"])

    assert await data_left() == 1

    async def expired_and_removed() -> bool:
        document = await es.get(index=IndexNames(index_prefix).registry, id=expiring.id)
        return bool(document["_source"]["deleted"]) and await data_left() == 0

    await wait_until(expired_and_removed, what="the expired storage deleted and its index removed")
    assert (await get(api, expiring, "k"))[0] == 404
    assert await get(api, lasting, "k") == (200, "v")
    lasting_document = await es.get(index=IndexNames(index_prefix).registry, id=lasting.id)
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
    initialised_config: Config, make_config: Callable[..., Config], start_service: ServiceStarter
) -> None:
    config = make_config(KV_STORAGE_APP_EXPIRY_INTERVAL="200ms")
    parts = [await start_service(config, EXPIRY) for _ in range(2)]
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


async def test_deletions_are_listed_once_each_in_pages_after_a_position(
    es: AsyncElasticsearch, initialised_config: Config, index_prefix: str
) -> None:
    registry_index = IndexNames(index_prefix).registry
    changes = RegistryChanges(es, IndexNames(index_prefix))
    # Written with clocks all over the place: the order is Elasticsearch's, not theirs.
    await es.index(index=registry_index, id="before", document={"type": "ACCOUNT", "deleted": True})
    await es.indices.refresh(index=registry_index)
    start = await changes.position()
    for storage_id, last_updated in {"a": 5000, "b": 1, "c": 9_999_999_999_999, "d": 0}.items():
        document = {"type": "ACCOUNT", "deleted": True, "last_updated": last_updated}
        await es.index(index=registry_index, id=storage_id, document=document)
    await es.index(index=registry_index, id="live", document={"type": "ACCOUNT", "deleted": False})
    pages = [page async for page in changes.deletions(start, page_size=2)]
    assert [[d.storage_id for d in page] for page in pages] == [["a", "b"], ["c", "d"]]
    assert sorted(await changes.changed_ids(start, limit=10) or []) == ["a", "b", "c", "d", "live"]
    assert await changes.changed_ids(start, limit=4) is None  # more than the limit
    now = await changes.position()
    assert now.follows(start)
    assert not start.follows(now)
    assert [page async for page in changes.deletions(now, page_size=2)] == []


def test_indices_stay_closed_for_as_long_as_a_late_write_may_come(
    make_config: Callable[..., Config],
) -> None:
    app = make_config().app
    delay = drop_delay_s(app)
    late_history = (app.history.retry_limit + 1) * app.history.flush_timeout_s  # attempts
    assert delay >= app.cache.update_time_s + app.request_timeout_s + late_history
    # Each history attempt may take its bulk request's own bound (30 s), not the API's 3 s:
    # with the defaults, 6 attempts x (30 s apart + 30 s each) + a second of polls.
    assert delay >= 1 + 3 + 6 * (30 + 30)
    small = make_config(
        KV_STORAGE_APP_CACHE_UPDATE_TIME="1s",
        KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="1s",
        KV_STORAGE_APP_HISTORY_RETRY_LIMIT="2",
    ).app
    assert drop_delay_s(small) >= 1 + 3 + 3 * (1 + 30)  # the bulk bound, not 3 x (1 + 3)
    slow = make_config(KV_STORAGE_APP_CACHE_UPDATE_TIME="10 minutes").app
    assert drop_delay_s(slow) > 10 * 60


def _sweeper(config: Config, drop_delay_s: float) -> wiring.Service:
    return wiring.Service(config, request_timeout_s=3, drop_delay_s=drop_delay_s)


async def test_a_deletion_made_elsewhere_is_closed_to_writes_then_removed_after_the_delay(
    make_config: Callable[..., Config],
    es: AsyncElasticsearch,
    initialised_config: Config,
    index_prefix: str,
    create_storage: StorageFactory,
) -> None:
    """The CloudStack plugin marks a storage deleted, its clock an hour behind: the sweep
    closes its index to writes at once, and removes it once the delay has passed."""
    storage = await create_storage(history_enabled=True)
    data_index = IndexNames(index_prefix).data(storage.id)
    await es.index(index=data_index, id="k", document={"value": "v"}, refresh=True)
    config = make_config(KV_STORAGE_APP_EXPIRY_INTERVAL="1 hour")
    parts = _sweeper(config, drop_delay_s=0.5)
    async with wiring.running(parts, EXPIRY):
        await parts.expiry.run_now()  # nothing deleted yet
        an_hour_ago = int(time.time() * 1000) - 3_600_000
        await es.update(
            index=IndexNames(index_prefix).registry,
            id=storage.id,
            doc={"deleted": True, "last_updated": an_hour_ago},
        )
        await parts.expiry.run_now()
        assert parts.expiry.stats.pending == 1
        with pytest.raises(AuthorizationException):  # 403: the write block
            await es.index(index=data_index, id="late", document={"value": "v"})
        assert (await es.get(index=data_index, id="k"))["_source"] == {"value": "v"}

        async def removed() -> bool:
            await parts.expiry.run_now()
            return not await es.indices.exists(index=data_index)

        await wait_until(removed, what="the index removed after the delay")
        assert parts.expiry.stats.pending == 0


async def test_a_new_lease_holder_sweeps_on_from_where_the_last_one_got(
    make_config: Callable[..., Config],
    es: AsyncElasticsearch,
    initialised_config: Config,
    index_prefix: str,
    create_storage: StorageFactory,
) -> None:
    """Not every storage ever deleted on each restart: the first holder visits them all once,
    the next one only those deleted since."""
    registry_index = IndexNames(index_prefix).registry
    long_ago = await create_storage(deleted=True)
    old_index = IndexNames(index_prefix).data(long_ago.id)

    async def sweep_once() -> None:
        """A new instance: it sweeps once, then stops (releasing the lease)."""
        parts = _sweeper(make_config(KV_STORAGE_APP_EXPIRY_INTERVAL="1 hour"), drop_delay_s=0)
        async with wiring.running(parts, EXPIRY):
            await parts.expiry.run_now()

    await es.index(index=old_index, id="k", document={"value": "v"}, refresh=True)
    await sweep_once()  # no mark yet: every deletion is visited
    assert not await es.indices.exists(index=old_index)

    recent = await create_storage(deleted=True)
    await es.indices.refresh(index=registry_index)
    recent_index = IndexNames(index_prefix).data(recent.id)
    for index in (old_index, recent_index):
        await es.index(index=index, id="k", document={"value": "v"}, refresh=True)
    await sweep_once()  # a new holder: from the mark on
    assert not await es.indices.exists(index=recent_index)
    assert await es.indices.exists(index=old_index)  # deleted before the mark: not again
