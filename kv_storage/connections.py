"""The HTTP connections of one instance, guarded before any request exists.

aiohttp bounds a request once a handler runs (``app.request-timeout``), not the time a client
takes to send its headers, nor the number of connections: a connection trickling a header byte
every 5 s was held 75 s (aiohttp's keep-alive timeout), and 20,000 of them (the process's file
limit) left ``/health`` unreachable, with nothing logged. So, for every connection:

- its request headers must arrive within ``server.header-timeout``, counted from the connection
  (after the TLS handshake, which the same bound limits) and, on a kept-alive connection, from
  the first byte of each further request; a connection idle between requests is aiohttp's
  keep-alive's to close;
- at most ``server.max-connections`` are open: beyond, a connection is answered 503 with
  ``Retry-After`` and ``Connection: close`` at once, without its request being read;
- what aiohttp answers itself (a request that is not valid HTTP: 400) is said in the service's
  words, as JSON, with the security headers of every other answer and without aiohttp's
  ``Server`` header or the request line it echoes.

Refusals and header timeouts are counted in ``/metrics`` and logged at most every
``_LOG_INTERVAL_S`` with their number, so that a flood cannot flood the log.

This works below the application, where aiohttp offers no hooks but its classes:
``GuardedHandler`` is aiohttp's ``RequestHandler`` (the protocol of one connection) with
overrides of its public methods, and ``ConnectionGuard.protocol_factory`` replaces the factory
``web.Server`` would be (``serving`` hands it to ``loop.create_server``); the moment a
request's headers are complete is when aiohttp calls ``web.Server.request_factory``, which
is wrapped. Beyond aiohttp's public API this relies on one private method, overridden
(``_ErrorAnswer``), and on the parser's exception classes (``aiohttp.http_exceptions``, to
name what was malformed). ``tests/test_connections.py`` replays each behaviour against a real
process, so an aiohttp upgrade that breaks any of it fails there.
"""

import asyncio
import email.utils
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import RawRequestMessage
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Counter

from kv_storage.answers import JSON
from kv_storage.errors import RETRY_SOON_S
from kv_storage.headers import API_SECURITY_HEADERS
from kv_storage.metrics import Metrics

logger = logging.getLogger(__name__)

_LOG_INTERVAL_S = 10.0
_REFUSAL_LINGER_S = 1.0
"""How long a refused connection is kept after its 503, its request read and dropped: closing
a socket with unread data resets it, and a reset can overtake the 503 on its way."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float
    max_connections: int


class _Tally:
    """Counts one kind of event, and logs it at once, then at most every ``_LOG_INTERVAL_S``
    with the number since the line before (a line is still due when the events stop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, counter: Counter, message: str) -> None:
        self._loop = loop
        self._counter = counter
        self._message = message
        self._pending = 0
        self._details: tuple[object, ...] = ()
        self._next_line_at = 0.0
        self._line: asyncio.TimerHandle | None = None

    def add(self, *details: object) -> None:
        self._counter.inc()
        self._pending += 1
        self._details = details
        if self._line is None:
            delay = self._next_line_at - self._loop.time()
            if delay <= 0:
                self._log()
            else:
                self._line = self._loop.call_later(delay, self._log)

    def _log(self) -> None:
        self._line = None
        logger.warning(self._message, self._pending, *self._details)
        self._pending = 0
        self._next_line_at = self._loop.time() + _LOG_INTERVAL_S


class ConnectionGuard:
    """The connections of one instance: how many are open, and which new one is served.

    ``protocol_factory`` makes the protocol of each accepted connection; made in the running
    loop, by ``serving``. A connection counts once it is made (after its TLS handshake), so a
    burst of connections accepted in one turn of the loop may pass the cap by up to the listen
    backlog.
    """

    def __init__(self, limits: ConnectionLimits, metrics: Metrics) -> None:
        self.limits = limits
        self.open = 0
        self._metrics = metrics
        metrics.open_connections.set_function(lambda: self.open)
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.refusals = _Tally(
            loop,
            metrics.refused_connections,
            "connections: refused %d with 503 since the last line: %d open, "
            "server.max-connections is %d",
        )
        self.header_timeouts = _Tally(
            loop,
            metrics.header_timeouts,
            "connections: closed %d since the last line: their request headers took longer "
            "than server.header-timeout (%g s)",
        )

    def protocol_factory(
        self, server: web.Server, **handler_options: Any
    ) -> Callable[[], asyncio.Protocol]:
        """What ``loop.create_server`` calls for each connection: a ``GuardedHandler`` of
        ``server`` (the application's; it sees the connection as one of its own, so a
        shutdown waits for its request), or a refusal when the cap is reached.

        ``handler_options`` are ``RequestHandler``'s (keep-alive, access log). Call it once
        per server: it wraps the server's request factory."""
        make_request = server.request_factory

        def begin_request(
            message: RawRequestMessage,
            payload: StreamReader,
            protocol: RequestHandler,
            writer: AbstractStreamWriter,
            task: "asyncio.Task[None]",
        ) -> web.BaseRequest:
            # aiohttp calls the request factory (a public argument of web.Server) once a
            # request's headers are parsed, before any handler: where the header timeout ends.
            if isinstance(protocol, GuardedHandler):
                protocol.request_began()
            return make_request(message, payload, protocol, writer, task)

        server.request_factory = begin_request

        def make() -> asyncio.Protocol:
            if self.open >= self.limits.max_connections:
                self.refusals.add(self.open, self.limits.max_connections)
                return _Refusal(self.loop)
            return GuardedHandler(server, guard=self, loop=self.loop, **handler_options)

        return make

    def opened(self) -> None:
        self.open += 1

    def closed(self) -> None:
        self.open -= 1

    def header_timed_out(self) -> None:
        self.header_timeouts.add(self.limits.header_timeout_s)

    def malformed_request(self) -> None:
        self._metrics.malformed_requests.inc()


class GuardedHandler(RequestHandler):
    """aiohttp's protocol of one connection, with a deadline for each request's headers, its
    place in the count of open connections, and answers of our own to what is not HTTP."""

    __slots__ = ("_counted", "_guard", "_header_deadline", "_in_request")

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **options: Any) -> None:
        super().__init__(manager, **options)
        self._guard = guard
        self._header_deadline: asyncio.TimerHandle | None = None
        self._in_request = False
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._counted = True
        self._guard.opened()
        self._await_headers()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_waiting_for_headers()
        if self._counted:
            self._counted = False
            self._guard.closed()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and not self._in_request and self._header_deadline is None:
            self._await_headers()  # the first byte of a further request
        super().data_received(data)

    def request_began(self) -> None:
        self._stop_waiting_for_headers()
        self._in_request = True

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._in_request = False

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answers of its own: 400 to what is not HTTP (before any route), 500 or 504
        to an exception that escaped every middleware.

        aiohttp's say ``Server: Python/3.11 aiohttp/...``, carry none of our headers and echo
        the request line (``message``, left unused here); and each 400 logged a traceback at
        error level, which a client could repeat at will. A 400 is counted and logged at debug
        level only: it is the client's doing, and the access log has its line.
        """
        if status < 500:
            self._guard.malformed_request()
            # Its class only: the exception's text repeats what the client sent.
            self.logger.debug("refused a request that is not HTTP: %s", type(exc).__name__)
            text = f"malformed request{_what_is_malformed(exc)}"
        else:
            self.log_exception("Error handling request", exc_info=exc)
            text = "not answered in time" if status == 504 else "internal error of the service"
        if request.writer.output_size > 0:
            # As aiohttp does: an answer has begun, a second one cannot follow.
            raise ConnectionError("an answer was sent already; cannot send an error answer")
        answer = _ErrorAnswer(
            status=status,
            body=json.dumps({"error": text}).encode(),
            headers={hdrs.CONTENT_TYPE: JSON, hdrs.CONNECTION: "close", **API_SECURITY_HEADERS},
        )
        answer.force_close()
        return answer

    def _await_headers(self) -> None:
        timeout_s = self._guard.limits.header_timeout_s
        self._header_deadline = self._guard.loop.call_later(timeout_s, self._headers_too_late)

    def _stop_waiting_for_headers(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_late(self) -> None:
        self._header_deadline = None
        if self._in_request or self.transport is None:
            return
        self._guard.header_timed_out()
        self.force_close()


def _what_is_malformed(error: BaseException | None) -> str:
    """Which part of a request aiohttp's parser refused, named without repeating it."""
    for kind, what in _MALFORMED_PARTS:
        if isinstance(error, kind):
            return f": {what}"
    return ""


_MALFORMED_PARTS: tuple[tuple[type[Exception], str], ...] = (
    (LineTooLong, "the request line or a header is too long"),
    (BadHttpMethod, "unknown method"),
    (BadStatusLine, "invalid request line"),
    (InvalidURLError, "invalid request target"),
    (InvalidHeader, "invalid header"),
    (PayloadEncodingError, "invalid body framing (Content-Length, Transfer-Encoding)"),
)
"""Most specific first: ``BadHttpMethod`` is a ``BadStatusLine``."""


class _ErrorAnswer(web.Response):
    """An answer without aiohttp's ``Server`` header.

    aiohttp adds the header while it prepares the headers (``_prepare_headers``) and then runs
    the application's ``on_response_prepare`` hooks, which remove it, only for requests that
    reached the router: an answer to a request that is not HTTP removes it here. This overrides
    a private method; ``tests/test_connections.py`` checks the header is gone.
    """

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall(hdrs.SERVER, None)


class _Refusal(asyncio.Protocol):
    """A connection beyond ``server.max-connections``: 503 at once, its request never parsed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._closing: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though uvloop's are not subclasses of asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.write(_refusal())
        if transport.can_write_eof():
            transport.write_eof()  # the client reads the answer, then the end, and closes
        self._closing = self._loop.call_later(_REFUSAL_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        """The request is not read: it is dropped as it comes."""

    def eof_received(self) -> bool:
        return False  # the client is done too: close

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._closing is not None:
            self._closing.cancel()
        self._transport = None


_REFUSAL_BODY = json.dumps(
    {"error": "too many connections to this instance; try again shortly"}
).encode()
_REFUSAL_HEADERS = {
    hdrs.CONTENT_TYPE: JSON,
    hdrs.CONTENT_LENGTH: str(len(_REFUSAL_BODY)),
    hdrs.RETRY_AFTER: str(RETRY_SOON_S),
    hdrs.CONNECTION: "close",
    **API_SECURITY_HEADERS,
}


def _refusal() -> bytes:
    """Written by hand: no aiohttp request, response or parser exists for this connection."""
    headers = {**_REFUSAL_HEADERS, hdrs.DATE: email.utils.formatdate(usegmt=True)}
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"HTTP/1.1 503 Service Unavailable\r\n{head}\r\n".encode("latin-1") + _REFUSAL_BODY
