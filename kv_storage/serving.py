"""``kv-storage serve``: the application behind aiohttp's ``AppRunner``, its connections guarded.

``web.run_app`` makes each connection's protocol itself (``web.Server``), so the guard of
``kv_storage.connections`` could not stand in front of it. This does what ``run_app`` did for
the service, with aiohttp's public runner API and ``loop.create_server``, in the same order:
start the application (its ``cleanup_ctx``), listen, wait for SIGTERM or SIGINT; then stop
listening, close idle connections, answer blocking reads (``on_shutdown``), give requests in
flight ``shutdown_timeout_s``, and stop the application's parts (the history's last flush).
"""

import asyncio
import logging
import resource
import signal
import ssl

import uvloop
from aiohttp import web

from kv_storage.app_keys import CONFIG, METRICS
from kv_storage.connections import ConnectionGuard, ConnectionLimits
from kv_storage.http_logs import RouteAccessLogger

logger = logging.getLogger("kv_storage")

KEEPALIVE_TIMEOUT_S = 75.0
"""How long an idle connection is kept between requests (``run_app``'s default, which the
service had): longer than the pools of common proxies keep theirs."""

_SPARE_FILES = 256
"""Files the process needs besides its clients' connections: Elasticsearch's connections,
the listening socket, logs, the interpreter's own."""


def serve(app: web.Application, *, ssl_context: ssl.SSLContext | None) -> None:
    """Serves ``app`` until SIGTERM or SIGINT, in a uvloop event loop of its own."""
    uvloop.run(_serve(app, ssl_context))


async def _serve(app: web.Application, ssl_context: ssl.SSLContext | None) -> None:
    server_config = app[CONFIG].server
    _allow_open_files(server_config.max_connections + _SPARE_FILES)
    runner = web.AppRunner(
        app,
        # A request whose client went away ends at once (a blocking read stops waiting);
        # what an actor was doing for it goes on, so no write is left half done.
        handler_cancellation=True,
        shutdown_timeout=app[CONFIG].app.request_timeout_s + 1,
    )
    await runner.setup()
    try:
        server = runner.server
        assert server is not None  # set up just above
        limits = ConnectionLimits(
            header_timeout_s=server_config.header_timeout_s,
            max_connections=server_config.max_connections,
        )
        guard = ConnectionGuard(limits, app[METRICS])
        access_log = logging.getLogger("aiohttp.access") if server_config.access_log else None
        listener = await asyncio.get_running_loop().create_server(
            guard.protocol_factory(
                server,
                keepalive_timeout=KEEPALIVE_TIMEOUT_S,
                # The route template, never the path (ids, keys) or a header (Secret-Key).
                access_log_class=RouteAccessLogger,
                access_log=access_log,
            ),
            server_config.host,
            server_config.port,
            ssl=ssl_context,
            ssl_handshake_timeout=limits.header_timeout_s if ssl_context is not None else None,
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


def _allow_open_files(needed: int) -> None:
    """Raises the process's soft limit of open files towards ``needed`` (within the hard
    limit), so that ``server.max-connections`` is what refuses connections, not the file
    limit (which fails the accept itself, silently for the client); says so when it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < needed:
        logger.warning(
            "connections: the open-file limit (%d) is below server.max-connections + %d; "
            "beyond about %d connections, new ones fail without an answer (raise the limit, "
            "ulimit -n, or lower server.max-connections)",
            wanted,
            _SPARE_FILES,
            max(wanted - _SPARE_FILES, 0),
        )
