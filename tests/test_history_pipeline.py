"""The history pipeline against the real node: what is recorded, when it is flushed, and what
happens when Elasticsearch refuses the writes."""

import asyncio
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from elasticsearch import AsyncElasticsearch

from kv_storage.app import create_app
from kv_storage.app_keys import SERVICE
from kv_storage.config import Config
from kv_storage.es.history import HistoryStore
from kv_storage.es.names import IndexNames
from pipeline.actor import HistoryStats
from pipeline.records import HistoryRecord, Operation
from pipeline.writer import WriteFailedError, WriteResult
from tests.conftest import CountingProxy, StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory, path, put
from tests.waiting import wait_until


async def stats(api: Client) -> HistoryStats:
    return await api.app[SERVICE].history.stats()


async def records(
    es: AsyncElasticsearch, index_prefix: str, storage: StorageRef
) -> list[dict[str, Any]]:
    index = IndexNames(index_prefix).history(storage.id)
    if not await es.indices.exists(index=index):
        return []
    await es.indices.refresh(index=index)
    found = await es.search(index=index, size=1000, sort=[{"timestamp": "asc"}, {"key": "asc"}])
    return [hit["_source"] for hit in found["hits"]["hits"]]


async def wait_for_stats(api: Client, what: str, condition: Callable[[HistoryStats], bool]) -> None:
    async def holds() -> bool:
        return condition(await stats(api))

    await wait_until(holds, what=what)


async def service(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory, **environ: str
) -> Client:
    return await aiohttp_client(create_app(make_config(**environ)))


async def test_flush_by_size_and_not_before(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    api = await service(
        make_config,
        aiohttp_client,
        KV_STORAGE_APP_HISTORY_FLUSH_SIZE="3",
        KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="1 hour",
    )
    storage = await create_storage(history_enabled=True)
    await put(api, storage, "a", "1")
    await put(api, storage, "b", "2")
    current = await stats(api)
    assert (current.buffered, current.written, current.flushes) == (2, 0, 0)
    assert await records(es, index_prefix, storage) == []
    await put(api, storage, "c", "3")
    await wait_for_stats(api, "the flush by size", lambda s: s.written == 3)
    assert [
        (r["key"], r["value"], r["operation"]) for r in await records(es, index_prefix, storage)
    ] == [
        ("a", "1", "set"),
        ("b", "2", "set"),
        ("c", "3", "set"),
    ]


async def test_flush_by_timeout_and_not_before(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    api = await service(make_config, aiohttp_client, KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="1500ms")
    storage = await create_storage(history_enabled=True)
    started = time.monotonic()
    await put(api, storage, "k", "v")
    current = await stats(api)
    assert (current.buffered, current.written) == (1, 0)
    await wait_for_stats(api, "the flush by timeout", lambda s: s.written == 1)
    assert time.monotonic() - started >= 1.5
    assert len(await records(es, index_prefix, storage)) == 1


async def test_a_burst_on_several_storages_takes_few_bulk_requests(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es_proxy: CountingProxy,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    api = await service(
        make_config,
        aiohttp_client,
        KV_STORAGE_ELASTICSEARCH_URI=es_proxy.url,
        KV_STORAGE_APP_HISTORY_FLUSH_SIZE="50",
        KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="1 hour",
    )
    storages = [await create_storage(history_enabled=True) for _ in range(3)]
    await asyncio.gather(
        *(put(api, storage, f"k{n}", "v") for storage in storages for n in range(50))
    )
    await wait_for_stats(api, "150 records written", lambda s: s.written == 150)
    assert es_proxy.count(path_part="/_bulk", body_part=b"storage-history-") == 3
    for storage in storages:
        assert len(await records(es, index_prefix, storage)) == 50


async def test_what_is_recorded(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    api = await service(
        make_config,
        aiohttp_client,
        KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="100ms",
        KV_STORAGE_ELASTICSEARCH_LIMIT_KEY_MAX_SIZE="10",
    )
    storage = await create_storage(history_enabled=True)
    without = await create_storage(history_enabled=False)
    before = int(time.time() * 1000)
    await put(api, storage, "k1", "v1")
    await put(api, without, "k1", "v1")
    multi = await api.put(
        path("set", storage), json={"k2": "v2", "far-too-long-key": "x"}, headers=storage.headers
    )
    assert await multi.json() == {"k2": True, "far-too-long-key": False}
    refused = await api.put(path("set", storage, "k3"), data=b"v", headers=storage.headers)
    assert refused.status == 400  # no content type: not an operation, not recorded
    await api.delete(path("delete", storage, "k1"), headers=storage.headers)
    await api.post(path("delete", storage), json=["k2", ""], headers=storage.headers)
    await api.post(path("clear", storage), headers=storage.headers)
    after = int(time.time() * 1000)
    await wait_for_stats(api, "every record written", lambda s: s.written == 5 and s.buffered == 0)
    found = await records(es, index_prefix, storage)
    assert sorted(((r["key"], r["value"], r["operation"]) for r in found), key=str) == sorted(
        [
            ("k1", "v1", "set"),
            ("k2", "v2", "set"),
            ("k1", None, "delete"),
            ("k2", None, "delete"),
            (None, None, "clear"),
        ],
        key=str,
    )
    assert all(before <= r["timestamp"] <= after for r in found)
    assert await records(es, index_prefix, without) == []


@asynccontextmanager
async def read_only(es: AsyncElasticsearch, index: str) -> AsyncIterator[None]:
    """A read-only block on an index, as an operator (or a full disk) puts one: unlike the
    write block of a deleted storage, it is lifted again, so its records go again. Lifted on
    the way out whatever happens: a read-only index cannot even be deleted by the cleanup."""
    await es.indices.add_block(index=index, block="read_only")
    try:
        yield
    finally:
        await es.indices.put_settings(index=index, settings={"index.blocks.read_only": False})


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        line
        for line in caplog.records
        if line.name == "pipeline.actor" and "Elasticsearch refused" in line.getMessage()
    ]


async def test_records_survive_a_read_only_block_and_are_written_once_it_ends(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Finding 9: with the history index blocked under load, records refused one by one were
    retried without a word in the log. Now a warning names the cause, the count and the
    storage, at a bounded rate (one line for many refused batches), and no value."""
    api = await service(
        make_config,
        aiohttp_client,
        KV_STORAGE_APP_HISTORY_FLUSH_SIZE="1",
        KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="100ms",
        KV_STORAGE_APP_HISTORY_RETRY_LIMIT="1000",
    )
    storage = await create_storage(history_enabled=True)
    await put(api, storage, "first", "v")
    await wait_for_stats(api, "the first record written", lambda s: s.written == 1)
    index = IndexNames(index_prefix).history(storage.id)
    with caplog.at_level(logging.WARNING, logger="pipeline.actor"):
        async with read_only(es, index):
            for n in range(5):
                await put(api, storage, f"during-{n}", f"value-never-logged-{n}")
            await wait_for_stats(api, "refused records retried", lambda s: s.retried >= 10)
            assert len(await records(es, index_prefix, storage)) == 1
    lines = refusal_lines(caplog)
    assert lines, "no warning of the refused history writes"
    assert len(lines) < (await stats(api)).retried  # rate-limited: not a line per refusal
    first = lines[0].getMessage()
    assert lines[0].levelno == logging.WARNING
    assert re.search(
        rf"Elasticsearch refused \d+ records \(cluster_block_exception \(403\): "
        rf"index \[{re.escape(index)}\] blocked by: \[FORBIDDEN/5/index read-only \(api\)\];: "
        rf"\d+ records\)",
        first,
    ), first
    assert f"storages: {storage.id} " in first
    assert "value-never-logged" not in caplog.text
    await wait_for_stats(
        api, "the block's records written", lambda s: s.written == 6 and s.buffered == 0
    )
    found = await records(es, index_prefix, storage)
    assert sorted(r["key"] for r in found) == [
        "during-0",
        "during-1",
        "during-2",
        "during-3",
        "during-4",
        "first",
    ]
    current = await stats(api)
    assert (current.lost, current.discarded) == (0, 0)


async def test_a_record_that_keeps_failing_is_dropped_after_the_retry_limit(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = await service(
        make_config,
        aiohttp_client,
        KV_STORAGE_APP_HISTORY_FLUSH_SIZE="1",
        KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="50ms",
        KV_STORAGE_APP_HISTORY_RETRY_LIMIT="3",
    )
    storage = await create_storage(history_enabled=True)
    await put(api, storage, "first", "v")
    await wait_for_stats(api, "the first record written", lambda s: s.written == 1)
    index = IndexNames(index_prefix).history(storage.id)
    with caplog.at_level(logging.ERROR, logger="pipeline.actor"):
        async with read_only(es, index):
            response = await api.put(
                path("set", storage, "doomed"),
                data=b"secret-value-never-logged",
                headers={
                    **storage.headers,
                    "Content-Type": "text/plain",
                    "X-Request-ID": "doomed-1",
                },
            )
            assert response.status == 200
            await wait_for_stats(api, "the record dropped", lambda s: s.lost == 1)
    current = await stats(api)
    # retry-limit counts retries, as the original did: the first attempt and 3 retries.
    assert (current.retried, current.buffered) == (3, 0)
    lost = (
        "1 records lost after 4 attempts (1 + retry-limit 3 retries) "
        f"(storages: {storage.id}; requests: doomed-1)"
    )
    assert lost in caplog.text
    assert "secret-value-never-logged" not in caplog.text


async def test_buffered_records_are_written_when_the_process_gets_sigterm(
    es_url: str,
    index_prefix: str,
    initialised_config: Config,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    unused_tcp_port: int,
) -> None:
    environ = {
        **os.environ,
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
        "KV_STORAGE_SERVER_HOST": "127.0.0.1",
        "KV_STORAGE_SERVER_PORT": str(unused_tcp_port),
        "KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT": "1 hour",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kv_storage",
        "serve",
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{unused_tcp_port}"
    storage = await create_storage(history_enabled=True)
    try:
        async with aiohttp.ClientSession() as session:

            async def up() -> bool:
                try:
                    async with session.get(f"{base}/health") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_until(up, timeout_s=30, what="the service answering")
            for n in range(20):
                async with session.put(
                    f"{base}/set/{storage.id}/k{n}",
                    data=f"v{n}",
                    headers={**storage.headers, "Content-Type": "text/plain"},
                ) as response:
                    assert response.status == 200
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stdout is not None
    log = (await process.stdout.read()).decode()
    assert "shutdown flush wrote 20 records, 0 could not be written" in log
    assert sorted(r["key"] for r in await records(es, index_prefix, storage)) == sorted(
        f"k{n}" for n in range(20)
    )


def history_batch(storage: StorageRef, values: list[str]) -> list[tuple[str, HistoryRecord]]:
    return [
        (f"r{n}", HistoryRecord(storage.id, f"k{n}", value, Operation.SET, 1000 + n))
        for n, value in enumerate(values)
    ]


async def test_a_batch_goes_in_bulk_requests_of_at_most_the_byte_cap(
    initialised_config: Config,
    create_storage: StorageFactory,
    es_proxy: CountingProxy,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    storage = await create_storage(history_enabled=True)
    values = ["small"] * 10 + ["x" * 20_000] + ["small"] * 10
    async with AsyncElasticsearch(es_proxy.url) as client:
        store = HistoryStore(client, IndexNames(index_prefix), max_bulk_bytes=4096)
        assert await store.write(history_batch(storage, values)) == WriteResult()
    assert es_proxy.count("PUT", "/_bulk") + es_proxy.count("POST", "/_bulk") == 3
    found = await records(es, index_prefix, storage)
    assert [r["value"] for r in found] == values


@dataclass
class LimitedProxy:
    url: str
    slow_s: float = 0.0
    """How long each request is held back, as by a busy node."""


@pytest.fixture
async def size_limited_es(
    es_url: str, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[LimitedProxy]:
    """The real node behind a proxy that refuses bodies over 8 KB with 413, as Elasticsearch
    does past ``http.max_content_length`` (100 MB: too costly to reach in a test), and that
    can hold requests back (a busy node, which a test cannot order)."""
    session = aiohttp.ClientSession()
    limited = LimitedProxy("")

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        if len(body) > 8192:
            return web.json_response({"error": "content too long"}, status=413)
        await asyncio.sleep(limited.slow_s)
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")
        }
        async with session.request(
            request.method, es_url + request.raw_path, headers=headers, data=body
        ) as answer:
            passed = {"Content-Type": answer.headers.get("Content-Type", "application/json")}
            passed["X-Elastic-Product"] = "Elasticsearch"
            return web.Response(status=answer.status, body=await answer.read(), headers=passed)

    proxy = web.Application()
    proxy.router.add_route("*", "/{tail:.*}", forward)
    server = await aiohttp_server(proxy)
    limited.url = f"http://127.0.0.1:{server.port}"
    yield limited
    await session.close()


async def test_a_request_refused_as_a_whole_fails_only_its_own_records(
    initialised_config: Config,
    create_storage: StorageFactory,
    size_limited_es: LimitedProxy,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    storage = await create_storage(history_enabled=True)
    batch = history_batch(storage, ["a", "b", "x" * 20_000, "c"])
    async with AsyncElasticsearch(size_limited_es.url) as client:
        store = HistoryStore(client, IndexNames(index_prefix), max_bulk_bytes=4096)
        result = await store.write(batch)
        assert (result.retry, result.gone) == (frozenset({"r2"}), frozenset())
        assert list(result.causes) == [
            "the bulk request refused: the request is larger than Elasticsearch accepts (its "
            "http.max_content_length); JSON escaping can make a value several times its own size"
        ]
        with pytest.raises(WriteFailedError):  # every request refused: a failure as a whole
            await store.write(batch[2:3])
    assert [r["value"] for r in await records(es, index_prefix, storage)] == ["a", "b", "c"]


async def test_history_bulk_requests_have_a_timeout_of_their_own(
    initialised_config: Config,
    create_storage: StorageFactory,
    size_limited_es: LimitedProxy,
    es: AsyncElasticsearch,
    index_prefix: str,
) -> None:
    storage = await create_storage(history_enabled=True)
    size_limited_es.slow_s = 1.0
    async with AsyncElasticsearch(size_limited_es.url, request_timeout=0.3) as client:
        names = IndexNames(index_prefix)
        short = HistoryStore(client, names, bulk_timeout_s=0.3)
        with pytest.raises(WriteFailedError):
            await short.write(history_batch(storage, ["a"]))
        store = HistoryStore(client, names, bulk_timeout_s=5.0)  # the client's 0.3 s: no matter
        assert await store.write(history_batch(storage, ["b"])) == WriteResult()
    written = [r["value"] for r in await records(es, index_prefix, storage)]
    assert "b" in written  # ("a" may arrive too: the proxy forwards it after the client gave up)
