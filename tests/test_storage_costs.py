"""What each operation costs in Elasticsearch requests, counted by a proxy in front of the
real node; and the storage cache that makes single-key operations cost exactly one."""

import asyncio
from collections.abc import Callable

from kv_storage.app import create_app
from kv_storage.config import Config
from tests.conftest import CountingProxy, StorageFactory
from tests.helpers import Client, ClientFactory, path


async def _service(
    make_config: Callable[..., Config],
    proxy: CountingProxy,
    aiohttp_client: ClientFactory,
    **environ: str,
) -> Client:
    """The service, counted from its first request on: what it asked at start-up (the
    cluster's clock, the registry's position) is not counted, nor are registry polls made."""
    environ = {"KV_STORAGE_APP_CACHE_UPDATE_TIME": "1 hour", **environ}
    config = make_config(KV_STORAGE_ELASTICSEARCH_URI=proxy.url, **environ)
    client = await aiohttp_client(create_app(config))
    proxy.clear()
    return client


async def test_each_operation_on_a_cached_storage_costs_one_request(
    make_config: Callable[..., Config],
    initialised_config: Config,
    es_proxy: CountingProxy,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    api = await _service(make_config, es_proxy, aiohttp_client)
    storage = await create_storage()
    text = {**storage.headers, "Content-Type": "text/plain"}
    # The first call reads the registry once; the storage is cached from then on.
    assert (await api.put(path("set", storage, "warm"), data=b"v", headers=text)).status == 200
    assert es_proxy.count(path_part="storage-registry") == 1

    def one_request(expected_path: str) -> None:
        assert len(es_proxy.requests) == 1, es_proxy.requests
        assert expected_path in es_proxy.requests[0][1], es_proxy.requests
        es_proxy.clear()

    es_proxy.clear()
    # One at a time, each operation goes alone: reads as an _mget, writes as a _bulk.
    assert (await api.put(path("set", storage, "k"), data=b"v", headers=text)).status == 200
    one_request("/_bulk")
    assert (await api.get(path("get", storage, "k"), headers=storage.headers)).status == 200
    one_request("/_mget")
    assert (await api.get(path("get", storage, "absent"), headers=storage.headers)).status == 404
    one_request("/_mget")
    assert (await api.delete(path("delete", storage, "k"), headers=storage.headers)).status == 200
    one_request("/_bulk")
    assert (await api.put(path("set", storage, ".."), data=b"v", headers=text)).status == 200
    one_request("/_bulk")
    keys = [f"k{n}" for n in range(100)]
    assert (await api.post(path("get", storage), json=keys, headers=storage.headers)).status == 200
    one_request("/_mget")
    pairs = {f"k{n}": "v" for n in range(1000)}
    assert (await api.put(path("set", storage), json=pairs, headers=storage.headers)).status == 200
    one_request("/_bulk")
    assert (
        await api.post(path("delete", storage), json=keys, headers=storage.headers)
    ).status == 200
    one_request("/_bulk")
    # A page of listing by prefix: one search (the first page also learns, once, that the
    # storage's data carries the key field).
    listed = str(path("list", storage)) + "?prefix=k&limit=10"
    assert (await api.get(listed, headers=storage.headers)).status == 200
    es_proxy.clear()
    page = await api.get(listed + "&after=k5", headers=storage.headers)
    assert page.status == 200
    # The keys come from the hits' sort values: Elasticsearch loads no stored field per hit.
    assert es_proxy.count("POST", "/_msearch", body_part=b'"stored_fields":"_none_"') == 1
    one_request("/_msearch")


async def test_concurrent_lookups_of_an_uncached_storage_read_the_registry_once(
    make_config: Callable[..., Config],
    initialised_config: Config,
    es_proxy: CountingProxy,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    api = await _service(make_config, es_proxy, aiohttp_client)
    storage = await create_storage()
    answers = await asyncio.gather(
        *(api.get(path("get", storage, f"k{n}"), headers=storage.headers) for n in range(30))
    )
    assert [answer.status for answer in answers] == [404] * 30
    assert es_proxy.count(path_part="storage-registry") == 1


async def test_misses_are_cached_too(
    make_config: Callable[..., Config],
    initialised_config: Config,
    es_proxy: CountingProxy,
    aiohttp_client: ClientFactory,
) -> None:
    api = await _service(make_config, es_proxy, aiohttp_client)
    for _ in range(3):
        response = await api.get("/get/no-such-storage/k", headers={"Secret-Key": "s"})
        assert response.status == 404
    assert es_proxy.count(path_part="storage-registry") == 1
    assert len(es_proxy.requests) == 1


async def test_the_cache_holds_at_most_max_size_storages(
    make_config: Callable[..., Config],
    initialised_config: Config,
    es_proxy: CountingProxy,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    api = await _service(make_config, es_proxy, aiohttp_client, KV_STORAGE_APP_CACHE_MAX_SIZE="2")
    first, second, third = [await create_storage() for _ in range(3)]

    async def touch(storage: object) -> None:
        response = await api.get(path("get", storage, "k"), headers=storage.headers)  # type: ignore[arg-type, attr-defined]
        assert response.status == 404

    for storage in (first, second, first, third):  # third evicts second, the least recent
        await touch(storage)
    assert es_proxy.count(path_part="storage-registry") == 3
    await touch(first)
    assert es_proxy.count(path_part="storage-registry") == 3  # still cached
    await touch(second)
    assert es_proxy.count(path_part="storage-registry") == 4  # was evicted


async def test_list_and_clear_costs(
    make_config: Callable[..., Config],
    initialised_config: Config,
    es_proxy: CountingProxy,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    """Documented in docs/design.md: list and clear of N keys with page size P."""
    api = await _service(
        make_config, es_proxy, aiohttp_client, KV_STORAGE_ELASTICSEARCH_SCROLL_PAGE_SIZE="10"
    )
    storage = await create_storage()
    await api.put(
        path("set", storage), json={f"k{n}": "v" for n in range(25)}, headers=storage.headers
    )
    es_proxy.clear()
    assert len(await (await api.get(path("list", storage), headers=storage.headers)).json()) == 25
    # A refresh, the first search, floor(N/P) + 1 scroll continuations (the scan stops at an
    # empty page) and the release of the scroll: floor(25/10) + 4 = 6.
    assert es_proxy.count(path_part="/_refresh") == 1
    assert es_proxy.count("POST", "/_search/scroll") == 3
    assert es_proxy.count("DELETE", "/_search/scroll") == 1
    assert len(es_proxy.requests) == 6
    es_proxy.clear()
    assert (await api.post(path("clear", storage), headers=storage.headers)).status == 200
    # The same scan, plus one bulk of conditional deletes per page: 6 + ceil(25/10) = 9.
    assert es_proxy.count(path_part="/_bulk") == 3
    assert len(es_proxy.requests) == 9


async def test_concurrent_misses_of_many_storages_share_registry_reads(
    make_config: Callable[..., Config],
    initialised_config: Config,
    es_proxy: CountingProxy,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    """Many active storages missing the cache at once (after a restart, or a cache smaller
    than them): their lookups go to the registry as a few _mget, not one request each."""
    api = await _service(make_config, es_proxy, aiohttp_client)
    storages = [await create_storage() for _ in range(60)]
    es_proxy.clear()
    answers = await asyncio.gather(
        *(api.get(path("get", storage, "k"), headers=storage.headers) for storage in storages)
    )
    assert [answer.status for answer in answers] == [404] * 60  # live storages, no such key
    reads = es_proxy.count(path_part="storage-registry")
    assert reads == es_proxy.count(path_part="storage-registry/_mget")
    assert 0 < reads < 60 / 4, reads
    for storage in storages:  # every one of them in one of those reads
        assert (
            es_proxy.count(path_part="storage-registry/_mget", body_part=storage.id.encode()) == 1
        )
