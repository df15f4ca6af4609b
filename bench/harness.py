"""What every benchmark needs: wrk, the processes it measures (the service, a bare aiohttp
handler, the node), the data they work on and the counters read around each run.

``run.py`` (``make bench``), ``ab.py`` and ``scale.py`` are made of these.
"""

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk
from prometheus_client.parser import text_string_to_metric_families

from kv_storage.es.names import IndexNames
from kv_storage.es.registry import Registry, RegistryEntry
from kv_storage.model import StorageType

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "bench-"
NAMES = IndexNames(PREFIX)
LUA = ROOT / "bench" / "wrk" / "request.lua"
HISTORY_DRAIN_DEADLINE_S = 300


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
    initialise(es_url, PREFIX)


def initialise(es_url: str, prefix: str) -> None:
    """``kv-storage init`` on ``prefix``."""
    init = subprocess.run(
        [sys.executable, "-m", "kv_storage", "init"],
        env={
            **os.environ,
            "KV_STORAGE_ELASTICSEARCH_URI": es_url,
            "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": prefix,
        },
        capture_output=True,
        text=True,
    )
    if init.returncode:
        raise RuntimeError(init.stderr)


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
