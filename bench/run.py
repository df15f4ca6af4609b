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
import shutil
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import scenarios
from elasticsearch import AsyncElasticsearch
from harness import KEY_SPACE, ROOT, Row, fresh_layout, log, machine, start_node

DOCS = ROOT / "docs"


async def run(args: argparse.Namespace) -> list[Row]:
    """Every scenario in turn, on one node, one service and one bare handler."""
    es_url = start_node()
    es = AsyncElasticsearch(es_url, request_timeout=120)
    await fresh_layout(es, es_url)
    data = await scenarios.load_data(es, quick=args.quick)
    async with AsyncExitStack() as stack:
        bench = scenarios.Bench(es, es_url, data, stack, args.duration, args.connections)
        await bench.start()
        await scenarios.warm_up(bench)
        rows, set_plain = await scenarios.single_operations(bench)
        rows += await scenarios.history(bench, set_plain)
        rows += await scenarios.multi_key(bench)
        rows += await scenarios.lists(bench)
    await es.close()
    return rows


# Report ----------------------------------------------------------------------------------------


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
