"""A job that runs every interval in one task of its own: the registry poll, the expiry sweep.

They take no messages, so they are not actors but one visible loop each, the way arq's
worker polls: wait for the interval (or the stop), run one iteration, again. An iteration
that fails is logged and the next one comes on time; nothing ends the loop but ``stop``.
``run_now`` runs one iteration at once (tests, and anyone who cannot wait), never at the same
time as the loop's own.
"""

import asyncio
import contextlib
import logging

logger = logging.getLogger(__name__)


class PeriodicJob:
    def __init__(self, *, name: str, interval_s: float) -> None:
        self.name = name
        self._interval_s = interval_s
        self._stopping = asyncio.Event()
        self._one_at_a_time = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def iteration(self) -> None:
        """One run of the job; subclasses do their work here."""
        raise NotImplementedError

    async def on_stop(self) -> None:
        """After the loop ended: release what the job holds."""

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"{self.name} was started already")
        self._task = asyncio.create_task(self._main(), name=self.name)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ends the loop once the iteration under way (if any) ends; cancels it if that takes
        longer than ``timeout_s``."""
        if self._task is None or self._task.done():
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            logger.warning("%s did not stop within %.1f s; cancelling", self.name, timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.on_stop()

    async def run_now(self) -> None:
        async with self._one_at_a_time:
            await self._guarded_iteration()

    async def _main(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            await self.run_now()

    async def _guarded_iteration(self) -> None:
        try:
            await self.iteration()
        except Exception:
            logger.exception("%s: an iteration failed; the next comes on time", self.name)
