"""The history actor: the loop around the history buffer, owning its timing and its writer.

A batch goes when ``flush-size`` records wait, or when the oldest waiting record has waited
``flush-timeout``. Records that fail (the whole request, or single items) wait another
``flush-timeout`` and go again with a later batch. ``retry-limit`` counts retries, as the
original did: a record is tried at most ``retry-limit`` + 1 times (the first attempt and
``retry-limit`` retries); then it is logged as lost, by count and storage, never by value.
After a whole request failed, or every record of a batch was refused, no batch goes for
``flush-timeout``: an Elasticsearch that takes no history is not hammered (nor the service's
own CPU spent on batches bound to fail), and each record's retries are spread over
``retry-limit`` x ``flush-timeout``.

Memory is bounded by ``buffer-size`` records: when Elasticsearch refuses writes for longer
than the buffer lasts, new records are dropped (counted and logged) rather than the process
growing without end. One storage holds at most ``buffer-share-per-storage`` of them, so its
flood has its own records dropped, not the others'. Storage requests never wait for any of
this: ``record`` only enqueues, and the buffer (``pipeline.buffer``) takes a record in O(1)
however much it holds.

Records the writer says are gone with their storage (deleted: its index refuses writes for
good) are dropped at once, counted as discarded, not lost. Refusals, drops and discards can
come by the thousand each second: they are logged through ``pipeline.reports``, at most one
line of a kind every ``report_interval_s``, each with the count since the last line and,
for drops, the running count and a final line when records are taken again.

An actor of the service's one actor base (``pipeline.mailbox``): its task handles the
messages (frozen dataclasses) and, when no message waits, the next deadline (a flush due, a
log line due), whichever comes first. Only that task touches the buffer and the counts.
"""

import asyncio
import contextlib
import logging
import math
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.buffer import Dropped, Entry, HistoryBuffer, Outcome
from pipeline.config import HistoryConfig
from pipeline.mailbox import Actor, ActorStoppedError, Ask
from pipeline.records import HistoryRecord
from pipeline.reports import Drops, Tally, ThrottledLine
from pipeline.writer import HistoryWriter, WriteFailedError, WriteResult

logger = logging.getLogger(__name__)

REPORT_INTERVAL_S = 10.0
"""Most one line of each kind (refusals, drops, discards) is logged this often."""
_DRAIN_BACKOFF_S = 0.2
_NAMED = 10
"""Storages (and causes) named in a line, the busiest first; the rest are counted."""
_WHOLE_BUFFER = ""
"""The key of the one episode of a full buffer (those of a storage's share are its id)."""


@dataclass(frozen=True, slots=True)
class HistoryStats:
    buffered: int
    written: int
    retried: int
    lost: int
    """Dropped after ``retry-limit`` retries, or still unwritten when the shutdown ended."""
    dropped: int
    """Refused because the buffer was full."""
    dropped_at_share: int
    """Refused because their storage held its share of the buffer already."""
    discarded: int
    """Of deleted storages: refused by their index for good, or discarded at the deletion."""
    flushes: int


@dataclass(frozen=True, slots=True)
class _Record:
    records: tuple[HistoryRecord, ...]


@dataclass(frozen=True, slots=True)
class _Discard:
    """Drop the waiting records of a deleted storage: written, they would re-create its
    history index through the template."""

    storage_id: str


@dataclass(frozen=True, slots=True)
class _GetStats(Ask[HistoryStats]):
    pass


@dataclass(frozen=True, slots=True)
class _Drain(Ask[HistoryStats]):
    timeout_s: float


@dataclass(frozen=True, slots=True)
class _FlushDone:
    task: "asyncio.Task[WriteResult]" = field(repr=False)


_Message = _Record | _Discard | _GetStats | _Drain | _FlushDone


class HistoryActor(Actor[_Message]):
    def __init__(
        self,
        *,
        writer: HistoryWriter,
        config: HistoryConfig,
        shutdown_timeout_s: float = 10.0,
        report_interval_s: float = REPORT_INTERVAL_S,
    ) -> None:
        """``report_interval_s``: the least time between two log lines of a kind."""
        super().__init__(name="history")
        self._writer = writer
        self._config = config
        self._shutdown_timeout_s = shutdown_timeout_s
        self._buffer = HistoryBuffer(config, prefix=uuid.uuid4().hex[:12] + "-")
        self._flush: asyncio.Task[WriteResult] | None = None
        self._paused_until = 0.0
        self._written = self._retried = self._lost = self._flushes = 0
        self._dropped = self._dropped_at_share = self._discarded = 0
        self._report_interval_s = interval = report_interval_s
        self._refusals = ThrottledLine(interval, self._log_refusals)
        self._gone = ThrottledLine(interval, self._log_gone)
        self._full = Drops(interval, dropping=self._log_full, ended=self._log_full_ended)
        self._over_share = Drops(
            interval, dropping=self._log_over_share, ended=self._log_over_share_ended
        )

    # What the rest of the service calls -------------------------------------------------------

    def record(self, records: Sequence[HistoryRecord]) -> None:
        """Hands records over for writing; never waits, never raises into a storage request."""
        if not self.accepting:
            logger.error(
                "history: actor not running; %d records lost (storages: %s; requests: %s)",
                len(records),
                _storages(records),
                _requests(records),
            )
            return
        self.send(_Record(tuple(records)))

    def discard(self, storage_id: str) -> None:
        """The lifecycle actor calls it when it deletes a storage."""
        if self.accepting:  # stopped: the shutdown drain already wrote or lost what it held
            self.send(_Discard(storage_id))

    async def stats(self) -> HistoryStats:
        return await self.ask(_GetStats())

    async def stop(self, timeout_s: float | None = None) -> None:
        """Writes what is buffered (within the shutdown bound), then ends the loop."""
        if not self.running:
            return
        bound = self._shutdown_timeout_s if timeout_s is None else timeout_s
        drained = self.ask_in_turn(_Drain(bound))
        self.close_mailbox()  # from now on, records are lost (and logged), not queued
        with contextlib.suppress(ActorStoppedError):
            await drained
        await super().stop(bound)

    # The loop's timers and messages -----------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._wake_at(asyncio.get_running_loop().time())

    async def on_deadline(self) -> None:
        await self.after_messages()

    async def after_messages(self) -> None:
        """A flush that is due starts; log lines due are written, drop episodes that are over
        end (a settled flush may have made room)."""
        now = asyncio.get_running_loop().time()
        self._maybe_flush(now)
        self._report(now)

    def on_end(self) -> None:
        if self._flush is not None:
            self._flush.cancel()

    def _wake_at(self, now: float) -> float | None:
        """When the loop must act without a message: the next flush (none while one is in
        flight: its end comes as a message) or the next log line due, whichever is first."""
        times = [
            at
            for at in (
                self._refusals.due_at(),
                self._gone.due_at(),
                self._full.due_at(now),
                self._over_share.due_at(now),
            )
            if at is not None
        ]
        if self._flush is None:
            due = now if self._buffer.full else self._buffer.next_due()
            if due is not None:
                times.append(max(due, self._paused_until))
        return min(times) if times else None

    def _report(self, now: float) -> None:
        """Writes the log lines that are due, and ends the drop episodes that are over."""
        share = self._config.buffer_share_per_storage
        self._refusals.tick(now)
        self._gone.tick(now)
        self._full.tick(now, lambda _: len(self._buffer) < self._config.buffer_size)
        self._over_share.tick(now, lambda storage_id: self._buffer.held(storage_id) < share)

    async def handle(self, message: _Message) -> HistoryStats | None:
        loop = asyncio.get_running_loop()
        match message:
            case _Record(records):
                now = loop.time()
                dropped = self._buffer.add(records, now)
                if dropped:
                    self._overflow(dropped, now)
            case _FlushDone(task):
                if task is self._flush:
                    self._flush = None
                    self._settle(task, loop.time())
            case _GetStats():
                return self._stats()
            case _Drain(timeout_s):
                await self._drain(timeout_s)
                return self._stats()
            case _Discard(storage_id):
                if discarded := self._buffer.discard(storage_id):
                    self._discarded += discarded
                    logger.info(
                        "history: %d records of deleted storage %s discarded", discarded, storage_id
                    )
        return None

    def _maybe_flush(self, now: float) -> None:
        if self._flush is not None or now < self._paused_until or not self._buffer.ready(now):
            return
        self._start_flush(self._buffer.take(now))

    def _start_flush(self, batch: list[Entry]) -> None:
        self._flushes += 1
        self._flush = asyncio.create_task(self._write(batch), name="history-flush")
        self._flush.add_done_callback(self._report_flush)

    async def _write(self, batch: list[Entry]) -> WriteResult:
        return await self._writer.write([(entry.id, entry.record) for entry in batch])

    def _report_flush(self, task: "asyncio.Task[WriteResult]") -> None:
        if self.accepting:  # else the shutdown drain waits for the flush itself
            self.send(_FlushDone(task))

    def _settle(self, task: "asyncio.Task[WriteResult]", now: float) -> None:
        """Books the outcome of the batch in flight: written, to retry, lost, or gone."""
        if task.cancelled():
            outcome = self._buffer.fail_in_flight(now)
        elif (error := task.exception()) is not None:
            self._paused_until = now + self._config.flush_timeout_s
            records = [entry.record for entry in self._buffer.in_flight]
            logger.warning(
                "history: writing %d records failed (%s); retrying in %g s (requests: %s)",
                len(records),
                _describe(error),
                self._config.flush_timeout_s,
                _requests(records),
            )
            outcome = self._buffer.fail_in_flight(now)
        else:
            result = task.result()
            in_flight = self._buffer.in_flight
            if result.retry and len(result.retry) + len(result.gone) >= len(in_flight):
                # Every record refused (a read-only index, a full disk): as good as a failed
                # request. Sending the next batch at once would only be refused again.
                self._paused_until = now + self._config.flush_timeout_s
            if result.retry:
                refused = Counter(e.record.storage_id for e in in_flight if e.id in result.retry)
                self._refusals.add(now, refused, result.causes)
            outcome = self._buffer.settle(result, now)
        self._book(outcome, now)

    def _book(self, outcome: Outcome, now: float) -> None:
        self._written += outcome.written
        self._retried += outcome.retried
        if outcome.gone:
            self._discarded += len(outcome.gone)
            self._gone.add(now, Counter(entry.record.storage_id for entry in outcome.gone))
        if outcome.lost:
            limit = self._config.retry_limit
            self._lose(
                outcome.lost, f"after {limit + 1} attempts (1 + retry-limit {limit} retries)"
            )

    def _overflow(self, dropped: Dropped, now: float) -> None:
        if dropped.over_share:
            self._dropped_at_share += len(dropped.over_share)
            by_storage = Counter(record.storage_id for record in dropped.over_share)
            for storage_id, count in by_storage.items():
                self._over_share.add(storage_id, {storage_id: count}, now)
        if dropped.buffer_full:
            self._dropped += len(dropped.buffer_full)
            by_storage = Counter(record.storage_id for record in dropped.buffer_full)
            self._full.add(_WHOLE_BUFFER, by_storage, now)

    # The log lines of pipeline.reports ---------------------------------------------------------

    def _log_refusals(self, told: Tally) -> None:
        logger.warning(
            "history: Elasticsearch refused %d records (%s); they go again, %g s apart, up to "
            "retry-limit %d retries (storages: %s; at most one such line every %g s)",
            told.records,
            _causes(told.causes),
            self._config.flush_timeout_s,
            self._config.retry_limit,
            _counts(told.storages),
            self._report_interval_s,
        )

    def _log_gone(self, told: Tally) -> None:
        logger.info(
            "history: %d records of deleted storages discarded, their history indices refuse "
            "writes (storages: %s)",
            told.records,
            _counts(told.storages),
        )

    def _log_full(self, told: Tally, running: Mapping[str, int]) -> None:
        logger.error(
            "history: buffer full (%d records waiting, Elasticsearch is not taking them); "
            "dropping new records, %d so far, %d since the last line (storages: %s)",
            len(self._buffer),
            running.get(_WHOLE_BUFFER, 0),
            told.records,
            _counts(told.storages),
        )

    def _log_full_ended(self, _: str, total: int, storages: Counter[str]) -> None:
        logger.warning(
            "history: buffer taking records again; %d were dropped while it was full "
            "(storages: %s)",
            total,
            _counts(storages),
        )

    def _log_over_share(self, told: Tally, running: Mapping[str, int]) -> None:
        named = [storage_id for storage_id, _ in told.storages.most_common(_NAMED)]
        logger.error(
            "history: %s at %s share of the buffer (%d records); dropping %s new records: %s",
            "storage" if len(told.storages) == 1 else "storages",
            "its" if len(told.storages) == 1 else "their",
            self._config.buffer_share_per_storage,
            "its" if len(told.storages) == 1 else "their",
            ", ".join(
                f"{storage_id} {running.get(storage_id, 0)} so far, "
                f"{told.storages[storage_id]} since the last line"
                for storage_id in named
            )
            + _more(len(told.storages) - len(named)),
        )

    def _log_over_share_ended(self, storage_id: str, total: int, _: Counter[str]) -> None:
        logger.warning(
            "history: storage %s below its share of the buffer again; %d of its records were "
            "dropped while it was at its share",
            storage_id,
            total,
        )

    def _lose(self, entries: Sequence[Entry], why: str) -> None:
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
        """Writes everything held, retries included and pauses ignored, within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        written_before, lost_before = self._written, self._lost
        while len(self._buffer) and loop.time() < deadline:
            if self._flush is None:
                self._start_flush(self._buffer.take(loop.time(), everything_due=True))
            task = self._flush
            assert task is not None
            with contextlib.suppress(Exception):  # settled below: the batch goes again
                await asyncio.wait_for(asyncio.shield(task), deadline - loop.time())
            if not task.done():
                break  # the deadline passed while Elasticsearch still had the batch
            self._flush = None
            retried_before = self._retried
            self._settle(task, loop.time())
            if self._retried > retried_before:  # not back to back: retry-limit is not a burst
                await asyncio.sleep(min(_DRAIN_BACKOFF_S, max(0.0, deadline - loop.time())))
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if unwritten := self._buffer.empty_out():
            self._lose(unwritten, f"at shutdown, not written within {timeout_s:g} s")
        self._report(math.inf)  # every count untold so far, and the end of every episode
        logger.info(
            "history: shutdown flush wrote %d records, %d could not be written",
            self._written - written_before,
            self._lost - lost_before,
        )

    def _stats(self) -> HistoryStats:
        return HistoryStats(
            buffered=len(self._buffer),
            written=self._written,
            retried=self._retried,
            lost=self._lost,
            dropped=self._dropped,
            dropped_at_share=self._dropped_at_share,
            discarded=self._discarded,
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


def _counts(counts: Counter[str]) -> str:
    """Records by storage, ``a 300, b 40 and 3 more``: the busiest first."""
    named = counts.most_common(_NAMED)
    text = ", ".join(f"{name} {count}" for name, count in named) or "none"
    return text + _more(len(counts) - len(named))


def _causes(counts: Counter[str]) -> str:
    """Records by cause, ``cluster_block_exception (403): ...: 300 records; ...``."""
    named = counts.most_common(_NAMED)
    text = "; ".join(f"{cause}: {count} records" for cause, count in named) or "no cause given"
    return text + _more(len(counts) - len(named))


def _more(count: int) -> str:
    return f" and {count} more" if count > 0 else ""


def _describe(error: BaseException) -> str:
    return str(error) if isinstance(error, WriteFailedError) else repr(error)
