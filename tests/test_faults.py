"""Faults a real node can be made to have: Elasticsearch stopped under traffic and started
again, Elasticsearch hanging (SIGSTOP) under traffic and resuming, and history written during
an outage. The node is a dedicated one (``test-faults``), stopped and started by these tests
alone."""

import asyncio
import os
import signal
import subprocess
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from elasticsearch import AsyncElasticsearch
from elasticsearch.exceptions import GeneralAvailabilityWarning

from kv_storage.app import create_app
from kv_storage.app_keys import SERVICE
from kv_storage.config import Config, load_config
from kv_storage.es.names import IndexNames
from kv_storage.es.provisioning import initialise
from tests.conftest import StorageRef
from tests.helpers import Client, path
from tests.waiting import wait_until

ROOT = Path(__file__).parents[1]
LOCAL_ES = ROOT / "scripts" / "local-es.sh"
NODE = "test-faults"
NODE_PID_FILE = ROOT / ".cache" / "es-nodes" / NODE / "pid"
REQUEST_TIMEOUT_S = 2.0
ANSWER_MARGIN_S = 1.0
"""What an answer may take beyond app.request-timeout: the event loop under load."""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # stops, freezes and restarts the node


def local_es(*args: str) -> str:
    result = subprocess.run(
        [str(LOCAL_ES), *args, "--name", NODE],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


_port: list[str] = []


@pytest.fixture(scope="module")
def fault_node() -> Iterator[str]:
    url = local_es("start")
    _port[:] = [url.rsplit(":", 1)[1]]
    yield url
    local_es("stop")


async def start_node() -> str:
    """Back on the same port: the service's configuration names it."""
    return await asyncio.to_thread(local_es, "start", "--port", _port[0])


async def stop_node() -> None:
    await asyncio.to_thread(local_es, "stop")


@pytest.fixture
def history_flush_timeout() -> str:
    """app.history.flush-timeout of the service under test; a test may parametrize it."""
    return "300ms"


@pytest.fixture
async def faulty(
    fault_node: str,
    index_prefix: str,
    history_flush_timeout: str,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> AsyncIterator[tuple[Client, StorageRef, AsyncElasticsearch]]:
    """A service on the dedicated node, with one history-keeping storage, cached already."""
    await start_node()  # a no-op, unless a failed test left the node stopped
    es = AsyncElasticsearch(fault_node)
    await initialise(es, index_prefix)
    storage = StorageRef("faulty-storage", "faulty-secret")
    await es.index(
        index=IndexNames(index_prefix).registry,
        id=storage.id,
        document={
            "type": "ACCOUNT",
            "deleted": False,
            "history_enabled": True,
            "secret_key": storage.secret_key,
            "last_updated": int(time.time() * 1000),
        },
        refresh=True,
    )
    config: Config = load_config(
        environ={
            "KV_STORAGE_ELASTICSEARCH_URI": fault_node,
            "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
            "KV_STORAGE_APP_REQUEST_TIMEOUT": f"{REQUEST_TIMEOUT_S}s",
            "KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT": history_flush_timeout,
            "KV_STORAGE_APP_HISTORY_RETRY_LIMIT": "1000",
        }
    )
    api = await aiohttp_client(create_app(config))
    response = await api.put(
        path("set", storage, "warm"),
        data=b"v",
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    assert response.status == 200
    yield api, storage, es
    await es.close()


@dataclass(frozen=True)
class Answer:
    key: str
    started: float
    """time.monotonic() when the request was sent."""
    status: int
    body: dict[str, Any] | None
    seconds: float


async def set_value(api: Client, storage: StorageRef, key: str) -> Answer:
    started = time.monotonic()
    response = await api.put(
        path("set", storage, key),
        data=key.encode(),
        headers={**storage.headers, "Content-Type": "text/plain"},
    )
    body = await response.json() if response.content_type == "application/json" else None
    return Answer(key, started, response.status, body, time.monotonic() - started)


BIG_MULTI_SET = 10_000  # server.max-keys-per-request


async def multi_set(api: Client, storage: StorageRef, count: int) -> Answer:
    started = time.monotonic()
    response = await api.put(
        path("set", storage),
        json={f"big-{n}": "v" for n in range(count)},
        headers=storage.headers,
    )
    body = await response.json()
    return Answer(
        f"multi-set of {count}", started, response.status, body, time.monotonic() - started
    )


async def bulk_running(es: AsyncElasticsearch, count: int) -> bool:
    """Whether Elasticsearch is at work on a bulk request of ``count`` items."""
    with warnings.catch_warnings():
        # The client calls the task API a preview; the server has had it for many versions.
        warnings.simplefilter("ignore", GeneralAvailabilityWarning)
        tasks = await es.tasks.list(actions="indices:data/write/bulk", detailed=True)
    return any(
        f"requests[{count}]" in task.get("description", "")
        for node in tasks["nodes"].values()
        for task in node["tasks"].values()
    )


async def get_value(api: Client, storage: StorageRef, key: str) -> Answer:
    started = time.monotonic()
    response = await api.get(path("get", storage, key), headers=storage.headers)
    body = await response.json() if response.content_type == "application/json" else None
    return Answer(key, started, response.status, body, time.monotonic() - started)


async def traffic_across(
    api: Client,
    storage: StorageRef,
    fault: Callable[[], Awaitable[None]],
    *,
    label: str,
    readers: int = 0,
) -> tuple[list[Answer], float]:
    """Sets from 8 clients (and gets of a key that exists from ``readers`` more) without
    pause, before, while and after ``fault`` happens, so that requests are in flight when it
    strikes; the fault waits until both kinds have been answered. Returns every answer, and
    when ``fault`` was over; by then at least 16 requests were sent after it."""
    answers: list[Answer] = []
    done = asyncio.Event()

    async def client(number: int) -> None:
        sent = 0
        while not done.is_set():
            answers.append(await set_value(api, storage, f"{label}-{number}-{sent}"))
            sent += 1

    async def reader() -> None:
        while not done.is_set():
            answers.append(await get_value(api, storage, "warm"))

    clients = [asyncio.create_task(client(n)) for n in range(8)]
    clients += [asyncio.create_task(reader()) for _ in range(readers)]
    try:

        async def flowing() -> bool:
            # Gets too, when there are readers: under load the first 16 answers may all be
            # sets, and the fault would then meet gets that never had a chance to succeed.
            got = readers == 0 or any(a.key == "warm" and a.status == 200 for a in answers)
            return len(answers) >= 16 and got

        await wait_until(flowing, what="traffic flowing")
        await fault()
        fault_over = time.monotonic()

        async def sent_after_fault() -> bool:
            return sum(answer.started > fault_over for answer in answers) >= 16

        await wait_until(sent_after_fault, timeout_s=30, what="16 requests after the fault")
    finally:
        done.set()
        await asyncio.gather(*clients)
    return answers, fault_over


def assert_failed_well(answer: Answer, *causes: str) -> None:
    """A 500 in time, with a JSON body whose error names one of ``causes``."""
    assert answer.status == 500, answer
    assert answer.body is not None, answer
    assert any(cause in answer.body["error"] for cause in causes), answer
    assert answer.seconds <= REQUEST_TIMEOUT_S + ANSWER_MARGIN_S, answer


async def assert_unhealthy(api: Client) -> None:
    started = time.monotonic()
    health = await api.get("/health", params={"detailed": "true"})
    assert health.status == 500
    assert (await health.json())["status"] == "UNHEALTHY"
    assert time.monotonic() - started <= REQUEST_TIMEOUT_S + ANSWER_MARGIN_S


async def assert_serving_again(api: Client, storage: StorageRef, key: str) -> None:
    """The same service (no restart) writes and reads again, and says it is healthy."""

    async def serving_again() -> bool:
        return (await set_value(api, storage, key)).status == 200

    await wait_until(serving_again, timeout_s=60, interval_s=0.5, what="the service serving again")
    response = await api.get(path("get", storage, key), headers=storage.headers)
    assert (response.status, await response.text()) == (200, key)
    assert (await api.get("/health", params={"detailed": "true"})).status == 200


async def test_elasticsearch_stopped_under_traffic_and_back(
    faulty: tuple[Client, StorageRef, AsyncElasticsearch],
) -> None:
    api, storage, _ = faulty
    answers, stopped = await traffic_across(api, storage, stop_node, label="stop")
    for answer in answers:
        if answer.status != 200 or answer.started > stopped:
            assert_failed_well(answer, "Elasticsearch")
    # Requests sent while the node was shutting down, not only once it was gone.
    assert any(answer.status == 500 and answer.started < stopped for answer in answers)
    await assert_unhealthy(api)

    await start_node()
    await assert_serving_again(api, storage, "after-stop")


async def test_elasticsearch_hanging_under_traffic_and_resuming(
    faulty: tuple[Client, StorageRef, AsyncElasticsearch],
) -> None:
    """A node that takes connections and never answers (stopped with SIGSTOP, as a node in a
    long GC pause or on a frozen host): every request still gets its answer in time."""
    api, storage, es = faulty
    pid = int(NODE_PID_FILE.read_text())
    in_flight: list[asyncio.Task[Answer]] = []

    async def hang() -> None:
        # A multi-set large enough to be seen at work in Elasticsearch: frozen then, it is
        # surely a request waiting on the node (the small sets around it may all have had
        # their answers already).
        in_flight.append(asyncio.create_task(multi_set(api, storage, BIG_MULTI_SET)))
        await wait_until(
            lambda: bulk_running(es, BIG_MULTI_SET),
            interval_s=0.01,
            what="the multi-set at work in Elasticsearch",
        )
        os.kill(pid, signal.SIGSTOP)

    try:
        answers, hung = await traffic_across(api, storage, hang, label="hang")
        for answer in [*answers, await in_flight[0]]:
            if answer.status != 200 or answer.started > hung:
                # Also an answer cut short by the request's own deadline names Elasticsearch.
                assert_failed_well(answer, "Elasticsearch did not answer in time")
        # The request waiting on the node when it froze gets its answer in time as well.
        assert in_flight[0].result().status == 500
        await assert_unhealthy(api)
    finally:
        os.kill(pid, signal.SIGCONT)
    await assert_serving_again(api, storage, "after-hang")


async def test_elasticsearch_stopping_and_hanging_while_batches_are_in_flight(
    faulty: tuple[Client, StorageRef, AsyncElasticsearch],
) -> None:
    """Gets and sets of 24 clients, batched: when the node freezes (SIGSTOP), the batches out
    and the operations waiting behind them are all answered within the request timeout, and
    the answer names Elasticsearch as the cause; so too when the node then stops."""
    api, storage, _ = faulty
    pid = int(NODE_PID_FILE.read_text())

    async def freeze() -> None:
        os.kill(pid, signal.SIGSTOP)

    try:
        answers, frozen = await traffic_across(api, storage, freeze, label="freeze", readers=16)
        assert any(answer.key == "warm" and answer.status == 200 for answer in answers)
        waited = [answer for answer in answers if answer.status != 200 or answer.started > frozen]
        assert sum(answer.key == "warm" for answer in waited) >= 8, waited  # gets among them
        for answer in waited:
            assert_failed_well(answer, "Elasticsearch did not answer in time")
    finally:
        os.kill(pid, signal.SIGCONT)
    await assert_serving_again(api, storage, "after-freeze")

    answers, stopped = await traffic_across(api, storage, stop_node, label="gone", readers=16)
    for answer in answers:
        if answer.status != 200 or answer.started > stopped:
            assert_failed_well(answer, "Elasticsearch")
    await start_node()
    await assert_serving_again(api, storage, "after-stop")


# Long enough that the records surely wait in the buffer when the node is gone (the stop
# takes a few seconds), and the first write of them fails.
@pytest.mark.parametrize("history_flush_timeout", ["15s"])
async def test_history_of_a_short_outage_is_all_written(
    faulty: tuple[Client, StorageRef, AsyncElasticsearch], index_prefix: str
) -> None:
    api, storage, es = faulty
    history = api.app[SERVICE].history
    keys = [f"k{n}" for n in range(50)]
    answers = await asyncio.gather(*(set_value(api, storage, key) for key in keys))
    assert {answer.status for answer in answers} == {200}
    await stop_node()
    stats = await history.stats()
    # The warm-up record and these 50: none tried yet, so each must survive a failed write.
    assert (stats.buffered, stats.flushes) == (len(keys) + 1, 0), stats
    await wait_until(
        lambda: _retried(history), timeout_s=30, interval_s=0.2, what="a failed history write"
    )
    assert (await history.stats()).retried == len(keys) + 1
    await start_node()
    await wait_until(
        lambda: _settled(history), timeout_s=60, interval_s=0.2, what="the records written"
    )
    index = IndexNames(index_prefix).history(storage.id)
    await es.indices.refresh(index=index)
    found = await es.search(index=index, size=1000, query={"terms": {"key": keys}})
    written = sorted(hit["_source"]["key"] for hit in found["hits"]["hits"])
    assert written == sorted(keys)  # each record once: none lost, none duplicated
    stats = await history.stats()
    assert (stats.written, stats.lost, stats.dropped) == (len(keys) + 1, 0, 0), stats


async def _settled(history: object) -> bool:
    stats = await history.stats()  # type: ignore[attr-defined]
    return bool(stats.buffered == 0)


async def _retried(history: object) -> bool:
    stats = await history.stats()  # type: ignore[attr-defined]
    return bool(stats.retried > 0)
