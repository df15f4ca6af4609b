"""Attacks on the HTTP layer itself (issue 24, findings 4, 7 and 8), replayed over raw sockets
against a real service process: connections that never finish their headers, more connections
than an instance takes, requests aiohttp refuses before the application sees them.

Each test starts its own ``kv-storage serve`` (about a second), configured small, so that
what one test does to the process's connections cannot disturb another.
"""

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import service_process
from tests.waiting import wait_until

HEADER_TIMEOUT_S = 1.0
MARGIN_S = 2.0
"""What a test allows beyond a bound of the service for the loops of two processes."""


@dataclass
class Service:
    process: asyncio.subprocess.Process
    port: int

    async def stop(self) -> str:
        """Stops the service gracefully; answers everything it logged."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                assert await self.process.wait() == 0
        assert self.process.stdout is not None
        return (await self.process.stdout.read()).decode()

    async def request(self, target: str) -> tuple[int, bytes]:
        """``GET target`` on a connection of its own: the status and the body."""
        answer = await exchange(self.port, f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        return int(answer.split(b" ", 2)[1]), answer.partition(b"\r\n\r\n")[2]

    async def metrics(self) -> dict[str, float]:
        status, body = await self.request("/metrics")
        assert status == 200, body
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            if not sample.labels
        }


@asynccontextmanager
async def served(
    es_url: str, index_prefix: str, port: int, **settings: str
) -> AsyncIterator[Service]:
    environ = {
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
        **{f"KV_STORAGE_{name.upper()}": value for name, value in settings.items()},
    }
    async with service_process(environ, port) as (process, _):
        yield Service(process, port)


async def exchange(port: int, request: bytes) -> bytes:
    """Sends ``request`` (with ``Connection: close`` when it has headers) on a connection of
    its own; everything the service answers until it closes the connection."""
    if request.endswith(b"\r\n\r\n") and b"Connection:" not in request:
        request = request[:-2] + b"Connection: close\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def head_and_body(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    """The status line, the headers (names in lower case) and the body of one answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status_line, headers, body


def assert_like_every_answer(headers: dict[str, str]) -> None:
    """The headers of kv_storage.headers, and nothing that names the server."""
    assert "server" not in headers, headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert headers["content-type"] == "application/json;charset=utf-8"


def access_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if '"logger": "aiohttp.access"' in line]


@pytest.fixture
def port(unused_tcp_port: int) -> int:
    return unused_tcp_port


# ------------------------------------------------------------- what aiohttp answers itself


async def test_a_made_up_method_is_one_access_line_and_no_traceback(
    es_url: str, index_prefix: str, port: int
) -> None:
    """Finding 7: the access log looked up the route of requests aiohttp had refused itself
    (which have none) and logged a traceback for each."""
    async with served(es_url, index_prefix, port, server_access_log="true") as service:
        for _ in range(3):
            answer = await exchange(port, b"FOO /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status_line, headers, body = head_and_body(answer)
            assert " 400 " in status_line, answer
            assert_like_every_answer(headers)
            assert json.loads(body) == {"error": "malformed request: unknown method"}
        log = await service.stop()
    assert "Traceback" not in log
    assert "Unhandled exception" not in log
    refused = [line for line in access_lines(log) if "/health" not in line]  # not the probe
    assert len(refused) == 3, log
    assert all("unmatched" in line for line in refused), refused


@pytest.mark.parametrize(
    ("request_bytes", "error"),
    [
        (b"GET /he alth HTTP/1.1 <script>\r\nHost: x\r\n\r\n", "invalid request line"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nBad <script> Header\r\n\r\n", None),
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"<script>" * 2000 + b"\r\n\r\n",
            "the request line or a header is too long",
        ),
        (b"GET /" + b"<script>" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "too long"),
        (b"GET /health HTTP/1.1\r\n\r\n", None),  # HTTP/1.1 without Host
        (b"\x16\x03\x01\x02\x00\x01\x00\x01<script>\r\n\r\n", None),  # TLS to the HTTP port
    ],
    ids=["request-line", "header", "long-header", "long-target", "no-host", "tls"],
)
async def test_aiohttps_own_400s_look_like_every_other_answer(
    es_url: str, index_prefix: str, port: int, request_bytes: bytes, error: str | None
) -> None:
    """Finding 8: aiohttp's 400s said ``Server: Python/3.11 aiohttp/...``, lacked the security
    headers and echoed the request line; each logged a traceback at error level."""
    async with served(es_url, index_prefix, port) as service:
        answer = await exchange(port, request_bytes)
        metrics = await service.metrics()
        log = await service.stop()
    status_line, headers, body = head_and_body(answer)
    assert " 400 " in status_line, answer
    assert_like_every_answer(headers)
    assert headers["connection"] == "close"
    message = json.loads(body)["error"]
    assert message.startswith("malformed request")
    if error is not None:
        assert error in message
    assert b"<script>" not in answer
    assert "aiohttp" not in answer.decode("latin-1")
    assert metrics["kv_storage_http_malformed_requests_total"] == 1
    assert "Traceback" not in log
    assert "<script>" not in log


# ------------------------------------------------------------------------ the header timeout


async def trickle(port: int, stop: asyncio.Event) -> float:
    """Opens a connection and sends a header byte every 0.1 s until the service closes it or
    ``stop`` is set; answers how long the connection lived."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened = loop.time()
    try:
        writer.write(b"GET /health HTTP/1.1\r\nX-Slow: ")
        while not stop.is_set():
            try:
                writer.write(b"a")
                await writer.drain()
                async with asyncio.timeout(0.1):
                    if await reader.read(1024) == b"":
                        break  # closed by the service
            except TimeoutError:
                continue
            except ConnectionError:
                break
        return loop.time() - opened
    finally:
        writer.close()


async def test_trickled_headers_are_cut_off_at_the_header_timeout_while_health_answers(
    es_url: str, index_prefix: str, port: int
) -> None:
    """Finding 4: a connection trickling a header byte every 5 s was held 75 s, and enough of
    them made the service unreachable, with nothing logged."""
    settings = {"server_header_timeout": f"{HEADER_TIMEOUT_S}s"}
    async with served(es_url, index_prefix, port, **settings) as service:
        # A kept-alive connection that made a request and then idles longer than the header
        # timeout is keep-alive's to close, not the header timeout's.
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await idle_reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port)
        stop = asyncio.Event()
        tricklers = [asyncio.create_task(trickle(port, stop)) for _ in range(20)]
        try:
            while not all(task.done() for task in tricklers):
                assert (await service.request("/health"))[0] == 200
                await asyncio.wait(tricklers, timeout=0.1)
        finally:
            stop.set()
        lifetimes = [await task for task in tricklers]
        assert min(lifetimes) >= HEADER_TIMEOUT_S * 0.9, lifetimes
        assert max(lifetimes) <= HEADER_TIMEOUT_S + MARGIN_S, lifetimes
        # A connection that sends nothing at all is closed as well.
        async with asyncio.timeout(HEADER_TIMEOUT_S + MARGIN_S):
            assert await silent_reader.read() == b""
        silent_writer.close()
        idle_writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert (await idle_reader.read()).startswith(b"HTTP/1.1 200")
        idle_writer.close()
        metrics = await service.metrics()
        log = await service.stop()
    assert metrics["kv_storage_http_header_timeouts_total"] == 21
    assert "request headers took longer than server.header-timeout (1 s)" in log
    assert "Traceback" not in log


# ----------------------------------------------------------------------- the connection cap


async def test_connections_beyond_the_cap_are_answered_503_and_counted(
    es_url: str, index_prefix: str, port: int
) -> None:
    cap = 5
    settings = {"server_max_connections": str(cap), "server_header_timeout": "60s"}
    async with served(es_url, index_prefix, port, **settings) as service, AsyncExitStack() as held:

        async def alone() -> bool:
            """Only the request asking is open: the start-up probe's connection is gone."""
            return (await service.metrics())["kv_storage_http_open_connections"] == 1

        await wait_until(alone, what="the service's connections to close")
        connections = []
        for _ in range(cap):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            held.callback(writer.close)
            connections.append((reader, writer))
        refusals = [
            await exchange(port, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n") for _ in range(3)
        ]
        for answer in refusals:
            status_line, headers, body = head_and_body(answer)
            assert status_line == "HTTP/1.1 503 Service Unavailable", answer
            assert_like_every_answer(headers)
            assert headers["retry-after"] == "1"
            assert headers["connection"] == "close"
            assert json.loads(body) == {
                "error": "too many connections to this instance; try again shortly"
            }
        # The connections held are served as ever.
        reader, writer = connections.pop()
        writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 200")
        writer.close()

        async def served_again() -> bool:
            return (await service.request("/health"))[0] == 200

        await wait_until(served_again, what="a request once below the cap")
        metrics = await service.metrics()
        assert metrics["kv_storage_http_refused_connections_total"] >= 3
        assert metrics["kv_storage_http_open_connections"] == cap
        log = await service.stop()
    assert "connections: refused 1 with 503 since the last line: 5 open" in log
    assert "Traceback" not in log
