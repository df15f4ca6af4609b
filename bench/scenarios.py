"""The scenarios of ``make bench`` (``run.py``), one function each, on a running ``Bench``:
single operations at each connection count (and against a bare aiohttp handler), history,
multi-key operations, lists.

Every scenario drives Elasticsearch directly with the equivalent request first, then the
service, at the same concurrency, and answers its rows.
"""

import json
import statistics
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_scan
from harness import (
    KEY_SPACE,
    NAMES,
    SWEEP,
    Row,
    Run,
    bare_handler,
    cpu_s,
    create_storage,
    es_requests_sent,
    free_port,
    load_keys,
    log,
    node_counters,
    reset_peak_rss,
    rss_kb,
    service,
    service_metrics,
    wait_for_history_written,
    wrk,
)

LIST_SIZES = (10_000, 100_000)
KEYS_100 = [f"key-{n:07d}" for n in range(100)]
PAIRS = {n: {f"k{i}": f"value {i}" for i in range(n)} for n in (100, 1000)}
JSON_TYPE = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Data:
    """The storages the scenarios use, each an (id, secret) pair, loaded once."""

    plain: tuple[str, str]
    """``KEY_SPACE`` keys: single and multi-key operations."""
    history: tuple[str, str]
    """A storage keeping history: the history scenarios."""
    lists: dict[int, tuple[str, str]]
    """By number of keys: the list scenarios."""


async def load_data(es: AsyncElasticsearch, *, quick: bool) -> Data:
    plain = await create_storage(es, history=False)
    history = await create_storage(es, history=True)
    sizes = LIST_SIZES[:1] if quick else LIST_SIZES
    lists = {size: await create_storage(es, history=False) for size in sizes}
    log(f"loading {KEY_SPACE} keys")
    await load_keys(es, plain[0], KEY_SPACE)
    for size, (storage_id, _) in lists.items():
        log(f"loading {size} keys")
        await load_keys(es, storage_id, size)
    return Data(plain, history, lists)


@dataclass
class Bench:
    """A running bench: the node, the service and the bare handler, and how to measure
    through each."""

    es: AsyncElasticsearch
    es_url: str
    data: Data
    stack: AsyncExitStack
    duration_s: int
    connections: int
    session: aiohttp.ClientSession = field(init=False)
    svc: str = field(init=False)
    options: dict[str, Any] = field(init=False)

    async def start(self) -> None:
        port = free_port()
        self.svc = f"http://127.0.0.1:{port}"
        self._service = self.stack.enter_context(service(self.es_url, port))
        self.session = await self.stack.enter_async_context(aiohttp.ClientSession())
        self._bare_port = free_port()
        self._bare = self.stack.enter_context(bare_handler(self._bare_port))
        self.options = {"duration_s": self.duration_s, "connections": self.connections}

    @property
    def plain_index(self) -> str:
        return NAMES.data(self.data.plain[0])

    @property
    def plain_headers(self) -> dict[str, str]:
        return {"Secret-Key": self.data.plain[1]}

    def through_bare(self, scenario: str, **request: Any) -> Run:
        """wrk on the bare handler, with its CPU time per request."""
        cpu_before = cpu_s(self._bare.pid)
        url = f"http://127.0.0.1:{self._bare_port}"
        measured = wrk(scenario, "bare aiohttp", url, **request)
        measured.cpu_us_per_op = (cpu_s(self._bare.pid) - cpu_before) * 1e6 / measured.requests
        log(f"{'':<22} {'bare aiohttp':<14} {measured.cpu_us_per_op:9.0f} us CPU per op")
        return measured

    async def through_service(self, scenario: str, **request: Any) -> Run:
        """wrk on the service, with what it cost the service: its CPU time and the
        Elasticsearch requests it sent, per operation."""
        before = await es_requests_sent(self.session, self.svc)
        cpu_before = cpu_s(self._service.pid)
        target = request.pop("target", "service")
        measured = wrk(scenario, target, self.svc, **{**self.options, **request})
        measured.cpu_us_per_op = (cpu_s(self._service.pid) - cpu_before) * 1e6 / measured.requests
        sent = await es_requests_sent(self.session, self.svc) - before
        measured.es_requests_per_op = sent / measured.requests
        log(
            f"{'':<22} {target:<14} {measured.cpu_us_per_op:9.0f} us CPU per op, "
            f"{measured.es_requests_per_op:.2f} ES requests per op"
        )
        return measured


def _against_bare(scenario: str, bare_run: Run, measured: Run) -> Row:
    """The service's request against the bare handler's: the CPU ratio is issue 26's
    target (get <= 2.5x, set <= 3x)."""
    service_us, bare_us = measured.cpu_us_per_op or 0.0, bare_run.cpu_us_per_op or 1.0
    return Row(
        f"{scenario}, against a bare aiohttp handler",
        bare_run,
        measured,
        f"reference: a bare aiohttp handler on uvloop, {bare_us:.0f} µs CPU per "
        f"request; service / bare CPU per request: {service_us / bare_us:.1f}x",
    )


async def warm_up(bench: Bench) -> None:
    """Both (connections, caches, JIT) before anything is measured."""
    plain_id = bench.data.plain[0]
    wrk(
        "warm-up",
        "service",
        bench.svc,
        method="GET",
        path=f"/get/{plain_id}/key-{{k}}",
        headers=bench.plain_headers,
        duration_s=3,
        connections=bench.connections,
    )
    wrk(
        "warm-up",
        "elasticsearch",
        bench.es_url,
        method="GET",
        path=f"/{bench.plain_index}/_doc/key-{{k}}",
        duration_s=3,
        connections=bench.connections,
    )


@dataclass(frozen=True)
class _Single:
    """A single-key operation: its request to Elasticsearch and to the service, and the node
    counter it moves."""

    name: str
    direct: dict[str, Any]
    through: dict[str, Any]
    counter: str
    counted: str
    """What the counter counts, in the row's note."""


def _singles(bench: Bench) -> tuple[_Single, _Single]:
    plain_id, plain = bench.data.plain[0], bench.plain_headers
    document = f"/{bench.plain_index}/_doc/key-{{k}}"
    get = _Single(
        "get",
        {"method": "GET", "path": document},
        {"method": "GET", "path": f"/get/{plain_id}/key-{{k}}", "headers": plain},
        "get",
        "documents read",
    )
    set_ = _Single(
        "set",
        {
            "method": "PUT",
            "path": document,
            "headers": JSON_TYPE,
            "body": b'{"value": "a small value"}',
        },
        {
            "method": "PUT",
            "path": f"/set/{plain_id}/key-{{k}}",
            "headers": {**plain, "Content-Type": "text/plain"},
            "body": b"a small value",
        },
        "index",
        "documents indexed",
    )
    return get, set_


async def single_operations(bench: Bench) -> tuple[list[Row], Run]:
    """Single gets and sets on random keys at each connection count of ``SWEEP``; at the main
    one, also against the bare handler (the same request, without the secret). Answers the
    rows and the main run's sets (what the history scenarios compare with)."""
    rows: list[Row] = []
    set_plain: Run | None = None
    for connections in sorted({*SWEEP, bench.connections}):
        main = connections == bench.connections
        suffix = "" if main else f" ({connections} conn.)"
        for single in _singles(bench):
            at = {**bench.options, "connections": connections}
            reference = wrk(single.name, "elasticsearch", bench.es_url, **single.direct, **at)
            before = await node_counters(bench.es)
            measured = await bench.through_service(
                single.name, **single.through, connections=connections
            )
            after = await node_counters(bench.es)
            moved = (after[single.counter] - before[single.counter]) / measured.requests
            note = f"node: {moved:.2f} {single.counted} per op"
            rows.append(Row(f"single {single.name}{suffix}", reference, measured, note))
            if main:
                headers = {
                    name: value
                    for name, value in single.through.get("headers", {}).items()
                    if name != "Secret-Key"
                }
                bare_run = bench.through_bare(
                    single.name, **{**single.through, "headers": headers}, **bench.options
                )
                rows.append(_against_bare(f"single {single.name}", bare_run, measured))
                if single.name == "set":
                    set_plain = measured
    assert set_plain is not None
    return rows, set_plain


async def history(bench: Bench, set_plain: Run) -> list[Row]:
    """Sets with history against sets without; sets while history cannot be written."""
    history_id, history_secret = bench.data.history
    # The history storage's indices made first, as the plain storage's are: creating an
    # index under load stalls its writes for a moment, which is not what is measured here.
    async with bench.session.put(
        f"{bench.svc}/set/{history_id}/warm",
        data=b"v",
        headers={"Secret-Key": history_secret, "Content-Type": "text/plain"},
    ) as answer:
        answer.raise_for_status()
    await wait_for_history_written(bench.session, bench.svc)
    set_history = await bench.through_service(
        "set",
        target="service+history",
        method="PUT",
        path=f"/set/{history_id}/key-{{k}}",
        headers={"Secret-Key": history_secret, "Content-Type": "text/plain"},
        body=b"a small value",
    )
    # Counted before the buffer is drained: the records still waiting are not in it.
    with_history = Row(
        "set with history vs without", set_plain, set_history, "both through the service"
    )
    await wait_for_history_written(bench.session, bench.svc)
    return [with_history, await _history_fault_row(bench, set_history)]


async def multi_key(bench: Bench) -> list[Row]:
    """A multi-get of 100 keys; multi-sets of 100 and 1,000."""
    es, plain_id, plain, options = bench.es, bench.data.plain[0], bench.plain_headers, bench.options
    reference = wrk(
        "mget 100",
        "elasticsearch",
        bench.es_url,
        method="POST",
        path=f"/{bench.plain_index}/_mget",
        headers=JSON_TYPE,
        body=json.dumps({"ids": KEYS_100}).encode(),
        **options,
    )
    measured = await bench.through_service(
        "mget 100",
        method="POST",
        path=f"/get/{plain_id}",
        headers={**plain, **JSON_TYPE},
        body=json.dumps(KEYS_100).encode(),
    )
    rows = [Row("multi-get 100", reference, measured)]
    for count in (100, 1000):
        before = await node_counters(es)
        reference = wrk(
            f"mset {count}",
            "elasticsearch",
            bench.es_url,
            method="POST",
            path="/_bulk",
            headers={"Content-Type": "application/x-ndjson"},
            body=_bulk_body(bench.plain_index, count),
            **options,
        )
        after = await node_counters(es)
        es_per_op = (after["bulk"] - before["bulk"]) / reference.requests
        before = await node_counters(es)
        measured = await bench.through_service(
            f"mset {count}",
            method="PUT",
            path=f"/set/{plain_id}",
            headers={**plain, **JSON_TYPE},
            body=json.dumps(PAIRS[count]).encode(),
        )
        after = await node_counters(es)
        per_op = (after["bulk"] - before["bulk"]) / measured.requests
        rows.append(
            Row(
                f"multi-set {count}",
                reference,
                measured,
                f"node: shard bulk operations per op: service {per_op:.2f}, "
                f"direct _bulk {es_per_op:.2f}",
            )
        )
    return rows


def _bulk_body(index: str, count: int) -> bytes:
    lines = []
    for key, value in PAIRS[count].items():
        lines.append(json.dumps({"index": {"_index": index, "_id": key}}))
        lines.append(json.dumps({"value": value}))
    return ("\n".join(lines) + "\n").encode()


async def lists(bench: Bench) -> list[Row]:
    """Whole lists, timed; a page of 100 by prefix in the largest storage, driven by wrk."""
    # The lists get a service process of their own: memory that the scenarios before
    # freed (a 1,000-key multi-set's) could otherwise hold a list of every key unseen.
    list_port = free_port()
    lister = bench.stack.enter_context(service(bench.es_url, list_port))
    list_svc = f"http://127.0.0.1:{list_port}"
    rows = [
        await _list_row(bench.es, list_svc, size, storage_id, secret, lister.pid)
        for size, (storage_id, secret) in bench.data.lists.items()
    ]
    largest, (storage_id, secret) = max(bench.data.lists.items())
    rows.append(await _prefix_page_row(bench, largest, storage_id, secret))
    return rows


BUFFER_SHARE = 100_000 // 10
"""Of the service's app.history.buffer-size (100,000 by default), one storage's share (a
tenth by default): the fault scenario's storage fills it, then its further records are
dropped while the sets are measured."""


async def _history_fault_row(bench: "Bench", healthy: Run) -> Row:
    """Sets while history cannot be written: the storage's history index is read-only (the
    block Elasticsearch puts on indices at the disk's flood-stage watermark) until the
    service's buffer holds the storage's share of it (``BUFFER_SHARE``), then the sets are
    measured as in the healthy run. Storage requests must not pay for history. (Not the plain
    write block: that one is a deleted storage's, whose records the service discards.)"""
    es, session, svc = bench.es, bench.session, bench.svc
    storage_id, secret = bench.data.history
    index = NAMES.history(storage_id)
    blocked = "index.blocks.read_only_allow_delete"
    await es.indices.put_settings(index=index, settings={blocked: True})
    headers = {"Secret-Key": secret, "Content-Type": "application/json"}
    filled = 0.0
    try:
        deadline = time.monotonic() + 300
        while filled < BUFFER_SHARE:
            pairs = {f"fill-{n}": "v" for n in range(1000)}
            async with session.put(
                f"{svc}/set/{storage_id}", json=pairs, headers=headers
            ) as answer:
                answer.raise_for_status()
            metrics = await service_metrics(session, svc)
            filled = metrics["kv_storage_history_buffered_records"]
            if time.monotonic() > deadline:
                raise RuntimeError(f"the history buffer held only {filled:.0f} records")
        log(f"history buffer full ({filled:.0f} records); measuring sets")
        faulty = await bench.through_service(
            "set",
            target="service+history fault",
            method="PUT",
            path=f"/set/{storage_id}/s{{n}}",
            headers={"Secret-Key": secret, "Content-Type": "text/plain"},
            body=b"a small value",
        )
        buffered = (await service_metrics(session, svc))["kv_storage_history_buffered_records"]
    finally:
        await es.indices.put_settings(index=index, settings={blocked: None})
    await wait_for_history_written(session, svc)
    return Row(
        "set, history write-blocked vs healthy",
        healthy,
        faulty,
        f"both through the service; {buffered:,.0f} history records buffered while measured",
    )


async def _prefix_page_row(bench: "Bench", size: int, storage_id: str, secret: str) -> Row:
    """One page of 100 keys by prefix in the largest storage: the service's GET /list with
    prefix and limit against the search it makes (search_after on the key field, the keys
    read from the hits' sort values), sent directly, one request per page. Both are
    warmed up first: a search Elasticsearch has not run for a while is several times slower
    for its first seconds, which would flatter the service."""
    prefix, after = "key-00012", "key-0001234"
    query = {
        "query": {"bool": {"filter": [{"prefix": {"key": prefix}}]}},
        "sort": [{"key": {"order": "asc", "unmapped_type": "keyword"}}],
        "search_after": [after],
        "size": 101,
        "stored_fields": "_none_",
        "track_total_hits": False,
    }
    direct: dict[str, Any] = {
        "method": "POST",
        "path": f"/{NAMES.data(storage_id)}/_search",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(query).encode(),
    }
    service: dict[str, Any] = {
        "method": "GET",
        "path": f"/list/{storage_id}?prefix={prefix}&after={after}&limit=100",
        "headers": {"Secret-Key": secret},
    }
    es_url, svc, options = bench.es_url, bench.svc, bench.options
    warm_up = {**options, "duration_s": 5}
    wrk("warm-up", "elasticsearch", es_url, **direct, **warm_up)
    wrk("warm-up", "service", svc, **service, **warm_up)
    reference = wrk("prefix page 100", "elasticsearch", es_url, **direct, **options)
    measured = await bench.through_service("prefix page 100", **service)
    return Row(f"list a page of 100 by prefix ({size:,} keys)", reference, measured, "")


async def _list_row(
    es: AsyncElasticsearch, svc: str, size: int, storage_id: str, secret: str, pid: int
) -> Row:
    """A list is one long request: timed, three times each, instead of driven by wrk."""
    index = NAMES.data(storage_id)
    direct: list[float] = []
    through: list[float] = []
    growth_kb = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            started = time.perf_counter()
            count = 0
            async for _hit in async_scan(
                es, index=index, query={"sort": ["_doc"]}, _source=False, size=1000, scroll="1m"
            ):
                count += 1
            direct.append(time.perf_counter() - started)
            assert count == size, count

            baseline = rss_kb(pid, "VmRSS")
            reset_peak_rss(pid)
            started = time.perf_counter()
            async with session.get(
                f"{svc}/list/{storage_id}", headers={"Secret-Key": secret}
            ) as answer:
                assert answer.status == 200
                listed = 0
                async for chunk in answer.content.iter_chunked(65536):
                    listed += chunk.count(b",")
            through.append(time.perf_counter() - started)
            assert listed + 1 == size, listed
            growth_kb = max(growth_kb, rss_kb(pid, "VmHWM") - baseline)
    ref_s, svc_s = statistics.median(direct), statistics.median(through)
    log(
        f"list {size}: scan {ref_s:.2f} s, service {svc_s:.2f} s, peak RSS growth {growth_kb / 1024:.1f} MB"
    )
    reference = Run(f"list {size}", "elasticsearch", 1 / ref_s, ref_s * 1000, ref_s * 1000, 3)
    measured = Run(f"list {size}", "service", 1 / svc_s, svc_s * 1000, svc_s * 1000, 3)
    return Row(
        f"list {size:,} keys", reference, measured, f"peak RSS growth {growth_kb / 1024:.1f} MB"
    )
