"""Listing keys by prefix in pages, and the migration that makes it possible for data written
before layout version 2, against the real node."""

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage.app import create_app
from kv_storage.app_keys import SERVICE
from kv_storage.config import Config
from kv_storage.es.migration import KeyFieldMigration, Progress
from kv_storage.es.names import IndexNames
from tests.conftest import BOTH_LAYOUTS, StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory, path, per_storage_only, route_requests

pytestmark = BOTH_LAYOUTS

SPECIAL_KEYS = [
    "a/b/c",
    "a/b c",
    "a/é",
    "a/z",
    "a/日本語",
    "a/" + "k" * 510,  # 512 bytes, the longest key
    "a/%2F",
    "a/ leading space",
]


async def _set_all(api: Client, storage: StorageRef, keys: list[str]) -> None:
    for start in range(0, len(keys), 5000):
        pairs = {key: f"v-{key}" for key in keys[start : start + 5000]}
        response = await api.put(path("set", storage), json=pairs, headers=storage.headers)
        assert response.status == 200
        assert all((await response.json()).values())


async def _pages(
    api: Client, storage: StorageRef, params: dict[str, str]
) -> list[tuple[list[str], str | None]]:
    """Every page, following the Link headers: (keys, the Link header)."""
    pages: list[tuple[list[str], str | None]] = []
    url: str = (
        str(path("list", storage))
        + "?"
        + "&".join(f"{name}={quote(value, safe='')}" for name, value in params.items())
    )
    while True:
        response = await api.get(url, headers=storage.headers)
        assert response.status == 200, await response.text()
        link = response.headers.get("Link")
        pages.append((await response.json(), link))
        if link is None:
            return pages
        assert link.endswith('>; rel="next"'), link
        url = link[1 : -len('>; rel="next"')]
        assert len(pages) < 1000


def _byte_order(keys: list[str]) -> list[str]:
    return sorted(keys, key=str.encode)


async def test_pages_by_prefix_hold_every_key_once_in_byte_order(
    api: Client, create_storage: StorageFactory, es: AsyncElasticsearch, index_prefix: str
) -> None:
    storage = await create_storage()
    rng = random.Random(7)
    keys = [
        f"{rng.choice(['app/a/', 'app/b/', 'app/', 'other/', ''])}{n:05d}" for n in range(25_000)
    ]
    await _set_all(api, storage, keys)
    await es.indices.refresh(index=f"{index_prefix}storage-*")
    for prefix, limit in (("app/a/", 1000), ("app/", 3333), ("", 10_000), ("none/", 5)):
        pages = await _pages(api, storage, {"prefix": prefix, "limit": str(limit)})
        seen = [key for page, _ in pages for key in page]
        expected = _byte_order([key for key in keys if key.startswith(prefix)])
        assert seen == expected, prefix
        assert [len(page) for page, _ in pages[:-1]] == [limit] * (len(pages) - 1)
        assert 0 < len(pages[-1][0]) <= limit or not expected
        assert pages[-1][1] is None
    # Without any parameter: every key, as the original listed them.
    everything = await api.get(path("list", storage), headers=storage.headers)
    assert sorted(await everything.json()) == sorted(keys)
    # A prefix without a limit: every key of it, in order.
    response = await api.get(str(path("list", storage)) + "?prefix=other/", headers=storage.headers)
    assert await response.json() == _byte_order([k for k in keys if k.startswith("other/")])
    assert "Link" not in response.headers


async def test_keys_with_any_character_page_in_utf8_byte_order(
    api: Client, create_storage: StorageFactory, es: AsyncElasticsearch, index_prefix: str
) -> None:
    storage = await create_storage()
    await _set_all(api, storage, [*SPECIAL_KEYS, "b/other"])
    await es.indices.refresh(index=f"{index_prefix}storage-*")
    pages = await _pages(api, storage, {"prefix": "a/", "limit": "3"})
    assert [key for page, _ in pages for key in page] == _byte_order(SPECIAL_KEYS)
    after = await _pages(api, storage, {"prefix": "a/", "after": "a/z", "limit": "10"})
    assert after == [([key for key in _byte_order(SPECIAL_KEYS) if key.encode() > b"a/z"], None)]


async def test_concurrent_pages_share_searches_and_each_gets_its_own_keys(
    api: Client, create_storage: StorageFactory, es: AsyncElasticsearch, index_prefix: str
) -> None:
    """Many clients paging at once: their searches go to Elasticsearch together (its own
    per-route statistics count them), and every client gets the page it asked for."""
    storages = [await create_storage() for _ in range(4)]
    never_written = await create_storage()
    for storage in storages:
        await _set_all(api, storage, [f"{storage.id}/{n:03d}" for n in range(200)])
        await es.indices.refresh(index=f"{index_prefix}storage-*")
    asks = [
        (storage, f"{storage.id}/{digit}", str(limit))
        for storage in storages
        for digit in range(2)
        for limit in (1, 7, 100)
    ] * 3

    async def page(storage: StorageRef, prefix: str, limit: str) -> tuple[list[str], bool]:
        url = str(path("list", storage)) + f"?prefix={quote(prefix, safe='')}&limit={limit}"
        response = await api.get(url, headers=storage.headers)
        assert response.status == 200, await response.text()
        return await response.json(), "Link" in response.headers

    for storage in [*storages, never_written]:  # migration known, as after the first page
        await page(storage, "x", "1")
    before = await route_requests(es, "/_msearch")
    answers, unwritten = await asyncio.gather(
        asyncio.gather(*(page(*ask) for ask in asks)), page(never_written, "", "10")
    )
    searches = await route_requests(es, "/_msearch") - before
    for (_, prefix, limit), (keys, more) in zip(asks, answers, strict=True):
        expected = [f"{prefix}{n:02d}" for n in range(100)]
        assert keys == expected[: int(limit)]
        assert more == (int(limit) < 100)
    assert unwritten == ([], False)
    assert 0 < searches < (len(asks) + 1) / 2, searches


async def test_a_page_elasticsearch_refuses_fails_alone(
    api: Client,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    storage_layout: str,
) -> None:
    """A storage whose index is closed: its searches come back from the _msearch as errors;
    the pages of another storage in the same batches are answered."""
    per_storage_only(storage_layout, "a storage's own index, closed")
    closed, open_ = await create_storage(), await create_storage()
    for storage in (closed, open_):
        await _set_all(api, storage, ["a/1", "a/2"])
        await es.indices.refresh(index=f"{index_prefix}storage-*")
        assert (
            await api.get(str(path("list", storage)) + "?limit=1", headers=storage.headers)
        ).status == 200
    await es.indices.close(index=IndexNames(index_prefix).data(closed.id))

    async def page(storage: StorageRef) -> tuple[int, str]:
        url = str(path("list", storage)) + "?prefix=a/&limit=10"
        response = await api.get(url, headers=storage.headers)
        return response.status, await response.text()

    answers = await asyncio.gather(*(page(s) for _ in range(20) for s in (open_, closed)))
    assert [status for status, _ in answers] == [200, 500] * 20
    assert {text for status, text in answers if status == 200} == {'["a/1","a/2"]'}
    assert all("Elasticsearch refused the request" in text for _, text in answers[1::2])


async def test_pages_leave_out_a_document_without_the_key_field(
    api: Client,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    storage_layout: str,
) -> None:
    """A document written without the key field into a migrated storage (by an instance not
    upgraded yet, against the documented order of the upgrade) has no place in the byte order:
    pages, with a prefix or without, hold the other keys exactly once and in order, never a
    null in its place; the full listing still holds it."""
    per_storage_only(storage_layout, "documents written before layout version 2")
    storage = await create_storage()
    keys = [f"k{n}" for n in range(10)]
    await _set_all(api, storage, keys)
    index = IndexNames(index_prefix).data(storage.id)
    await es.index(index=index, id="k05-older", document={"value": "v"}, refresh=True)
    for params in ({"limit": "4"}, {"prefix": "k", "limit": "4"}, {"after": "k1", "limit": "3"}):
        pages = await _pages(api, storage, params)
        after = params.get("after", "")
        assert [key for page, _ in pages for key in page] == [k for k in keys if k > after]
    everything = await api.get(path("list", storage), headers=storage.headers)
    assert sorted(await everything.json()) == sorted([*keys, "k05-older"])


@pytest.mark.parametrize("limit", ["0", "10001", "-1", "x", "1.5"])
async def test_a_bad_limit_is_400(api: Client, create_storage: StorageFactory, limit: str) -> None:
    storage = await create_storage()
    response = await api.get(
        str(path("list", storage)) + f"?limit={limit}", headers=storage.headers
    )
    assert response.status == 400
    assert "limit" in (await response.json())["error"]


# ------------------------------------------------------------------- data written before v2


async def _written_before(
    es: AsyncElasticsearch, index_prefix: str, storage: StorageRef, count: int
) -> list[str]:
    """Documents as a service before layout version 2 wrote them (no key field), and the
    deployment not migrated yet."""
    keys = [f"old/{n:05d}" for n in range(count)]
    index = IndexNames(index_prefix).data(storage.id)
    operations: list[dict[str, Any]] = []
    for key in keys:
        operations += [{"index": {"_index": index, "_id": key}}, {"value": f"old-{key}"}]
    await es.bulk(operations=operations, refresh=True)
    await es.delete(index=IndexNames(index_prefix).registry_lock, id="key-field", refresh=True)
    return keys


async def test_a_storage_not_migrated_yet_pages_from_a_full_scan(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    storage_layout: str,
) -> None:
    per_storage_only(storage_layout, "documents written before layout version 2")
    storage = await create_storage()
    keys = await _written_before(es, index_prefix, storage, 250)
    api = await aiohttp_client(create_app(make_config()))
    pages = await _pages(api, storage, {"prefix": "old/001", "limit": "7"})
    assert [key for page, _ in pages for key in page] == [
        k for k in keys if k.startswith("old/001")
    ]


async def test_full_scans_of_key_listing_and_lists_draw_on_one_pool_of_open_scans(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    storage_layout: str,
) -> None:
    """With ``elasticsearch.scroll.max-open = 1`` and its one slot held (as by a list read
    slowly), a page of a storage not migrated yet (a full scan) answers 503 like a list: an
    instance holds at most the configured scroll contexts, whichever actor opens them (each
    had a pool of its own, so an instance could hold twice as many)."""
    per_storage_only(storage_layout, "documents written before layout version 2")
    storage = await create_storage()
    await _written_before(es, index_prefix, storage, 20)
    app = create_app(make_config(KV_STORAGE_ELASTICSEARCH_SCROLL_MAX_OPEN="1"))
    api = await aiohttp_client(app)
    page = str(path("list", storage)) + "?prefix=old/&limit=5"
    scans = app[SERVICE].scans
    scans.take("some-other-storage")
    try:
        for url in (page, str(path("list", storage))):
            refused = await api.get(url, headers=storage.headers)
            assert refused.status == 503, url
            assert "elasticsearch.scroll.max-open" in (await refused.json())["error"]
    finally:
        scans.give_back("some-other-storage")
    answered = await api.get(page, headers=storage.headers)
    assert answered.status == 200
    assert len(await answered.json()) == 5


async def test_the_migration_runs_while_writes_go_on_and_loses_none(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    storage_layout: str,
) -> None:
    """Interrupted after its first page, then run again to the end, while a client rewrites
    and deletes keys: every value is the last one written, no deleted key comes back, every
    document carries its key, and the storage then pages by search."""
    per_storage_only(storage_layout, "documents written before layout version 2")
    storage = await create_storage()
    keys = await _written_before(es, index_prefix, storage, 3000)
    api = await aiohttp_client(create_app(make_config()))
    names = IndexNames(index_prefix)

    class Interrupted(Exception):
        pass

    def interrupt(progress: Progress) -> None:
        if progress.updated >= 1000:
            raise Interrupted

    with pytest.raises(Interrupted):
        await KeyFieldMigration(es, names).run(interrupt)

    written: dict[str, str] = {}
    deleted: set[str] = set()

    async def writer() -> None:
        rng = random.Random(3)
        for round_ in range(30):
            chosen = rng.sample(keys, 40)
            pairs = dict.fromkeys(chosen[:30], f"new-{round_}")
            response = await api.put(path("set", storage), json=pairs, headers=storage.headers)
            assert response.status == 200
            written.update(pairs)
            for key in pairs:
                deleted.discard(key)
            gone = chosen[30:]
            response = await api.post(path("delete", storage), json=gone, headers=storage.headers)
            assert response.status == 200
            deleted.update(gone)
            for key in gone:
                written.pop(key, None)

    done, _ = await asyncio.gather(KeyFieldMigration(es, names).run(), writer())
    assert done.storages == 1
    index = IndexNames(index_prefix).data(storage.id)
    await es.indices.refresh(index=index)
    missing = await es.count(
        index=index, query={"bool": {"must_not": [{"exists": {"field": "key"}}]}}
    )
    assert missing["count"] == 0
    response = await api.post(path("get", storage), json=keys, headers=storage.headers)
    values = await response.json()
    for key in keys:
        if key in deleted:
            assert values[key] is None, key
        else:
            assert values[key] == written.get(key, f"old-{key}"), key
    pages = await _pages(api, storage, {"prefix": "old/", "limit": "1000"})
    assert [k for page, _ in pages for k in page] == [k for k in keys if k not in deleted]


async def test_init_migrate_fills_in_the_key_field_and_says_so(
    es_url: str,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    storage_layout: str,
) -> None:
    per_storage_only(storage_layout, "documents written before layout version 2")
    service_env = {
        **os.environ,
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
    }
    first = _run(["init"], service_env)
    assert first.returncode == 0, first.stderr
    storage = await create_storage()
    await _written_before(es, index_prefix, storage, 20)
    told = _run(["init"], service_env)
    assert told.stdout.splitlines()[-1] == (
        "key field of stored data missing in data written before: run kv-storage init --migrate"
    )
    migrated = _run(["init", "--migrate"], service_env)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.splitlines()[-1] == (
        "key field: filled in 20 documents of 1 storages; 0 written or deleted meanwhile were "
        "left alone"
    )
    again = _run(["init"], service_env)
    assert again.stdout.splitlines()[-1] == "key field of stored data up to date"


def _run(args: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kv_storage", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
