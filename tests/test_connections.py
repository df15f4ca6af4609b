"""Attacks on the HTTP layer itself, replayed over raw sockets against a real service process:
requests aiohttp refuses before our application sees them.

Each test starts its own ``kv-storage serve`` (about a second), configured small, so that
what one test does to the process's connections cannot disturb another.
"""

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from tests.processes import service_process


@dataclass
class Service:
    process: asyncio.subprocess.Process
    base: str
    port: int

    async def stop(self) -> str:
        """Stops the service gracefully; answers everything it logged."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await self.process.wait()
        assert self.process.stdout is not None
        return (await self.process.stdout.read()).decode()


@asynccontextmanager
async def served(
    es_url: str, index_prefix: str, port: int, **settings: str
) -> AsyncIterator[Service]:
    environ = {
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
        **{f"KV_STORAGE_{name.upper()}": value for name, value in settings.items()},
    }
    async with service_process(environ, port) as (process, base):
        yield Service(process, base, port)


async def exchange(port: int, request: bytes) -> bytes:
    """Sends ``request`` on a connection of its own; everything the service answers until it
    closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def access_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if '"logger": "aiohttp.access"' in line]


@pytest.fixture
def port(unused_tcp_port: int) -> int:
    return unused_tcp_port


async def test_a_made_up_method_is_one_access_line_and_no_traceback(
    es_url: str, index_prefix: str, port: int
) -> None:
    """Finding 7: the access log looked up the route of requests aiohttp had refused itself
    (which have none) and logged a traceback for each."""
    async with served(es_url, index_prefix, port, server_access_log="true") as service:
        for _ in range(3):
            answer = await exchange(port, b"FOO /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.0 4"), answer
        log = await service.stop()
    assert "Traceback" not in log
    assert "Unhandled exception" not in log
    refused = [line for line in access_lines(log) if "/health" not in line]  # not the probe
    assert len(refused) == 3, log
    assert all("unmatched" in line for line in refused), refused
