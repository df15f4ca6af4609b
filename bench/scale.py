"""Benchmarks of the layouts at cloud scale (``make bench-scale``; about 10 minutes here).

    .venv/bin/python bench/scale.py [--storages 100000] [--duration 10] [--rounds 3]

On the local node ``bench`` (the one ``make bench`` uses), with the service as real
processes (``kv-storage serve``), it measures, in one run:

1. **One storage, each layout.** A per-storage and a shared storage of 10,000 keys, each
   through a service of its own, both running: random gets, then sets (wrk, ``--connections``),
   ``--rounds`` times, which layout first alternating. Per row: requests per second,
   Elasticsearch requests per operation (the service's own count), the service's and the
   node's CPU per operation, each the median of the rounds.
2. **Many storages.** Storages created through the administration API and written once each
   (``PUT /set/<id>/key-0000000``), up to ``--storages``: at 1,000, 10,000 and 100,000 the
   median and p99 of create + first write over the last 1,000, the node's heap in use and the
   size of its cluster state. The per-storage layout first (4 clients: its index creations
   queue on the master anyway), as far as the node's shard limit lets it; it stops at the
   first refusal and says why. Its indices are then removed, and the shared layout runs (32
   clients) on a fresh prefix.
3. **Spread load.** Gets and sets of random keys spread over 1,000 of the shared storages
   (100 keys each) against the same load on one storage holding as many keys (100,000), in
   rounds as in 1.

It writes docs/benchmarks-scale.md and .json. With ``--storages`` below 1,000 it stops after 1
and 2 (a quick look).
"""

import argparse
import asyncio
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field

import aiohttp
from elasticsearch import AsyncElasticsearch
from harness import (
    ROOT,
    cpu_s,
    free_port,
    initialise,
    log,
    machine,
    service,
    service_metrics,
    start_node,
)

TOKEN = "bench-scale-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
SHARED = "scale-"
OWN = "scale-own-"
STORAGES_LUA = ROOT / "bench" / "wrk" / "storages.lua"
CHECKPOINTS = (1_000, 10_000, 100_000)
WINDOW = 1_000
"""Creations each checkpoint's latencies are taken from: the last this many before it."""
CONCURRENCY = 32
"""Clients creating storages at once in the shared layout."""
PER_STORAGE_CONCURRENCY = 4
"""The same in the per-storage layout: its index creations are cluster-state updates, one
at a time on the master, so more clients only queue longer (32 at once ran past the
service's 30 s request timeout at about 400 storages)."""
SINGLE_KEYS = 10_000
"""Keys of the one storage of each layout: random gets and sets among them, as ``make bench``."""
SPREAD_STORAGES = 1_000
SPREAD_KEYS = 100
"""Keys of each spread storage: the one storage it is compared with holds as many in all."""


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
    median_ms: float
    """Create + first write, over the last ``WINDOW`` before the stop."""
    p99_ms: float
    heap_mb: float
    cluster_state_kb: float


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
    """``kv-storage init``, then ``serve``, on ``prefix``, storages made in ``layout``: the
    service's URL and process id."""
    settings = {
        "KV_STORAGE_ELASTICSEARCH_LAYOUT": layout,
        "KV_STORAGE_ADMIN_TOKEN": TOKEN,
        "KV_STORAGE_APP_CACHE_MAX_SIZE": "200000",
    }
    initialise(es_url, prefix)
    port = free_port()
    with service(es_url, port, prefix=prefix, settings=settings) as process:
        yield f"http://127.0.0.1:{port}", process.pid


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


async def _why(answer: aiohttp.ClientResponse) -> str:
    """The error an answer names, up to Elasticsearch's advice (the table has no room)."""
    text = await answer.text()
    with suppress(ValueError, AttributeError):
        text = str(json.loads(text).get("error", text))
    return text.split("; for more information")[0][:240]


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
                return f"create answered {answer.status}: {await _why(answer)}"
            created = await answer.json()
        headers = {"Secret-Key": created["secretKey"], "Content-Type": "text/plain"}
        async with self._session.put(
            f"{self._svc}/set/{created['id']}/key-0000000", data=b"v", headers=headers
        ) as answer:
            if answer.status != 200:
                return f"first write answered {answer.status}: {await _why(answer)}"
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.created.append((created["id"], created["secretKey"]))
        return None

    async def up_to(self, total: int, concurrency: int) -> str | None:
        """Creates until ``total`` exist, ``concurrency`` at a time; stops at the first
        refusal, saying why."""
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

        await asyncio.gather(*(worker() for _ in range(concurrency)))
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
    key_space: int,
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
            "BENCH_KEY_SPACE": str(key_space),
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
    key_space: int,
    args: argparse.Namespace,
) -> Load:
    method, path = (
        ("GET", "/get/{id}/key-{k}") if "get" in scenario else ("PUT", "/set/{id}/key-{k}")
    )
    run = functools.partial(
        _wrk,
        svc,
        method=method,
        path=path,
        storages=storages,
        key_space=key_space,
        connections=args.connections,
    )
    await asyncio.to_thread(run, duration_s=2)  # warm-up
    before = await service_metrics(session, svc)
    service_before, node_before = cpu_s(pid), cpu_s(node_pid)
    rps, total = await asyncio.to_thread(run, duration_s=args.duration)
    service_us = (cpu_s(pid) - service_before) * 1e6 / total
    node_us = (cpu_s(node_pid) - node_before) * 1e6 / total
    after = await service_metrics(session, svc)
    sent = after.get("kv_storage_elasticsearch_requests_total", 0.0) - before.get(
        "kv_storage_elasticsearch_requests_total", 0.0
    )
    log(f"{scenario:<12} {target:<28} {rps:>8.0f} req/s  {service_us:6.0f} µs service")
    return Load(scenario, target, rps, sent / total, service_us, node_us)


def _median_load(loads: list[Load]) -> Load:
    """Each measure's median over the rounds."""
    first = loads[0]
    return Load(
        first.scenario,
        first.target,
        statistics.median(load.requests_per_s for load in loads),
        statistics.median(load.es_requests_per_op or 0.0 for load in loads),
        statistics.median(load.service_cpu_us or 0.0 for load in loads),
        statistics.median(load.node_cpu_us or 0.0 for load in loads),
    )


@dataclass(frozen=True)
class Target:
    """What one row of load is sent to: through which service, to which storages."""

    name: str
    svc: str
    pid: int
    storages: list[tuple[str, str]]
    key_space: int


async def _rounds(
    session: aiohttp.ClientSession,
    node_pid: int,
    targets: tuple[Target, Target],
    args: argparse.Namespace,
) -> list[Load]:
    """Gets, then sets, of both targets, ``--rounds`` times, which first alternating: the
    machine's drift between runs weighs on both alike. One row per scenario and target."""
    rows: list[Load] = []
    for scenario in ("single get", "single set"):
        measured: dict[str, list[Load]] = {target.name: [] for target in targets}
        for round_number in range(args.rounds):
            ordered = targets if round_number % 2 == 0 else targets[::-1]
            for target in ordered:
                load = await _measured(
                    session,
                    target.svc,
                    target.pid,
                    node_pid,
                    scenario,
                    target.name,
                    target.storages,
                    target.key_space,
                    args,
                )
                measured[target.name].append(load)
        rows += [_median_load(measured[target.name]) for target in targets]
    return rows


async def _seed_keys(
    session: aiohttp.ClientSession, svc: str, storage: tuple[str, str], count: int
) -> None:
    """Keys ``key-0000000`` up to ``count``, every one the gets may ask for, in multi-sets of
    1,000."""
    storage_id, secret = storage
    for start in range(0, count, 1000):
        pairs = {f"key-{n:07d}": "a value" for n in range(start, min(count, start + 1000))}
        async with session.put(
            f"{svc}/set/{storage_id}", json=pairs, headers={"Secret-Key": secret}
        ) as answer:
            answer.raise_for_status()


async def _seed_many(
    session: aiohttp.ClientSession, svc: str, storages: list[tuple[str, str]], count: int
) -> None:
    """``count`` keys in each of ``storages``, 16 storages at a time."""
    semaphore = asyncio.Semaphore(16)

    async def seed(storage: tuple[str, str]) -> None:
        async with semaphore:
            await _seed_keys(session, svc, storage, count)

    await asyncio.gather(*(seed(storage) for storage in storages))


async def _create_up_to(
    es: AsyncElasticsearch,
    creator: Creator,
    layout: str,
    results: Results,
    total: int,
    concurrency: int,
) -> None:
    """Storages created until ``total`` exist, a checkpoint at each of ``CHECKPOINTS``; the
    first refusal ends it, recorded as a stop."""
    for checkpoint in CHECKPOINTS:
        if checkpoint > total:
            break
        failure = await creator.up_to(checkpoint, concurrency)
        if failure is not None:
            window = creator.latencies_ms[-WINDOW:] or [0.0]
            heap_mb, state_kb = await _node_state(es)
            stop = Stop(
                layout,
                len(creator.created),
                failure,
                statistics.median(window),
                _percentile(window, 0.99),
                heap_mb,
                state_kb,
            )
            results.stops.append(stop)
            log(f"{layout} layout stopped at {stop.storages:,}: {failure}")
            return
        results.checkpoints.append(await _checkpoint(es, layout, creator))


async def run(args: argparse.Namespace) -> Results:
    started = time.monotonic()
    results = Results(machine())
    es_url = start_node()
    node_pid = int((ROOT / ".cache" / "es-nodes" / "bench" / "pid").read_text())
    es = AsyncElasticsearch(es_url, request_timeout=300)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
    async with es, aiohttp.ClientSession(connector=connector) as session:
        await _wipe(es, OWN)
        await _wipe(es, SHARED)
        with (
            serving(es_url, OWN, "per-storage") as (own_svc, own_pid),
            serving(es_url, SHARED, "shared") as (shared_svc, shared_pid),
        ):
            # 1. One storage of each layout, side by side, on a node holding nothing else.
            own_creator = Creator(session, own_svc)
            shared_creator = Creator(session, shared_svc)
            for creator in (own_creator, shared_creator):
                if await creator.up_to(1, 1) is not None:
                    raise RuntimeError("the first storage could not be created")
            await _seed_keys(session, own_svc, own_creator.created[0], SINGLE_KEYS)
            await _seed_keys(session, shared_svc, shared_creator.created[0], SINGLE_KEYS)
            results.loads += await _rounds(
                session,
                node_pid,
                (
                    Target(
                        "one storage, per-storage",
                        own_svc,
                        own_pid,
                        own_creator.created[:1],
                        SINGLE_KEYS,
                    ),
                    Target(
                        "one storage, shared",
                        shared_svc,
                        shared_pid,
                        shared_creator.created[:1],
                        SINGLE_KEYS,
                    ),
                ),
                args,
            )
            # 2. The per-storage layout, as far as the node lets it; then gone, lest its
            # shards weigh on the shared layout's numbers.
            await _create_up_to(
                es, own_creator, "per-storage", results, args.storages, PER_STORAGE_CONCURRENCY
            )
        await _wipe(es, OWN)
        await _wipe(es, SHARED)
        if args.storages < SPREAD_STORAGES:  # a quick look at the first part only
            results.seconds = time.monotonic() - started
            return results
        with serving(es_url, SHARED, "shared") as (svc, pid):
            # 3. The shared layout up to --storages.
            creator = Creator(session, svc)
            await _create_up_to(es, creator, "shared", results, args.storages, CONCURRENCY)
            # 4. Load on one storage against the same load spread over 1,000 of them, as many
            # keys in all.
            one = creator.created[:1]
            spread = creator.created[-SPREAD_STORAGES:]
            await _seed_keys(session, svc, one[0], SPREAD_STORAGES * SPREAD_KEYS)
            await _seed_many(session, svc, spread, SPREAD_KEYS)
            everyone = f"{len(spread):,} of {len(creator.created):,} storages"
            results.loads += await _rounds(
                session,
                node_pid,
                (
                    Target("one storage", svc, pid, one, SPREAD_STORAGES * SPREAD_KEYS),
                    Target(everyone, svc, pid, spread, SPREAD_KEYS),
                ),
                args,
            )
    results.seconds = time.monotonic() - started
    return results


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


def _ratio_line(loads: list[Load], scenario: str, over: str, under: str, what: str) -> str:
    by = {load.target: load for load in loads if load.scenario == scenario}
    top = next((load for target, load in by.items() if target.startswith(over)), None)
    bottom = by.get(under)
    if top is None or bottom is None:
        return ""
    return (
        f"- {scenario}, {what}: {top.requests_per_s / bottom.requests_per_s:.2f}x the "
        f"requests per second, {(top.service_cpu_us or 0) / (bottom.service_cpu_us or 1):.2f}x "
        f"the service's CPU per operation."
    )


def report(results: Results) -> str:
    lines = [
        "# Benchmarks at scale (latest run)",
        "",
        f"`make bench-scale` on {results.machine}; {results.seconds / 60:.0f} minutes in all.",
        "",
        "## Storages created and written once",
        "",
        "| layout | storages | create + first write p50 ms | p99 ms | node heap MB "
        "| cluster state KB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for point in results.checkpoints:
        lines.append(
            f"| {point.layout} | {point.storages:,} | {point.median_ms:.1f} | {point.p99_ms:.1f} "
            f"| {point.heap_mb:,.0f} | {point.cluster_state_kb:,.0f} |"
        )
    for stop in results.stops:
        lines.append(
            f"| {stop.layout} | {stop.storages:,}, then stopped | {stop.median_ms:.1f} "
            f"| {stop.p99_ms:.1f} | {stop.heap_mb:,.0f} | {stop.cluster_state_kb:,.0f} |"
        )
    for stop in results.stops:
        lines += ["", f"The {stop.layout} layout stopped at {stop.storages:,}: {stop.why}."]
    shared = [p for p in results.checkpoints if p.layout == "shared"]
    if len(shared) >= 2:
        lines += [
            "",
            f"Median at {shared[-1].storages:,} over median at {shared[0].storages:,}: "
            f"{shared[-1].median_ms / shared[0].median_ms:.2f}x.",
        ]
    lines += [
        "",
        "## Gets and sets (medians of the rounds)",
        "",
        "| scenario | storages | req/s | ES requests / op | service CPU µs / op "
        "| node CPU µs / op |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for load in results.loads:
        lines.append(
            f"| {load.scenario} | {load.target} | {load.requests_per_s:,.0f} "
            f"| {load.es_requests_per_op or 0:.2f} | {load.service_cpu_us or 0:,.0f} "
            f"| {load.node_cpu_us or 0:,.0f} |"
        )
    ratios = [
        _ratio_line(results.loads, scenario, over, under, what)
        for scenario in ("single get", "single set")
        for over, under, what in (
            (
                "one storage, shared",
                "one storage, per-storage",
                "one storage, shared over per-storage",
            ),
            (
                f"{SPREAD_STORAGES:,} of",
                "one storage",
                f"spread over {SPREAD_STORAGES:,} storages over one storage",
            ),
        )
    ]
    lines += ["", *(ratio for ratio in ratios if ratio)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storages", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="of each load; medians reported")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    (ROOT / "docs" / "benchmarks-scale.json").write_text(json.dumps(asdict(results), indent=2))
    text = report(results)
    (ROOT / "docs" / "benchmarks-scale.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
