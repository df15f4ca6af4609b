"""Benchmarks of the layouts at cloud scale (``make bench-scale``; about 15 minutes here).

    .venv/bin/python bench/scale.py [--storages 100000] [--duration 10]

On the local node ``bench`` (the one ``make bench`` uses), with the service as a real
process, it measures, in one run:

1. **Many storages.** Storages are created through the administration API and written once
   each (``PUT /set/<id>/k``), 32 at a time, up to ``--storages``. At 1,000, 10,000 and
   100,000 storages it reports the median and p99 of create + first write over the last 1,000,
   the node's heap in use and the size of its cluster state. The per-storage layout runs the
   same on a prefix of its own, as far as it can, and says where and why it stopped.
2. **Spread load.** Gets and sets of random keys spread over 1,000 of those storages, against
   the same load on one storage, in the same run (wrk, ``--connections``).
3. **One storage, each layout.** Gets and sets of one storage in the shared layout and one
   in the per-storage layout: requests per second, Elasticsearch requests per operation (the
   service's own count), the service's and the node's CPU per operation.

It writes docs/benchmarks-scale.md and .json.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import aiohttp
from elasticsearch import AsyncElasticsearch
from run import ROOT, cpu_s, free_port, log, machine, service_metrics, start_node

TOKEN = "bench-scale-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
SHARED = "scale-"
OWN = "scale-own-"
STORAGES_LUA = ROOT / "bench" / "wrk" / "storages.lua"
CHECKPOINTS = (1_000, 10_000, 100_000)
WINDOW = 1_000
"""Creations each checkpoint's latencies are taken from: the last this many before it."""
CONCURRENCY = 32
KEY_SPACE = 1_000


@dataclass
class Checkpoint:
    layout: str
    storages: int
    median_ms: float
    p99_ms: float
    heap_mb: float
    cluster_state_kb: float


@dataclass
class Stop:
    layout: str
    storages: int
    why: str


@dataclass
class Load:
    scenario: str
    target: str
    requests_per_s: float
    es_requests_per_op: float | None = None
    service_cpu_us: float | None = None
    node_cpu_us: float | None = None


@dataclass
class Results:
    machine: str
    seconds: float = 0.0
    checkpoints: list[Checkpoint] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)


@contextmanager
def serving(es_url: str, prefix: str, layout: str) -> Iterator[tuple[str, int]]:
    """``kv-storage serve`` on ``prefix`` (made fresh), storages made in ``layout``."""
    environment = {
        **os.environ,
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": prefix,
        "KV_STORAGE_ELASTICSEARCH_LAYOUT": layout,
        "KV_STORAGE_ADMIN_TOKEN": TOKEN,
        "KV_STORAGE_APP_REQUEST_TIMEOUT": "30 seconds",
        "KV_STORAGE_APP_CACHE_MAX_SIZE": "200000",
        "KV_STORAGE_SERVER_HOST": "127.0.0.1",
    }
    subprocess.run(
        [sys.executable, "-m", "kv_storage", "init"],
        env=environment,
        check=True,
        capture_output=True,
    )
    port = free_port()
    environment["KV_STORAGE_SERVER_PORT"] = str(port)
    log_file = open(ROOT / ".cache" / f"bench-scale-{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "kv_storage", "serve"],
        env=environment,
        stdout=log_file,
        stderr=log_file,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError as error:
                if time.monotonic() > deadline or process.poll() is not None:
                    log_name = f".cache/bench-scale-{port}.log"
                    raise RuntimeError(f"the service did not start: {log_name}") from error
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log_file.close()


async def _wipe(es: AsyncElasticsearch, prefix: str) -> None:
    names = (await es.indices.get(index=f"{prefix}*", expand_wildcards="all")).body
    for name in names:
        if name.startswith(prefix):
            await es.indices.delete(index=name)


async def _node_state(es: AsyncElasticsearch) -> tuple[float, float]:
    """The node's heap in use (MB) and the size of the cluster state (KB)."""
    stats = await es.nodes.stats(metric="jvm", filter_path=["nodes.*.jvm.mem.heap_used_in_bytes"])
    heap = next(iter(stats["nodes"].values()))["jvm"]["mem"]["heap_used_in_bytes"]
    state = await es.cluster.state(metric="metadata,routing_table")
    return heap / 1e6, len(json.dumps(state.body)) / 1e3


class Creator:
    """Creates storages and writes each once, ``CONCURRENCY`` at a time, timing each."""

    def __init__(self, session: aiohttp.ClientSession, svc: str) -> None:
        self._session = session
        self._svc = svc
        self.created: list[tuple[str, str]] = []
        self.latencies_ms: list[float] = []

    async def one(self, number: int) -> str | None:
        """``None``, or why the storage was refused."""
        started = time.perf_counter()
        body = {"type": "ACCOUNT", "account": "scale", "name": f"s{number}"}
        async with self._session.post(
            f"{self._svc}/admin/storages", json=body, headers=ADMIN
        ) as answer:
            if answer.status != 201:
                return f"create answered {answer.status}: {(await answer.text())[:300]}"
            created = await answer.json()
        headers = {"Secret-Key": created["secretKey"], "Content-Type": "text/plain"}
        async with self._session.put(
            f"{self._svc}/set/{created['id']}/key-0000000", data=b"v", headers=headers
        ) as answer:
            if answer.status != 200:
                return f"first write answered {answer.status}: {(await answer.text())[:300]}"
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.created.append((created["id"], created["secretKey"]))
        return None

    async def up_to(self, total: int) -> str | None:
        """Creates until ``total`` exist; stops at the first refusal, saying why."""
        next_number = len(self.created)
        failure: str | None = None

        async def worker() -> None:
            nonlocal next_number, failure
            while failure is None and next_number < total:
                number = next_number
                next_number += 1
                problem = await self.one(number)
                if problem is not None and failure is None:
                    failure = problem

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return failure


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _wrk(
    base: str,
    *,
    method: str,
    path: str,
    storages: list[tuple[str, str]],
    duration_s: int,
    connections: int,
) -> tuple[float, int]:
    """Requests per second and requests made."""
    with (
        tempfile.NamedTemporaryFile("w", suffix=".storages") as listed,
        tempfile.NamedTemporaryFile("wb", suffix=".body") as body,
    ):
        listed.write("".join(f"{i} {s}\n" for i, s in storages))
        listed.flush()
        body.write(b"a value")
        body.flush()
        environment = {
            **os.environ,
            "BENCH_METHOD": method,
            "BENCH_PATH": path,
            "BENCH_STORAGES_FILE": listed.name,
            "BENCH_KEY_SPACE": str(KEY_SPACE),
            "BENCH_BODY_FILE": body.name if method == "PUT" else "",
        }
        output = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{duration_s}s", "-s", str(STORAGES_LUA), base],
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    if "Non-2xx or 3xx responses" in output:
        raise RuntimeError(f"errors in the answers:\n{output}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    return rps, total


async def _measured(
    session: aiohttp.ClientSession,
    svc: str,
    pid: int,
    node_pid: int,
    scenario: str,
    target: str,
    storages: list[tuple[str, str]],
    args: argparse.Namespace,
) -> Load:
    method, path = (
        ("GET", "/get/{id}/key-{k}") if "get" in scenario else ("PUT", "/set/{id}/key-{k}")
    )
    _wrk(
        svc, method=method, path=path, storages=storages, duration_s=2, connections=args.connections
    )
    before = await service_metrics(session, svc)
    service_before, node_before = cpu_s(pid), cpu_s(node_pid)
    rps, total = await asyncio.to_thread(
        _wrk,
        svc,
        method=method,
        path=path,
        storages=storages,
        duration_s=args.duration,
        connections=args.connections,
    )
    service_us = (cpu_s(pid) - service_before) * 1e6 / total
    node_us = (cpu_s(node_pid) - node_before) * 1e6 / total
    after = await service_metrics(session, svc)
    sent = after.get("kv_storage_elasticsearch_requests_total", 0.0) - before.get(
        "kv_storage_elasticsearch_requests_total", 0.0
    )
    log(f"{scenario:<32} {target:<26} {rps:>8.0f} req/s  {service_us:6.0f} µs service")
    return Load(scenario, target, rps, sent / total, service_us, node_us)


async def _seed_keys(session: aiohttp.ClientSession, svc: str, storage: tuple[str, str]) -> None:
    """Every key the gets ask for, in one multi-set."""
    storage_id, secret = storage
    pairs = {f"key-{n:07d}": "a value" for n in range(KEY_SPACE)}
    async with session.put(
        f"{svc}/set/{storage_id}", json=pairs, headers={"Secret-Key": secret}
    ) as answer:
        answer.raise_for_status()


async def run(args: argparse.Namespace) -> Results:
    started = time.monotonic()
    results = Results(machine())
    es_url = start_node()
    node_pid = int((ROOT / ".cache" / "es-nodes" / "bench" / "pid").read_text())
    es = AsyncElasticsearch(es_url, request_timeout=300)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
    async with es, aiohttp.ClientSession(connector=connector) as session:
        # The per-storage layout first, as far as the node's shard limit lets it.
        await _wipe(es, OWN)
        with serving(es_url, OWN, "per-storage") as (svc, pid):
            creator = Creator(session, svc)
            for checkpoint in CHECKPOINTS:
                if checkpoint > args.storages:
                    break
                failure = await creator.up_to(checkpoint)
                if failure is not None:
                    results.stops.append(Stop("per-storage", len(creator.created), failure))
                    log(f"per-storage layout stopped at {len(creator.created)}: {failure}")
                    break
                results.checkpoints.append(await _checkpoint(es, "per-storage", creator))
            own_storage = creator.created[0] if creator.created else None
            if own_storage is not None:
                await _seed_keys(session, svc, own_storage)
                for scenario in ("single get", "single set"):
                    results.loads.append(
                        await _measured(
                            session,
                            svc,
                            pid,
                            node_pid,
                            scenario,
                            "one storage, per-storage",
                            [own_storage],
                            args,
                        )
                    )
        await _wipe(es, OWN)  # its shards would weigh on the shared layout's numbers
        await _wipe(es, SHARED)
        with serving(es_url, SHARED, "shared") as (svc, pid):
            creator = Creator(session, svc)
            for checkpoint in CHECKPOINTS:
                if checkpoint > args.storages:
                    break
                failure = await creator.up_to(checkpoint)
                if failure is not None:
                    results.stops.append(Stop("shared", len(creator.created), failure))
                    break
                results.checkpoints.append(await _checkpoint(es, "shared", creator))
            one = creator.created[0]
            spread = creator.created[-1000:]
            await _seed_keys(session, svc, one)
            for scenario in ("single get", "single set"):
                results.loads.append(
                    await _measured(
                        session, svc, pid, node_pid, scenario, "one storage, shared", [one], args
                    )
                )
                if scenario == "single get":
                    await _seed_spread(session, svc, spread)
                results.loads.append(
                    await _measured(
                        session,
                        svc,
                        pid,
                        node_pid,
                        scenario,
                        f"1,000 of {len(creator.created):,} storages",
                        spread,
                        args,
                    )
                )
    results.seconds = time.monotonic() - started
    return results


async def _seed_spread(
    session: aiohttp.ClientSession, svc: str, storages: list[tuple[str, str]]
) -> None:
    """The keys the gets ask for, in each of ``storages`` (16 at a time)."""
    semaphore = asyncio.Semaphore(16)

    async def seed(storage: tuple[str, str]) -> None:
        async with semaphore:
            await _seed_keys(session, svc, storage)

    await asyncio.gather(*(seed(storage) for storage in storages))


async def _checkpoint(es: AsyncElasticsearch, layout: str, creator: Creator) -> Checkpoint:
    window = creator.latencies_ms[-WINDOW:]
    heap_mb, state_kb = await _node_state(es)
    point = Checkpoint(
        layout,
        len(creator.created),
        statistics.median(window),
        _percentile(window, 0.99),
        heap_mb,
        state_kb,
    )
    log(
        f"{layout:<12} {point.storages:>7,} storages: create + first write p50 "
        f"{point.median_ms:.1f} ms p99 {point.p99_ms:.1f} ms; heap {heap_mb:.0f} MB, "
        f"cluster state {state_kb:,.0f} KB"
    )
    return point


def report(results: Results) -> str:
    lines = [
        "# Benchmarks at scale (latest run)",
        "",
        f"`make bench-scale` on {results.machine}; {results.seconds / 60:.0f} minutes in all.",
        "",
        "## Storages created and written once",
        "",
        "| layout | storages | create + first write p50 ms | p99 ms | node heap MB | cluster state KB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for point in results.checkpoints:
        lines.append(
            f"| {point.layout} | {point.storages:,} | {point.median_ms:.1f} | {point.p99_ms:.1f} "
            f"| {point.heap_mb:,.0f} | {point.cluster_state_kb:,.0f} |"
        )
    for stop in results.stops:
        lines.append(f"| {stop.layout} | stopped at {stop.storages:,} | {stop.why} | | | |")
    shared = [p for p in results.checkpoints if p.layout == "shared"]
    if len(shared) >= 2:
        lines += [
            "",
            f"Median at {shared[-1].storages:,} over median at {shared[0].storages:,}: "
            f"{shared[-1].median_ms / shared[0].median_ms:.2f}x.",
        ]
    lines += [
        "",
        "## Gets and sets",
        "",
        "| scenario | storages | req/s | ES requests / op | service CPU µs / op | node CPU µs / op |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for load in results.loads:
        lines.append(
            f"| {load.scenario} | {load.target} | {load.requests_per_s:,.0f} "
            f"| {load.es_requests_per_op or 0:.2f} | {load.service_cpu_us or 0:,.0f} "
            f"| {load.node_cpu_us or 0:,.0f} |"
        )
    by = {(load.scenario, load.target): load for load in results.loads}
    for scenario in ("single get", "single set"):
        one = by.get((scenario, "one storage, shared"))
        spread = [load for (s, t), load in by.items() if s == scenario and t.startswith("1,000")]
        if one and spread:
            lines.append(
                f"\n{scenario} spread over 1,000 storages / one storage: "
                f"{spread[0].requests_per_s / one.requests_per_s:.2f}x."
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storages", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    (ROOT / "docs" / "benchmarks-scale.json").write_text(json.dumps(asdict(results), indent=2))
    text = report(results)
    (ROOT / "docs" / "benchmarks-scale.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
