"""The history actor: buffers the history records of storage operations and writes them in bulk.

A batch goes when ``flush-size`` records wait, or when the oldest waiting record has waited
``flush-timeout``. Records that fail (the whole request, or single items) wait another
``flush-timeout`` and go again with a later batch. ``retry-limit`` counts retries, as the
original did: a record is tried at most ``retry-limit`` + 1 times (the first attempt and
``retry-limit`` retries); then it is logged as lost, by count and storage, never by value.
After a whole request failed, no batch goes for ``flush-timeout``: an unavailable
Elasticsearch is not hammered, and each record's retries are spread over ``retry-limit`` x
``flush-timeout``.

Memory is bounded by ``buffer-size`` records: when Elasticsearch refuses writes for longer
than the buffer lasts, new records are dropped (counted and logged) rather than the process
growing without end. Storage requests never wait for any of this: ``record`` only enqueues.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kv_storage.actors.base import Actor, ActorStoppedError
from kv_storage.config import HistoryConfig
from pipeline.records import HistoryRecord

logger = logging.getLogger(__name__)

_OVERFLOW_LOG_INTERVAL_S = 10.0
_DRAIN_BACKOFF_S = 0.2


class WriteFailedError(Exception):
    """A writer's whole request failed; the message names the cause and holds no values."""


class HistoryWriter(Protocol):
    async def write(self, batch: Sequence[tuple[str, HistoryRecord]]) -> set[str]:
        """Writes ``(record id, record)`` pairs in one request; answers the ids that failed.

        Raises (preferably ``WriteFailedError``) when the request as a whole failed. Writing
        a record twice under its id is harmless, so a retry never duplicates history.
        """


@dataclass(slots=True)
class _Entry:
    id: str
    record: HistoryRecord
    due_at: float
    """Loop time after which this entry must go, even in a batch that is not full."""
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class HistoryStats:
    buffered: int
    written: int
    retried: int
    lost: int
    """Dropped after ``retry-limit`` retries, or still unwritten when the shutdown ended."""
    dropped: int
    """Refused because the buffer was full."""
    flushes: int


@dataclass(frozen=True, slots=True)
class Record:
    records: tuple[HistoryRecord, ...]


@dataclass(frozen=True, slots=True)
class GetStats:
    pass


@dataclass(frozen=True, slots=True)
class Drain:
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Discard:
    """Drop the waiting records of a deleted storage: written, they would re-create its
    history index through the template."""

    storage_id: str


@dataclass(frozen=True, slots=True)
class _FlushDone:
    task: "asyncio.Task[set[str]]" = field(repr=False)


HistoryMessage = Record | GetStats | Drain | Discard | _FlushDone


class HistoryActor(Actor[HistoryMessage]):
    def __init__(
        self,
        *,
        writer: HistoryWriter,
        config: HistoryConfig,
        shutdown_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(name="history")
        self._writer = writer
        self._config = config
        self._max_buffered = config.buffer_size
        self._shutdown_timeout_s = shutdown_timeout_s
        self._fresh: deque[_Entry] = deque()
        self._retries: list[_Entry] = []
        self._in_flight: list[_Entry] = []
        self._flush_task: asyncio.Task[set[str]] | None = None
        self._paused_until = 0.0
        self._written = self._retried = self._lost = self._dropped = self._flushes = 0
        self._last_overflow_log = float("-inf")

    # The sink the storage actor hands records to --------------------------------------------

    def record(self, records: Sequence[HistoryRecord]) -> None:
        try:
            self.send(Record(tuple(records)))
        except ActorStoppedError:
            logger.error(
                "history: actor not running; %d records lost (storages: %s; requests: %s)",
                len(records),
                _storages(records),
                _requests(records),
            )

    def discard(self, storage_id: str) -> None:
        """Send-only: the lifecycle actor calls it when it deletes a storage."""
        # Stopped: the shutdown drain already wrote or lost what was buffered.
        with contextlib.suppress(ActorStoppedError):
            self.send(Discard(storage_id))

    async def stats(self) -> HistoryStats:
        stats: HistoryStats = await self.ask(GetStats())
        return stats

    async def stop(self, timeout_s: float | None = None) -> None:
        """Writes what is buffered (within the shutdown bound), then ends the actor."""
        if self.running:
            bound = self._shutdown_timeout_s if timeout_s is None else timeout_s
            with contextlib.suppress(ActorStoppedError):
                await self.ask(Drain(bound))
        await super().stop()

    # The actor's own work ---------------------------------------------------------------------

    async def handle(self, message: HistoryMessage) -> HistoryStats | None:
        match message:
            case Record(records):
                self._accept(records)
            case _FlushDone(task):
                if task is self._flush_task:
                    self._flush_task = None
                    self._settle(task)
            case GetStats():
                return self._stats()
            case Drain(timeout_s):
                await self._drain(timeout_s)
                return self._stats()
            case Discard(storage_id):
                self._discard(storage_id)
        self._maybe_flush()
        return None

    def next_deadline(self) -> float | None:
        if self._flush_task is not None:
            return None  # its _FlushDone comes as a message
        due = [entry.due_at for entry in self._retries]
        if self._fresh:
            due.append(self._fresh[0].due_at)
        return max(min(due), self._paused_until) if due else None

    async def on_deadline(self) -> None:
        self._maybe_flush()

    def _accept(self, records: Iterable[HistoryRecord]) -> None:
        loop_now = asyncio.get_running_loop().time()
        for record in records:
            if self._buffered() >= self._max_buffered:
                self._overflow(record)
                continue
            entry = _Entry(uuid.uuid4().hex, record, loop_now + self._config.flush_timeout_s)
            self._fresh.append(entry)

    def _overflow(self, record: HistoryRecord) -> None:
        self._dropped += 1
        now = time.monotonic()
        if now - self._last_overflow_log >= _OVERFLOW_LOG_INTERVAL_S:
            self._last_overflow_log = now
            logger.error(
                "history: buffer full (%d records waiting, Elasticsearch is not taking them); "
                "dropping new records, %d so far (latest storage: %s)",
                self._buffered(),
                self._dropped,
                record.storage_id,
            )

    def _maybe_flush(self) -> None:
        loop_now = asyncio.get_running_loop().time()
        if self._flush_task is not None or loop_now < self._paused_until:
            return
        due_retries = [entry for entry in self._retries if entry.due_at <= loop_now]
        fresh_due = bool(self._fresh) and self._fresh[0].due_at <= loop_now
        if not (due_retries or fresh_due or len(self._fresh) >= self._config.flush_size):
            return
        batch = self._take_batch(due_retries)
        self._flush_task = asyncio.create_task(self._write(batch), name="history-flush")
        self._flush_task.add_done_callback(self._report_flush)

    def _take_batch(self, retries: list[_Entry]) -> list[_Entry]:
        size = self._config.flush_size
        batch = retries[:size]
        taken = {id(entry) for entry in batch}
        self._retries = [entry for entry in self._retries if id(entry) not in taken]
        while self._fresh and len(batch) < size:
            batch.append(self._fresh.popleft())
        for entry in batch:
            entry.attempts += 1
        self._in_flight = batch
        self._flushes += 1
        return batch

    async def _write(self, batch: list[_Entry]) -> set[str]:
        return await self._writer.write([(entry.id, entry.record) for entry in batch])

    def _report_flush(self, task: "asyncio.Task[set[str]]") -> None:
        with contextlib.suppress(ActorStoppedError):  # stopped: the drain settled it
            self.send(_FlushDone(task))

    def _settle(self, task: "asyncio.Task[set[str]]") -> None:
        """Books the outcome of the batch in flight: written, to retry, or lost."""
        batch, self._in_flight = self._in_flight, []
        loop_now = asyncio.get_running_loop().time()
        if task.cancelled():
            failed = {entry.id for entry in batch}
        elif (error := task.exception()) is not None:
            failed = {entry.id for entry in batch}
            self._paused_until = loop_now + self._config.flush_timeout_s
            logger.warning(
                "history: writing %d records failed (%s); retrying in %g s (requests: %s)",
                len(batch),
                _describe(error),
                self._config.flush_timeout_s,
                _requests([entry.record for entry in batch]),
            )
        else:
            failed = task.result()
        exhausted: list[_Entry] = []
        for entry in batch:
            if entry.id not in failed:
                self._written += 1
            elif entry.attempts > self._config.retry_limit:  # the first attempt, then retries
                exhausted.append(entry)
            else:
                entry.due_at = loop_now + self._config.flush_timeout_s
                self._retries.append(entry)
                self._retried += 1
        if exhausted:
            limit = self._config.retry_limit
            self._lose(exhausted, f"after {limit + 1} attempts (1 + retry-limit {limit} retries)")

    def _lose(self, entries: Sequence[_Entry], why: str) -> None:
        self._lost += len(entries)
        records = [entry.record for entry in entries]
        logger.error(
            "history: %d records lost %s (storages: %s; requests: %s)",
            len(entries),
            why,
            _storages(records),
            _requests(records),
        )

    async def _drain(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        written_before, lost_before = self._written, self._lost
        while self._buffered() and loop.time() < deadline:
            if self._flush_task is None:
                for entry in self._retries:
                    entry.due_at = loop.time()
                batch = self._take_batch(list(self._retries))
                self._flush_task = asyncio.create_task(self._write(batch), name="history-drain")
            task = self._flush_task
            try:
                await asyncio.wait_for(asyncio.shield(task), deadline - loop.time())
            except TimeoutError:
                break
            except Exception:
                pass  # settled below: the batch goes again
            self._flush_task = None
            retried_before = self._retried
            self._settle(task)
            if self._retried > retried_before:  # not back to back: retry-limit is not a burst
                await asyncio.sleep(min(_DRAIN_BACKOFF_S, max(0.0, deadline - loop.time())))
        if self._flush_task is not None:
            self._flush_task.cancel()
            self._flush_task = None
        unwritten = [*self._in_flight, *self._retries, *self._fresh]
        self._in_flight, self._retries = [], []
        self._fresh.clear()
        if unwritten:
            self._lose(unwritten, f"at shutdown, not written within {timeout_s:g} s")
        logger.info(
            "history: shutdown flush wrote %d records, %d could not be written",
            self._written - written_before,
            self._lost - lost_before,
        )

    def _discard(self, storage_id: str) -> None:
        """Drops the storage's waiting records (fresh and to retry) and keeps those of a batch
        in flight from being retried; that batch itself may still land, and the expiry sweep
        removes what it re-creates."""
        before = self._buffered()
        self._fresh = deque(e for e in self._fresh if e.record.storage_id != storage_id)
        self._retries = [e for e in self._retries if e.record.storage_id != storage_id]
        self._in_flight = [e for e in self._in_flight if e.record.storage_id != storage_id]
        if discarded := before - self._buffered():
            logger.info(
                "history: %d records of deleted storage %s discarded", discarded, storage_id
            )

    def _buffered(self) -> int:
        return len(self._fresh) + len(self._retries) + len(self._in_flight)

    def _stats(self) -> HistoryStats:
        return HistoryStats(
            buffered=self._buffered(),
            written=self._written,
            retried=self._retried,
            lost=self._lost,
            dropped=self._dropped,
            flushes=self._flushes,
        )


def _storages(records: Iterable[HistoryRecord]) -> str:
    return ", ".join(sorted({record.storage_id for record in records}))


_REQUESTS_NAMED = 10


def _requests(records: Sequence[HistoryRecord]) -> str:
    """The requests behind the records, for finding them in the log (the first few)."""
    ids = list(dict.fromkeys(record.request_id for record in records if record.request_id))
    named = ", ".join(ids[:_REQUESTS_NAMED]) or "none"
    return (
        named if len(ids) <= _REQUESTS_NAMED else f"{named} and {len(ids) - _REQUESTS_NAMED} more"
    )


def _describe(error: BaseException) -> str:
    return str(error) if isinstance(error, WriteFailedError) else repr(error)
