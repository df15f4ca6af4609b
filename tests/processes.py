"""The service as a real process, for the tests that need one (signals, several instances,
tools that talk HTTP to it)."""

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp

from tests.waiting import wait_until

_PORT_VARIABLES = ("KV_STORAGE_SERVER_PORT", "PORT")


@asynccontextmanager
async def service_process(
    environ: Mapping[str, str], port: int, *, port_variable: str = "KV_STORAGE_SERVER_PORT"
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``kv-storage serve`` with ``environ`` added, once it answers /health; stopped after.

    ``port`` is given in ``port_variable`` alone: whatever port variables the test run itself
    inherited are removed, so that they cannot decide the port instead.
    """
    inherited = {k: v for k, v in os.environ.items() if k not in _PORT_VARIABLES}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kv_storage",
        "serve",
        env={
            **inherited,
            **environ,
            "KV_STORAGE_SERVER_HOST": "127.0.0.1",
            port_variable: str(port),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def up() -> bool:
                assert process.returncode is None, "kv-storage serve exited early"
                try:
                    async with session.get(f"{base}/health") as answer:
                        return answer.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_until(up, timeout_s=30, what="the service answering")
        yield process, base
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
