"""Whether a request is waiting for Elasticsearch: what a request that ran out of time was
doing, so that its answer can name Elasticsearch as the cause rather than just the clock.

The request's envelope opens a ``Waits`` in its context; the transport counts the
Elasticsearch requests in flight on it. The actors' work for a request runs in the request's
task (plain calls), so the count follows the request through them. An operation that goes in
a batch, a request sent on behalf of many, counts with ``waiting`` while its batch waits or is
in flight.
"""

import asyncio
import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from elastic_transport import AsyncTransport


class Waits:
    __slots__ = ("in_flight", "interrupted")

    def __init__(self) -> None:
        self.in_flight = 0
        self.interrupted = False
        """An Elasticsearch request was cancelled while it waited (the deadline passed)."""

    @property
    def waiting(self) -> bool:
        """Whether the request was waiting for Elasticsearch (still, or until cancelled)."""
        return self.in_flight > 0 or self.interrupted


_current: contextvars.ContextVar[Waits | None] = contextvars.ContextVar(
    "elasticsearch_waits", default=None
)


def track() -> Waits:
    """Counts, from now on in this context, the Elasticsearch requests in flight."""
    waits = Waits()
    _current.set(waits)
    return waits


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """Counts, in this context, one Elasticsearch request in flight for as long as the block
    runs: the batch that carries this request's operation (sent from another context)."""
    waits = _current.get()
    if waits is None:
        yield
        return
    waits.in_flight += 1
    try:
        yield
    except asyncio.CancelledError:
        waits.interrupted = True
        raise
    finally:
        waits.in_flight -= 1


def counting(transport_class: type[AsyncTransport]) -> type[AsyncTransport]:
    """``transport_class``, counting its requests on the current request's ``Waits``."""

    class WaitCountingTransport(transport_class):  # type: ignore[valid-type,misc]
        async def perform_request(self, method: str, target: str, **kwargs: Any) -> Any:
            waits = _current.get()
            if waits is None:
                return await super().perform_request(method, target, **kwargs)
            waits.in_flight += 1
            try:
                return await super().perform_request(method, target, **kwargs)
            except asyncio.CancelledError:
                waits.interrupted = True
                raise
            finally:
                waits.in_flight -= 1

    return WaitCountingTransport
