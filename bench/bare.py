"""A bare aiohttp handler on the event loop the service runs on (uvloop): what serving one
request costs before any work of the service's own. ``make bench`` measures it beside the
service in the same run, as the yardstick of the service's CPU per request.

    python bench/bare.py PORT

It answers every path and method with a short text body, having read the request's body.
"""

import asyncio
import sys

import uvloop
from aiohttp import web


async def _answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="a small value")


async def _serve(port: int) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()  # until the bench ends the process (SIGTERM)


if __name__ == "__main__":
    uvloop.run(_serve(int(sys.argv[1])))
