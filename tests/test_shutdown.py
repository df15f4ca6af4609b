"""SIGTERM to the service under write load: what was acknowledged is in Elasticsearch."""

import asyncio
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_scan

from kv_storage.config import Config
from kv_storage.es.names import IndexNames
from tests.conftest import StorageFactory
from tests.processes import service_process
from tests.waiting import wait_until

pytestmark = pytest.mark.slow  # real processes shut down under load


async def test_sigterm_under_write_load_keeps_every_acknowledged_write_and_its_history(
    es_url: str,
    index_prefix: str,
    initialised_config: Config,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    unused_tcp_port: int,
) -> None:
    storage = await create_storage(history_enabled=True)
    environ = {
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
        "KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT": "1 hour",  # all history waits for the shutdown
    }
    acknowledged: list[str] = []
    refused = 0  # the server no longer listens: fine, the client may retry elsewhere
    cut_off: list[str] = []  # accepted, then dropped without an answer: never fine
    stop_writing = asyncio.Event()
    async with service_process(environ, unused_tcp_port) as (process, base):
        # A new connection per request: after SIGTERM, a request is either served or refused.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def writer(number: int) -> None:
                """Writes until told to stop or the service has exited."""
                nonlocal refused
                sent = 0
                while not stop_writing.is_set():
                    key = f"w{number}-{sent}"
                    sent += 1
                    try:
                        async with session.put(
                            f"{base}/set/{storage.id}/{key}",
                            data=key,
                            headers={**storage.headers, "Content-Type": "text/plain"},
                        ) as answer:
                            if answer.status == 200:
                                acknowledged.append(key)
                    except aiohttp.ClientConnectorError:
                        refused += 1
                        if process.returncode is not None:
                            return
                    except aiohttp.ClientError as error:
                        cut_off.append(f"{key}: {error!r}")

            writers = [asyncio.create_task(writer(n)) for n in range(8)]

            async def loaded() -> bool:
                return len(acknowledged) >= 200

            await wait_until(loaded, what="200 acknowledged writes")
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                assert await process.wait() == 0
            stop_writing.set()
            await asyncio.gather(*writers)
        assert process.stdout is not None
        log = (await process.stdout.read()).decode()
    assert "Traceback" not in log
    # A request the server accepted must get an answer, even one that races the SIGTERM.
    assert cut_off == [], (
        f"{len(cut_off)} requests cut off without an answer "
        f"({refused} refused, which is fine): {cut_off[:5]}"
    )
    assert "0 could not be written" in log
    data_index = IndexNames(index_prefix).data(storage.id)
    found = await es.mget(index=data_index, ids=acknowledged)
    missing = [doc["_id"] for doc in found["docs"] if not doc.get("found")]
    assert missing == [], f"{len(missing)} acknowledged writes lost"
    history_index = IndexNames(index_prefix).history(storage.id)
    await es.indices.refresh(index=history_index)
    recorded = set()
    async for page_key in _history_keys(es, history_index):
        recorded.add(page_key)
    assert set(acknowledged) <= recorded, (
        f"{len(set(acknowledged) - recorded)} history records lost"
    )


async def _history_keys(es: AsyncElasticsearch, index: str) -> AsyncIterator[str]:
    async for hit in async_scan(
        es, index=index, query={"query": {"match_all": {}}}, _source=["key"]
    ):
        yield hit["_source"]["key"]
