"""Two versions of the service, measured in turns on one Elasticsearch node.

    .venv/bin/python bench/ab.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 4] [--duration 10]

Single runs of ``make bench`` on a shared machine move by 30% between runs of the same code,
more than most changes do. To tell whether a change made the service slower, this runs the
same wrk scenarios against a service started from each checkout (``git worktree add``), in
turns (the first to go alternates), ``--rounds`` times, on the same node and the same data,
and prints each scenario's requests/s and the service's CPU time per request for both, per
round and as the median. The checkouts' own code is what runs (``python -m kv_storage`` in
each); the Python environment is this one. Nothing is written to docs/.
"""

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from elasticsearch import AsyncElasticsearch
from run import KEY_SPACE, PREFIX, ROOT, cpu_s, create_storage, free_port, load_keys, log, wrk

SCENARIOS: dict[str, dict[str, object]] = {
    "single get": {"method": "GET", "path": "/get/{id}/key-{{k}}", "connections": 16},
    "single set": {"method": "PUT", "path": "/set/{id}/key-{{k}}", "connections": 16},
    "single get (64 conn.)": {"method": "GET", "path": "/get/{id}/key-{{k}}", "connections": 64},
    "single set (64 conn.)": {"method": "PUT", "path": "/set/{id}/key-{{k}}", "connections": 64},
}


@contextmanager
def service_from(checkout: Path, es_url: str) -> Iterator[tuple[str, int]]:
    """The service of ``checkout`` on a free port: its address and process id."""
    port = free_port()
    environment = {
        **os.environ,
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": PREFIX,
        "KV_STORAGE_SERVER_HOST": "127.0.0.1",
        "KV_STORAGE_SERVER_PORT": str(port),
        "KV_STORAGE_APP_REQUEST_TIMEOUT": "30 seconds",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "kv_storage", "serve"],
        cwd=checkout,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"the service of {checkout} did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


async def prepare(es_url: str) -> tuple[str, str]:
    es = AsyncElasticsearch(es_url, request_timeout=120)
    try:
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
        storage_id, secret = await create_storage(es, history=False)
        await load_keys(es, storage_id, KEY_SPACE)
        return storage_id, secret
    finally:
        await es.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per run")
    args = parser.parse_args()
    local_es = ROOT / "scripts" / "local-es.sh"
    started = subprocess.run(
        [str(local_es), "start", "--name", "bench", "--heap", "1g"],
        check=True,
        capture_output=True,
        text=True,
    )
    es_url = started.stdout.strip().splitlines()[-1]
    try:
        storage_id, secret = asyncio.run(prepare(es_url))
        # results[scenario][checkout] = [(requests/s, CPU µs per request), ...]
        results: dict[str, dict[str, list[tuple[float, float]]]] = {s: {} for s in SCENARIOS}
        for round_number in range(1, args.rounds + 1):
            log(f"round {round_number} of {args.rounds}")
            turns = [("old", args.old), ("new", args.new)]
            if round_number % 2 == 0:  # who goes first takes turns too: the node warms up
                turns.reverse()
            for label, checkout in turns:
                with service_from(checkout.resolve(), es_url) as (svc, pid):
                    headers = {"Secret-Key": secret, "Content-Type": "text/plain"}
                    path = f"/get/{storage_id}/key-{{k}}"
                    wrk("warm-up", label, svc, method="GET", path=path, headers=headers,
                        duration_s=3, connections=16)  # fmt: skip
                    for scenario, spec in SCENARIOS.items():
                        before = cpu_s(pid)
                        measured = wrk(
                            scenario,
                            label,
                            svc,
                            method=str(spec["method"]),
                            path=str(spec["path"]).format(id=storage_id),
                            headers=headers,
                            body=b"a value" if spec["method"] == "PUT" else None,
                            duration_s=args.duration,
                            connections=int(str(spec["connections"])),
                        )
                        cpu_us = (cpu_s(pid) - before) * 1e6 / measured.requests
                        results[scenario].setdefault(label, []).append(
                            (measured.requests_per_s, cpu_us)
                        )
    finally:
        subprocess.run([str(local_es), "stop", "--name", "bench"], check=False)
    print(
        f"\n{args.old} (old) against {args.new} (new), {args.rounds} rounds "
        "in turns (old first in odd rounds):\n"
    )
    print(
        "| scenario | old req/s | new req/s | old CPU µs/op | new CPU µs/op | rounds (req/s, µs) |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for scenario, by_label in results.items():
        old, new = by_label["old"], by_label["new"]
        rounds = "; ".join(
            f"{o[0]:,.0f}/{n[0]:,.0f}, {o[1]:,.0f}/{n[1]:,.0f}"
            for o, n in zip(old, new, strict=True)
        )
        print(
            f"| {scenario} | {statistics.median(r for r, _ in old):,.0f} "
            f"| {statistics.median(r for r, _ in new):,.0f} "
            f"| {statistics.median(c for _, c in old):,.0f} "
            f"| {statistics.median(c for _, c in new):,.0f} | {rounds} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
