"""Small pieces every storage handler uses: the empty answer of the original, the arrival
time that history records."""

from aiohttp import web

from kv_storage.clock import now_ms

EMPTY_OK_TYPES = ["application/json", "text/plain"]
"""What an endpoint that answers success with an empty body produces (errors are JSON)."""


def empty_ok() -> web.Response:
    """The original's empty 200, with a content type that says there is nothing to parse."""
    return web.Response(content_type="text/plain")


def received_ms() -> int:
    """The request's arrival in epoch milliseconds, as history records it."""
    return now_ms()
