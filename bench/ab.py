"""Two versions of the service, measured in turns on one Elasticsearch node.

    .venv/bin/python bench/ab.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 4] [--duration 10]

Single runs of ``make bench`` on a shared machine move by 30% between runs of the same code,
more than most changes do. To tell whether a change made the service slower, this runs the
same wrk scenarios against a service started from each checkout (``git worktree add``), in
turns (the first to go alternates), ``--rounds`` times, on the same node and the same data,
and prints each scenario's requests/s, the service's CPU time per request and the node's
(Elasticsearch's process) for both, per round and as the median. The checkouts' own code is
what runs (``python -m kv_storage`` in each); the Python environment is this one. Nothing is
written to docs/.
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from elasticsearch import AsyncElasticsearch
from harness import (
    KEY_SPACE,
    ROOT,
    cpu_s,
    create_storage,
    free_port,
    fresh_layout,
    load_keys,
    log,
    service,
    start_node,
    wrk,
)


@dataclass(frozen=True)
class Scenario:
    method: str
    path: str
    connections: int = 16
    body: bytes | None = None
    content_type: str = "text/plain"


SCENARIOS: dict[str, Scenario] = {
    "single get": Scenario("GET", "/get/{id}/key-{{k}}"),
    "single set": Scenario("PUT", "/set/{id}/key-{{k}}", body=b"a value"),
    "single get (64 conn.)": Scenario("GET", "/get/{id}/key-{{k}}", connections=64),
    "single set (64 conn.)": Scenario("PUT", "/set/{id}/key-{{k}}", 64, b"a value"),
    "prefix page 100": Scenario("GET", "/list/{id}?prefix=key-00012&after=key-0001234&limit=100"),
    # Last of a turn: Elasticsearch merges for a while after 1,000-key writes, CPU that would
    # count as the next scenario's (the next turn starts with a service start and a warm-up).
    "multi-set 1000": Scenario(
        "PUT",
        "/set/{id}",
        body=json.dumps({f"k{n}": f"value {n}" for n in range(1000)}).encode(),
        content_type="application/json",
    ),
}


async def prepare(es_url: str) -> tuple[str, str]:
    es = AsyncElasticsearch(es_url, request_timeout=120)
    try:
        await fresh_layout(es, es_url)
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
    es_url = start_node()
    node_pid = int((ROOT / ".cache" / "es-nodes" / "bench" / "pid").read_text())
    try:
        storage_id, secret = asyncio.run(prepare(es_url))
        # results[scenario][checkout] = [(requests/s, CPU µs per request: service, node), ...]
        results: dict[str, dict[str, list[tuple[float, float, float]]]] = {s: {} for s in SCENARIOS}
        for round_number in range(1, args.rounds + 1):
            log(f"round {round_number} of {args.rounds}")
            turns = [("old", args.old), ("new", args.new)]
            if round_number % 2 == 0:  # who goes first takes turns too: the node warms up
                turns.reverse()
            for label, checkout in turns:
                port = free_port()
                with service(es_url, port, checkout.resolve()) as process:
                    svc, pid = f"http://127.0.0.1:{port}", process.pid
                    headers = {"Secret-Key": secret, "Content-Type": "text/plain"}
                    path = f"/get/{storage_id}/key-{{k}}"
                    wrk("warm-up", label, svc, method="GET", path=path, headers=headers,
                        duration_s=3, connections=16)  # fmt: skip
                    for scenario, spec in SCENARIOS.items():
                        before, node_before = cpu_s(pid), cpu_s(node_pid)
                        measured = wrk(
                            scenario,
                            label,
                            svc,
                            method=spec.method,
                            path=spec.path.format(id=storage_id),
                            headers={**headers, "Content-Type": spec.content_type},
                            body=spec.body,
                            duration_s=args.duration,
                            connections=spec.connections,
                        )
                        cpu_us = (cpu_s(pid) - before) * 1e6 / measured.requests
                        node_us = (cpu_s(node_pid) - node_before) * 1e6 / measured.requests
                        results[scenario].setdefault(label, []).append(
                            (measured.requests_per_s, cpu_us, node_us)
                        )
    finally:
        subprocess.run([str(ROOT / "scripts" / "local-es.sh"), "stop", "--name", "bench"])
    print(
        f"\n{args.old} (old) against {args.new} (new), {args.rounds} rounds "
        "in turns (old first in odd rounds):\n"
    )
    print(
        "| scenario | old req/s | new req/s | old CPU µs/op | new CPU µs/op "
        "| old node CPU µs/op | new node CPU µs/op | rounds (req/s, service µs) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for scenario, by_label in results.items():
        old, new = by_label["old"], by_label["new"]
        rounds = "; ".join(
            f"{o[0]:,.0f}/{n[0]:,.0f}, {o[1]:,.0f}/{n[1]:,.0f}"
            for o, n in zip(old, new, strict=True)
        )
        medians = [
            statistics.median(run[measure] for run in runs)
            for measure in range(3)
            for runs in (old, new)
        ]
        print(f"| {scenario} | " + " | ".join(f"{m:,.0f}" for m in medians) + f" | {rounds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
