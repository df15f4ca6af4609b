"""Refreshes of an index before a scan, shared by the scans that want one at once.

A list or a clear refreshes the data index first, so that it sees every write acknowledged
before it began. In the shared layout that index holds every storage's writes: were each scan
to send a refresh of its own, one storage listing in a loop would have the whole index
refreshed as fast as it can ask, and every other storage's writes would pay for the segments.
So refreshes of one index are a group commit: a scan that arrives while none is running starts
one; one that arrives while one runs waits for the next, which starts when the running one is
answered and serves everyone who arrived meanwhile. A refresh that starts after a scan arrived
makes visible every write acknowledged before it, which is all the scan needs; and at most one
refresh of an index is in flight from this instance, however many scans ask.
"""

import asyncio
from collections.abc import Awaitable, Callable


class Refreshes:
    def __init__(self, refresh: Callable[[str], Awaitable[object]]) -> None:
        """``refresh``: sends one refresh of the named index (an error reaches every scan
        that waited for it, such as ``NotFoundError`` for an index never made)."""
        self._refresh = refresh
        self._running: dict[str, asyncio.Future[object]] = {}
        self._next: dict[str, asyncio.Future[object]] = {}
        """Per index, the refresh to start once the running one is answered: not started yet,
        so everyone who joins it arrived before it started."""

    async def refresh(self, index: str) -> None:
        """Returns once a refresh of ``index`` that started after this call was answered."""
        shared = self._next.get(index)
        if shared is None:
            running = self._running.get(index)
            shared = self._start(index) if running is None else self._queue(index, running)
        # Shielded: a scan that gives up does not cancel the refresh others wait for.
        await asyncio.shield(shared)

    def _start(self, index: str) -> asyncio.Future[object]:
        started = asyncio.ensure_future(self._refresh(index))
        self._running[index] = started

        def finished(done: asyncio.Future[object]) -> None:
            if self._running.get(index) is done:
                del self._running[index]
            if not done.cancelled():
                done.exception()  # retrieved: nobody waiting for it is fine too

        started.add_done_callback(finished)
        return started

    def _queue(self, index: str, running: asyncio.Future[object]) -> asyncio.Future[object]:
        async def after_the_running_one() -> object:
            await asyncio.wait([running])
            del self._next[index]
            return await self._start(index)

        queued = asyncio.ensure_future(after_the_running_one())
        queued.add_done_callback(lambda done: None if done.cancelled() else done.exception())
        self._next[index] = queued
        return queued
