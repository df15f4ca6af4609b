"""``kv-storage serve``: the application behind aiohttp's ``AppRunner``.

``web.run_app`` makes each connection's protocol itself (``web.Server``), so nothing can stand
in front of it. This does what ``run_app`` did for the service, with aiohttp's public runner
API and ``loop.create_server``, in the same order: start the application (its
``cleanup_ctx``), listen, wait for SIGTERM or SIGINT; then stop listening, close idle
connections, answer blocking reads (``on_shutdown``), give requests in flight
``shutdown_timeout``, and stop the application's parts (the history's last flush).
"""

import asyncio
import logging
import signal
import ssl

import uvloop
from aiohttp import web

from kv_storage.app_keys import CONFIG
from kv_storage.http_logs import RouteAccessLogger

KEEPALIVE_TIMEOUT_S = 75.0
"""How long an idle connection is kept between requests (``run_app``'s default, which the
service had): longer than the pools of common proxies keep theirs."""


def serve(app: web.Application, *, ssl_context: ssl.SSLContext | None) -> None:
    """Serves ``app`` until SIGTERM or SIGINT, in a uvloop event loop of its own."""
    uvloop.run(_serve(app, ssl_context))


async def _serve(app: web.Application, ssl_context: ssl.SSLContext | None) -> None:
    server_config = app[CONFIG].server
    access_log = logging.getLogger("aiohttp.access") if server_config.access_log else None
    runner = web.AppRunner(
        app,
        # A request whose client went away ends at once (a blocking read stops waiting);
        # what an actor was doing for it goes on, so no write is left half done.
        handler_cancellation=True,
        shutdown_timeout=app[CONFIG].app.request_timeout_s + 1,
        keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        # The route template, never the path (ids, keys) or a header (Secret-Key).
        access_log_class=RouteAccessLogger,
        access_log=access_log,
    )
    await runner.setup()
    try:
        server = runner.server
        assert server is not None  # set up just above
        listener = await asyncio.get_running_loop().create_server(
            server, server_config.host, server_config.port, ssl=ssl_context
        )
        try:
            await _until_told_to_stop()
        finally:
            listener.close()
    finally:
        await runner.cleanup()


async def _until_told_to_stop() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    try:
        await stop.wait()
    finally:
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signal_number)
