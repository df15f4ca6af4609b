"""``make run``'s first run (``scripts/run.sh``) on the local node: the block it prints before
the service's log lines, its curl lines pasted as printed, the same demo storage on the next
run; and a configured Elasticsearch left alone."""

import asyncio
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage.es.names import IndexNames
from kv_storage.first_run import DEMO_VALUE, state_file
from tests.conftest import ES_URL_ENV, LOCAL_ES, LOCAL_TEST_NODE, ROOT
from tests.waiting import wait_until

RUN_SH = ROOT / "scripts" / "run.sh"
START_TIMEOUT_S = 180  # local-es status, init, the first run and the service, on a busy machine
STOP_TIMEOUT_S = 60

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # scripts/run.sh, three times


@dataclass
class Run:
    process: asyncio.subprocess.Process
    lines: list[str]

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


async def _collect(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert process.stdout is not None
    async for line in process.stdout:
        lines.append(line.decode(errors="replace").rstrip("\n"))


def _environment(extra: dict[str, str]) -> dict[str, str]:
    """The test run's environment without anything that configures the service, plus extra."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KV_STORAGE_") and k not in ("PORT", "LOCAL_ES_NODE")
    }
    return {**inherited, **extra}


@asynccontextmanager
async def run_script(extra: dict[str, str], port: int) -> AsyncIterator[Run]:
    """``scripts/run.sh`` in a session of its own, until the service answers on ``port``;
    stopped after as a developer stops it, with Ctrl-C (SIGINT to the whole group)."""
    process = await asyncio.create_subprocess_exec(
        str(RUN_SH),
        env=_environment(extra),
        stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    run = Run(process, [])
    collector = asyncio.create_task(_collect(process, run.lines))
    try:
        async with aiohttp.ClientSession() as session:

            async def up() -> bool:
                assert process.returncode is None, f"run.sh exited early:\n{run.output}"
                try:
                    async with session.get(f"http://127.0.0.1:{port}/health") as answer:
                        return answer.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_until(up, timeout_s=START_TIMEOUT_S, interval_s=0.2, what="run.sh serving")
        yield run
        os.killpg(process.pid, signal.SIGINT)
        async with asyncio.timeout(STOP_TIMEOUT_S):
            assert await process.wait() == 0, run.output
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        await collector


@dataclass(frozen=True)
class Block:
    service: str
    swagger_ui: str
    admin_token: str
    storage_id: str
    secret: str
    curl_lines: list[str]
    kv_lines: list[str]
    """``export ...`` and ``.venv/bin/kv-storage kv ...``, to paste one after the other."""


def _block(run: Run) -> Block:
    """The printed block, which must come before any line the service logs."""
    rules = [n for n, line in enumerate(run.lines) if re.fullmatch(r"-{20,}", line)]
    assert len(rules) == 2, run.output
    start, end = rules
    first_log = next(n for n, line in enumerate(run.lines) if line.startswith("{"))
    assert end < first_log, f"the block must come before the service's log lines:\n{run.output}"
    block = run.lines[start:end]

    def field(name: str) -> str:
        found = [m.group(1) for line in block if (m := re.match(rf"  {name} +(\S+)", line))]
        assert len(found) == 1, (name, block)
        return found[0]

    return Block(
        service=field("Service"),
        swagger_ui=field("Swagger UI"),
        admin_token=field("Admin token"),
        storage_id=field("Demo storage"),
        secret=field("Its secret"),
        curl_lines=[line for line in block if line.startswith("curl ")],
        kv_lines=[line for line in block if line.startswith(("export ", ".venv/bin/kv-storage "))],
    )


async def _shell(line: str) -> str:
    """``line`` run by a shell, as pasted into a terminal; its standard output."""
    process = await asyncio.create_subprocess_shell(
        line, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


@pytest.fixture
def local_node(es_url: str) -> str:
    """The local node that ``es_url`` runs on: run.sh finds it running and leaves it so."""
    if os.environ.get(ES_URL_ENV):
        pytest.skip(f"{ES_URL_ENV} names a cluster; run.sh works with a local node")
    return LOCAL_TEST_NODE


async def test_a_first_run_prints_a_block_whose_curl_lines_work(
    local_node: str, index_prefix: str, unused_tcp_port: int
) -> None:
    state = state_file(ROOT / ".cache" / "first-run", local_node, index_prefix)
    environ = {
        "LOCAL_ES_NODE": local_node,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
        "KV_STORAGE_SERVER_HOST": "127.0.0.1",
        "PORT": str(unused_tcp_port),
    }
    try:
        async with run_script(environ, unused_tcp_port) as run, aiohttp.ClientSession() as session:
            block = _block(run)
            assert block.service == f"http://127.0.0.1:{unused_tcp_port}"
            assert block.swagger_ui == f"{block.service}/api/docs"
            assert len(block.admin_token) >= 32
            assert len(block.curl_lines) == 2, run.output

            set_line, get_line = block.curl_lines
            assert (await _shell(set_line)).strip() == "200"
            assert await _shell(get_line) == f"{DEMO_VALUE}\n"
            assert len(block.kv_lines) == 2, run.output
            assert await _shell(" && ".join(block.kv_lines)) == f"{DEMO_VALUE}\n"

            admin = {"Authorization": f"Bearer {block.admin_token}"}
            async with session.get(
                f"{block.service}/admin/storages/{block.storage_id}", headers=admin
            ) as shown:
                assert shown.status == 200
                storage = await shown.json()
            assert (storage["type"], storage["historyEnabled"]) == ("ACCOUNT", True)
            async with session.get(f"{block.swagger_ui}") as ui:
                assert ui.status == 200
        first = block

        async with run_script(environ, unused_tcp_port) as run:
            again = _block(run)
        assert (again.storage_id, again.secret) == (first.storage_id, first.secret)
        assert again.admin_token != first.admin_token  # made for each run
    finally:
        state.unlink(missing_ok=True)
    status = await asyncio.create_subprocess_exec(
        str(LOCAL_ES), "status", "--name", local_node, stderr=asyncio.subprocess.DEVNULL
    )
    assert await status.wait() == 0, "run.sh stopped a node it had not started"


async def test_a_configured_elasticsearch_is_left_alone(
    es_url: str, index_prefix: str, unused_tcp_port: int, es: AsyncElasticsearch
) -> None:
    environ = {
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
        "KV_STORAGE_SERVER_HOST": "127.0.0.1",
        "KV_STORAGE_SERVER_PORT": str(unused_tcp_port),
    }
    async with run_script(environ, unused_tcp_port) as run, aiohttp.ClientSession() as session:
        assert "Demo storage" not in run.output
        assert "Admin token" not in run.output
        base = f"http://127.0.0.1:{unused_tcp_port}"
        async with session.get(f"{base}/admin/storages?account=demo") as admin:
            assert admin.status == 403  # no token made: the API stays off
    registry = IndexNames(index_prefix).registry
    await es.indices.refresh(index=registry)
    assert (await es.count(index=registry))["count"] == 0  # no demo storage
