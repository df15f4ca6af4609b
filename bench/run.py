"""Benchmarks of kv-storage against the Elasticsearch under it, measured in one run.

For each scenario, wrk drives first Elasticsearch directly with the equivalent request, then
the service, at the same concurrency; the table gives throughput, p50 and p99 latency and the
ratio service / Elasticsearch. Everything runs on this one machine (wrk, the service and
Elasticsearch share its cores), which the results say.

    .venv/bin/python bench/run.py [--duration 10] [--connections 16] [--quick]

It starts the local Elasticsearch (scripts/local-es.sh, node "bench") and the service as a
real process configured as in production, loads its data under the index prefix "bench-",
and writes docs/benchmarks-latest.md (and .json) and docs/benchmarks.png; with an earlier
run's rows (``--before``, by default docs/benchmarks-before.json) it adds the before/after
table and plots both.
"""

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk, async_scan
from prometheus_client.parser import text_string_to_metric_families

from kv_storage.es.names import IndexNames
from kv_storage.es.registry import Registry, RegistryEntry
from kv_storage.model import StorageType

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "bench-"
NAMES = IndexNames(PREFIX)
LUA = ROOT / "bench" / "wrk" / "request.lua"
DOCS = ROOT / "docs"
HISTORY_DRAIN_DEADLINE_S = 300
BUFFER_SHARE = 100_000 // 10
"""Of the service's app.history.buffer-size (100,000 by default), one storage's share (a
tenth by default): the fault scenario's storage fills it, then its further records are
dropped while the sets are measured."""


@dataclass
class Run:
    scenario: str
    target: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    connections: int = 0
    cpu_us_per_op: float | None = None
    """The service process's CPU time (user + system) per operation, from /proc."""
    es_requests_per_op: float | None = None
    """Requests the service sent to Elasticsearch per operation (its own count)."""


@dataclass
class Row:
    scenario: str
    reference: Run
    service: Run
    note: str = ""

    @property
    def throughput_ratio(self) -> float:
        return self.service.requests_per_s / self.reference.requests_per_s

    @property
    def p99_ratio(self) -> float:
        return self.service.p99_ms / self.reference.p99_ms


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# wrk ------------------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _latency_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def wrk(
    scenario: str,
    target: str,
    base: str,
    *,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    duration_s: int,
    connections: int,
) -> Run:
    environment = {
        **os.environ,
        "BENCH_METHOD": method,
        "BENCH_PATH": path,
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in (headers or {}).items()),
        "BENCH_KEY_SPACE": str(KEY_SPACE),
    }
    with tempfile.NamedTemporaryFile(suffix=".body") as body_file:
        if body is not None:
            body_file.write(body)
            body_file.flush()
            environment["BENCH_BODY_FILE"] = body_file.name
        command = [
            "wrk",
            f"-t{min(2, connections)}",
            f"-c{connections}",
            f"-d{duration_s}s",
            "--latency",
            "-s",
            str(LUA),
            base,
        ]
        output = subprocess.run(
            command, env=environment, capture_output=True, text=True, check=True
        ).stdout
    if "Non-2xx or 3xx responses" in output:
        raise RuntimeError(f"{scenario} on {target}: errors in the answers\n{output}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _latency_ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _latency_ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    log(f"{scenario:<22} {target:<14} {rps:>9.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
    return Run(scenario, target, rps, p50, p99, total, connections)


# The service process --------------------------------------------------------------------------


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, failure: str) -> None:
    """Until ``process`` accepts connections on ``port`` (30 s at most; it must not exit)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError as error:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(failure) from error
            time.sleep(0.2)


@contextmanager
def service(
    es_url: str,
    port: int,
    checkout: Path = ROOT,
    *,
    prefix: str = PREFIX,
    settings: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``kv-storage serve`` of ``checkout`` (its own code; this Python environment) on
    ``prefix``; ``settings``: more ``KV_STORAGE_*`` variables."""
    environment = {
        **os.environ,
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": prefix,
        "KV_STORAGE_SERVER_HOST": "127.0.0.1",
        "KV_STORAGE_SERVER_PORT": str(port),
        "KV_STORAGE_APP_REQUEST_TIMEOUT": "30 seconds",
        **(settings or {}),
    }
    log_file = open(ROOT / ".cache" / f"bench-service-{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "kv_storage", "serve"],
        cwd=checkout,
        env=environment,
        stdout=log_file,
        stderr=log_file,
    )
    try:
        _wait_until_listening(
            process, port, f"the service did not start; see .cache/bench-service-{port}.log"
        )
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log_file.close()


@contextmanager
def bare_handler(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """``bench/bare.py``: a bare aiohttp handler on uvloop, the yardstick of the service's
    CPU per request."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bare.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_listening(process, port, "the bare handler did not start")
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found")


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


# Data and counters -----------------------------------------------------------------------------


async def create_storage(es: AsyncElasticsearch, *, history: bool) -> tuple[str, str]:
    """An ACCOUNT storage of the per-storage layout (its data in an index of its own, which
    the rows query directly), written by the service's own registry code."""
    entry = RegistryEntry(
        id=str(uuid.uuid4()),
        type=StorageType.ACCOUNT,
        deleted=False,
        history_enabled=history,
        secret_key=uuid.uuid4().hex,
        account="bench",
        name="bench",
    )
    await Registry(es, NAMES).create(entry)
    return entry.id, entry.secret_key


async def load_keys(es: AsyncElasticsearch, storage_id: str, count: int) -> None:
    actions = (
        {
            "_index": NAMES.data(storage_id),
            "_id": f"key-{n:07d}",
            "key": f"key-{n:07d}",
            "value": f"value {n}",
        }
        for n in range(count)
    )
    await async_bulk(es, actions, chunk_size=5000, refresh=True)


async def node_counters(es: AsyncElasticsearch) -> dict[str, int]:
    stats = await es.nodes.stats(metric="indices", index_metric="get,indexing,bulk")
    node = next(iter(stats["nodes"].values()))
    return {
        "get": node["indices"]["get"]["total"],
        "index": node["indices"]["indexing"]["index_total"],
        "bulk": node["indices"]["bulk"]["total_operations"],
    }


async def service_metrics(session: aiohttp.ClientSession, svc: str) -> dict[str, float]:
    """The service's /metrics, each sample name summed over its labels."""
    async with session.get(f"{svc}/metrics") as answer:
        answer.raise_for_status()
        text = await answer.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


async def es_requests_sent(session: aiohttp.ClientSession, svc: str) -> float:
    """Every request the service has sent to Elasticsearch, by its own count: whatever the kind
    (get, index, bulk, search, refresh) and including what its actors send in the background."""
    metrics = await service_metrics(session, svc)
    return metrics.get("kv_storage_elasticsearch_requests_total", 0.0)


async def wait_for_history_written(session: aiohttp.ClientSession, svc: str) -> None:
    """Until the service's history buffer is empty, so that the flushes of one scenario's
    records do not land in the next scenario's numbers."""
    deadline = time.monotonic() + HISTORY_DRAIN_DEADLINE_S
    while True:
        buffered = (await service_metrics(session, svc))["kv_storage_history_buffered_records"]
        if buffered == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{buffered:.0f} history records still buffered after {HISTORY_DRAIN_DEADLINE_S} s"
            )
        await asyncio.sleep(0.5)


# Scenarios ---------------------------------------------------------------------------------------

KEY_SPACE = 10_000
"""Single gets and sets pick a random key among this many stored ones (``{k}`` in a path)."""
SWEEP = (1, 16, 64)
"""Connections of the single get and single set sweep; the main rows use ``--connections``."""


def cpu_s(pid: int) -> float:
    """CPU time (user + system) the process has used so far, from its own counters."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_node() -> str:
    """The local node ``bench`` (started if it does not run): its URL."""
    started = subprocess.run(
        [str(ROOT / "scripts" / "local-es.sh"), "start", "--name", "bench", "--heap", "1g"],
        check=True,
        capture_output=True,
        text=True,
    )
    es_url = started.stdout.strip().splitlines()[-1]
    log(f"Elasticsearch at {es_url}")
    return es_url


async def fresh_layout(es: AsyncElasticsearch, es_url: str) -> None:
    """Nothing left of an earlier run under the prefix, and ``kv-storage init``'s layout."""
    for name in (await es.indices.get(index=f"{PREFIX}*", expand_wildcards="all")).body:
        await es.indices.delete(index=name)
    init = subprocess.run(
        [sys.executable, "-m", "kv_storage", "init"],
        env={
            **os.environ,
            "KV_STORAGE_ELASTICSEARCH_URI": es_url,
            "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": PREFIX,
        },
        capture_output=True,
        text=True,
    )
    if init.returncode:
        raise RuntimeError(init.stderr)


async def run(args: argparse.Namespace) -> list[Row]:
    es_url = start_node()
    es = AsyncElasticsearch(es_url, request_timeout=120)
    await fresh_layout(es, es_url)

    plain_id, plain_secret = await create_storage(es, history=False)
    history_id, history_secret = await create_storage(es, history=True)
    list_sizes = [10_000] if args.quick else [10_000, 100_000]
    list_storages = {size: await create_storage(es, history=False) for size in list_sizes}
    log(f"loading {KEY_SPACE} keys")
    await load_keys(es, plain_id, KEY_SPACE)
    for size, (storage_id, _) in list_storages.items():
        log(f"loading {size} keys")
        await load_keys(es, storage_id, size)

    port = free_port()
    svc = f"http://127.0.0.1:{port}"
    data_index = NAMES.data(plain_id)
    json_type = {"Content-Type": "application/json"}
    plain = {"Secret-Key": plain_secret}
    keys100 = [f"key-{n:07d}" for n in range(100)]
    pairs = {n: {f"k{i}": f"value {i}" for i in range(n)} for n in (100, 1000)}
    options = {"duration_s": args.duration, "connections": args.connections}
    rows: list[Row] = []

    def bulk_body(count: int) -> bytes:
        lines = []
        for key, value in pairs[count].items():
            lines.append(json.dumps({"index": {"_index": data_index, "_id": key}}))
            lines.append(json.dumps({"value": value}))
        return ("\n".join(lines) + "\n").encode()

    async with AsyncExitStack() as stack:
        process = stack.enter_context(service(es_url, port))
        session = await stack.enter_async_context(aiohttp.ClientSession())

        bare_port = free_port()
        bare = stack.enter_context(bare_handler(bare_port))

        def through_bare(scenario: str, **request: Any) -> Run:
            """wrk on the bare handler, with its CPU time per request."""
            cpu_before = cpu_s(bare.pid)
            measured = wrk(scenario, "bare aiohttp", f"http://127.0.0.1:{bare_port}", **request)
            measured.cpu_us_per_op = (cpu_s(bare.pid) - cpu_before) * 1e6 / measured.requests
            log(f"{'':<22} {'bare aiohttp':<14} {measured.cpu_us_per_op:9.0f} us CPU per op")
            return measured

        def against_bare(scenario: str, bare_run: Run, measured: Run) -> Row:
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

        async def through_service(scenario: str, **request: Any) -> Run:
            """wrk on the service, with what it cost the service: its CPU time and the
            Elasticsearch requests it sent, per operation."""
            before = await es_requests_sent(session, svc)
            cpu_before = cpu_s(process.pid)
            target = request.pop("target", "service")
            measured = wrk(scenario, target, svc, **{**options, **request})
            measured.cpu_us_per_op = (cpu_s(process.pid) - cpu_before) * 1e6 / measured.requests
            sent = await es_requests_sent(session, svc) - before
            measured.es_requests_per_op = sent / measured.requests
            log(
                f"{'':<22} {target:<14} {measured.cpu_us_per_op:9.0f} us CPU per op, "
                f"{measured.es_requests_per_op:.2f} ES requests per op"
            )
            return measured

        # Warm up both (connections, caches, JIT) before measuring.
        wrk(
            "warm-up",
            "service",
            svc,
            method="GET",
            path=f"/get/{plain_id}/key-{{k}}",
            headers=plain,
            duration_s=3,
            connections=args.connections,
        )
        wrk(
            "warm-up",
            "elasticsearch",
            es_url,
            method="GET",
            path=f"/{data_index}/_doc/key-{{k}}",
            duration_s=3,
            connections=args.connections,
        )

        set_plain: Run | None = None
        for connections in sorted({*SWEEP, args.connections}):
            main = connections == args.connections
            suffix = "" if main else f" ({connections} conn.)"
            reference = wrk(
                "get",
                "elasticsearch",
                es_url,
                method="GET",
                path=f"/{data_index}/_doc/key-{{k}}",
                **{**options, "connections": connections},
            )
            before = await node_counters(es)
            measured = await through_service(
                "get",
                method="GET",
                path=f"/get/{plain_id}/key-{{k}}",
                headers=plain,
                connections=connections,
            )
            after = await node_counters(es)
            gets = (after["get"] - before["get"]) / measured.requests
            rows.append(
                Row(
                    f"single get{suffix}",
                    reference,
                    measured,
                    f"node: {gets:.2f} documents read per op",
                )
            )
            if main:
                bare_get = through_bare(
                    "get", method="GET", path=f"/get/{plain_id}/key-{{k}}", **options
                )
                rows.append(against_bare("single get", bare_get, measured))

            reference = wrk(
                "set",
                "elasticsearch",
                es_url,
                method="PUT",
                path=f"/{data_index}/_doc/key-{{k}}",
                headers=json_type,
                body=b'{"value": "a small value"}',
                **{**options, "connections": connections},
            )
            before = await node_counters(es)
            measured = await through_service(
                "set",
                method="PUT",
                path=f"/set/{plain_id}/key-{{k}}",
                headers={**plain, "Content-Type": "text/plain"},
                body=b"a small value",
                connections=connections,
            )
            after = await node_counters(es)
            indexed = (after["index"] - before["index"]) / measured.requests
            rows.append(
                Row(
                    f"single set{suffix}",
                    reference,
                    measured,
                    f"node: {indexed:.2f} documents indexed per op",
                )
            )
            if main:
                set_plain = measured
                bare_set = through_bare(
                    "set",
                    method="PUT",
                    path=f"/set/{plain_id}/key-{{k}}",
                    headers={"Content-Type": "text/plain"},
                    body=b"a small value",
                    **options,
                )
                rows.append(against_bare("single set", bare_set, measured))
        assert set_plain is not None

        # The history storage's indices made first, as the plain storage's are: creating an
        # index under load stalls its writes for a moment, which is not what is measured here.
        async with session.put(
            f"{svc}/set/{history_id}/warm",
            data=b"v",
            headers={"Secret-Key": history_secret, "Content-Type": "text/plain"},
        ) as answer:
            answer.raise_for_status()
        await wait_for_history_written(session, svc)
        set_history = await through_service(
            "set",
            target="service+history",
            method="PUT",
            path=f"/set/{history_id}/key-{{k}}",
            headers={"Secret-Key": history_secret, "Content-Type": "text/plain"},
            body=b"a small value",
        )
        # Counted before the buffer is drained: the records still waiting are not in it.
        rows.append(
            Row(
                "set with history vs without",
                set_plain,
                set_history,
                "both through the service",
            )
        )
        await wait_for_history_written(session, svc)
        rows.append(
            await history_fault_row(
                es, session, svc, history_id, history_secret, set_history, through_service
            )
        )

        body = json.dumps(keys100).encode()
        reference = wrk(
            "mget 100",
            "elasticsearch",
            es_url,
            method="POST",
            path=f"/{data_index}/_mget",
            headers=json_type,
            body=json.dumps({"ids": keys100}).encode(),
            **options,
        )
        measured = await through_service(
            "mget 100",
            method="POST",
            path=f"/get/{plain_id}",
            headers={**plain, **json_type},
            body=body,
        )
        rows.append(Row("multi-get 100", reference, measured))

        for count in (100, 1000):
            before = await node_counters(es)
            reference = wrk(
                f"mset {count}",
                "elasticsearch",
                es_url,
                method="POST",
                path="/_bulk",
                headers={"Content-Type": "application/x-ndjson"},
                body=bulk_body(count),
                **options,
            )
            after = await node_counters(es)
            es_per_op = (after["bulk"] - before["bulk"]) / reference.requests
            before = await node_counters(es)
            measured = await through_service(
                f"mset {count}",
                method="PUT",
                path=f"/set/{plain_id}",
                headers={**plain, **json_type},
                body=json.dumps(pairs[count]).encode(),
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

        # The lists get a service process of their own: memory that the scenarios before
        # freed (a 1,000-key multi-set's) could otherwise hold a list of every key unseen.
        list_port = free_port()
        lister = stack.enter_context(service(es_url, list_port))
        list_svc = f"http://127.0.0.1:{list_port}"
        for size, (storage_id, secret) in list_storages.items():
            rows.append(await list_row(es, list_svc, size, storage_id, secret, lister.pid))
        largest, (storage_id, secret) = max(list_storages.items())
        rows.append(
            await prefix_page_row(
                es_url, svc, largest, storage_id, secret, options, through_service
            )
        )
    await es.close()
    return rows


async def history_fault_row(
    es: AsyncElasticsearch,
    session: aiohttp.ClientSession,
    svc: str,
    storage_id: str,
    secret: str,
    healthy: Run,
    through_service: Any,
) -> Row:
    """Sets while history cannot be written: the storage's history index is read-only (the
    block Elasticsearch puts on indices at the disk's flood-stage watermark) until the
    service's buffer holds the storage's share of it (``BUFFER_SHARE``), then the sets are
    measured as in the healthy run. Storage requests must not pay for history. (Not the plain
    write block: that one is a deleted storage's, whose records the service discards.)"""
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
        faulty = await through_service(
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


async def prefix_page_row(
    es_url: str,
    svc: str,
    size: int,
    storage_id: str,
    secret: str,
    options: dict[str, Any],
    through_service: Any,
) -> Row:
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
    warm_up = {**options, "duration_s": 5}
    wrk("warm-up", "elasticsearch", es_url, **direct, **warm_up)
    wrk("warm-up", "service", svc, **service, **warm_up)
    reference = wrk("prefix page 100", "elasticsearch", es_url, **direct, **options)
    measured = await through_service("prefix page 100", **service)
    return Row(f"list a page of 100 by prefix ({size:,} keys)", reference, measured, "")


async def list_row(
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


# Report ----------------------------------------------------------------------------------------


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{os.cpu_count()} cores ({cpu}), {memory_kb / 1024 / 1024:.0f} GiB"


def _optional(value: float | None, form: str) -> str:
    return "" if value is None else format(value, form)


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}; wrk "
        f"(2 threads, {args.connections} connections unless the row says otherwise, "
        f"{args.duration} s per target), the service and Elasticsearch all on this machine; "
        f"single gets and sets on random keys among {KEY_SPACE:,} stored. List rows: one "
        "request, median of 3.",
        "",
        "| scenario | ES req/s | service req/s | ratio | ES p50 / p99 ms | service p50 / p99 ms "
        "| p99 ratio | service CPU µs/op | ES requests/op | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        reference, service_run = row.reference, row.service
        lines.append(
            f"| {row.scenario} | {reference.requests_per_s:,.1f} | {service_run.requests_per_s:,.1f} | "
            f"{row.throughput_ratio:.2f} | {reference.p50_ms:.2f} / {reference.p99_ms:.2f} | "
            f"{service_run.p50_ms:.2f} / {service_run.p99_ms:.2f} | {row.p99_ratio:.2f} | "
            f"{_optional(service_run.cpu_us_per_op, ',.0f')} | "
            f"{_optional(service_run.es_requests_per_op, '.2f')} | {row.note} |"
        )
    return "\n".join(lines) + "\n"


def comparison(before: list[dict[str, Any]], after: list[Row]) -> str:
    """Before and after, scenario by scenario: each run's ratio to its own direct
    Elasticsearch, and the service's CPU and Elasticsearch requests per operation."""
    earlier = {row["scenario"]: row for row in before}
    lines = [
        "| scenario | ratio before | ratio after | p99 ratio before | p99 ratio after "
        "| CPU µs/op before | CPU µs/op after | ES requests/op before | ES requests/op after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in after:
        old = earlier.get(row.scenario)
        if old is None:
            continue
        old_ref, old_svc = old["reference"], old["service"]
        lines.append(
            f"| {row.scenario} | {old_svc['requests_per_s'] / old_ref['requests_per_s']:.2f} | "
            f"{row.throughput_ratio:.2f} | {old_svc['p99_ms'] / old_ref['p99_ms']:.2f} | "
            f"{row.p99_ratio:.2f} | {_optional(old_svc.get('cpu_us_per_op'), ',.0f')} | "
            f"{_optional(row.service.cpu_us_per_op, ',.0f')} | "
            f"{_optional(old_svc.get('es_requests_per_op'), '.2f')} | "
            f"{_optional(row.service.es_requests_per_op, '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path, before: list[dict[str, Any]] | None) -> None:
    """Per scenario, the service's throughput as a share of direct Elasticsearch's in the
    same run: before this change (when given) and now."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrk_rows = [  # against Elasticsearch (a bare handler's rows are another measure)
        row
        for row in rows
        if not row.scenario.startswith("list") and "bare aiohttp" not in row.scenario
    ]
    earlier = {row["scenario"]: row for row in before or []}
    labels = [row.scenario for row in wrk_rows]
    positions = list(range(len(wrk_rows)))
    figure, axis = plt.subplots(figsize=(11, 5.5))
    width = 0.4
    if earlier:
        old = [
            (
                earlier[r.scenario]["service"]["requests_per_s"]
                / earlier[r.scenario]["reference"]["requests_per_s"]
                if r.scenario in earlier
                else 0.0
            )
            for r in wrk_rows
        ]
        axis.bar([p - width / 2 for p in positions], old, width, label="before (issue 16)")
    axis.bar(
        [p + width / 2 if earlier else p for p in positions],
        [r.throughput_ratio for r in wrk_rows],
        width,
        label="after" if earlier else "kv-storage",
    )
    axis.axhline(1.0, color="grey", linewidth=0.8)
    axis.set_xticks(positions, labels, rotation=25, ha="right")
    axis.set_ylabel("service throughput / direct Elasticsearch (same run)")
    axis.set_title("Throughput as a share of Elasticsearch's (history rows: of the service's own)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per target")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="skip the 100,000-key list")
    parser.add_argument("--keep-es", action="store_true", help="leave the bench node running")
    parser.add_argument(
        "--before",
        type=Path,
        default=DOCS / "benchmarks-before.json",
        help="rows of an earlier run (its benchmarks-latest.json) to compare with",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench: wrk is missing (make bench installs it)", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        rows = asyncio.run(run(args))
    finally:
        if not args.keep_es:
            subprocess.run(
                [str(ROOT / "scripts" / "local-es.sh"), "stop", "--name", "bench"], check=False
            )
    report = table(rows, args)
    before = json.loads(args.before.read_text()) if args.before.exists() else None
    if before is not None:
        report += f"\nBefore ({args.before.name}) and after, each against its own run's Elasticsearch:\n\n"
        report += comparison(before, rows)
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks-latest.md").write_text(report)
    (DOCS / "benchmarks-latest.json").write_text(
        json.dumps([dataclasses.asdict(row) for row in rows], indent=1) + "\n"
    )
    plot(rows, DOCS / "benchmarks.png", before)
    print(report)
    log(
        f"done in {time.monotonic() - started:.0f} s; wrote docs/benchmarks-latest.md, "
        "docs/benchmarks-latest.json and docs/benchmarks.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
