"""Carries out what a ``Batcher`` hands out: each batch as one request, in a task of its own,
and each operation of it answered with its own outcome.

The storage actor (``_mget`` and ``_bulk``), the key listing actor (``_msearch``) and the
cache (the registry's ``_mget``) batch the same way; only the request differs: each gives the
Elasticsearch layer's function that sends a batch of a kind (``senders``), which the runner
calls itself, so a batch goes from here to the Elasticsearch layer and no actor code runs in
between. The runner is part of its actor's state: it is touched only by that actor's code, on
the event loop.

Requests of many tenants share a batch, never their fate: a batch that Elasticsearch refuses
as a whole for what it holds (a 400 or 413 for the request, not for an item; say a condition
it cannot take) is split in halves, sent one after the other (the first half holds the earlier
operations, so writes of a key keep their order), and so on until the operation at fault is
alone: only it fails. Such a refusal comes before Elasticsearch carries out any action, so
sending the parts again writes nothing twice.
"""

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from kv_storage.actors.batching import Batch, Batcher, Kind, Pending
from kv_storage.config import BatchLimits
from kv_storage.errors import TooManyRequestsError
from kv_storage.es.errors import refused_for_its_content
from kv_storage.es.waits import waiting
from kv_storage.model import KeyId
from pipeline.mailbox import ActorStoppedError

PartT = TypeVar("PartT")
OutcomeT = TypeVar("OutcomeT")


@dataclass(eq=False, slots=True)
class _Work(Generic[PartT, OutcomeT]):
    """An operation's encoded part of a batch, and where its outcome goes."""

    part: PartT
    outcome: "asyncio.Future[OutcomeT]"


class BatchRunner(Generic[PartT, OutcomeT]):
    def __init__(
        self,
        limits: BatchLimits,
        senders: Mapping[Kind, Callable[[list[PartT]], Awaitable[Sequence[OutcomeT]]]],
        *,
        name: str,
    ) -> None:
        """``senders``: for each kind of batch, what makes one request of a batch's parts and
        answers one outcome per part, in order; if it raises, every operation of the batch
        fails with that error."""
        self._batcher = Batcher[_Work[PartT, OutcomeT]](limits)
        self._limits = limits
        self.refused = 0
        """Operations refused for their storage's share (counted in ``/metrics``)."""
        self._senders = dict(senders)
        self._name = name
        self._batches: set[asyncio.Task[None]] = set()

    async def submit(
        self,
        kind: Kind,
        storage_id: str,
        keys: frozenset[KeyId],
        part: PartT,
        *,
        size: int,
        weight: int | None = None,
    ) -> OutcomeT:
        """Waits for the outcome of ``part`` among a batch; counted, in the request's context,
        as a request to Elasticsearch in flight meanwhile (what a timed-out answer names).

        A storage that has its share of keys waiting or in flight already
        (``max_keys_per_storage``) is answered 429 at once: one storage's load may fill the
        batches only so far, so that the others' operations still find room."""
        outcome: asyncio.Future[OutcomeT] = asyncio.get_running_loop().create_future()
        pending = Pending(kind, storage_id, keys, size, _Work(part, outcome), weight)
        held = self._batcher.held_by(storage_id)
        if held and held + pending.counted > self._limits.max_keys_per_storage:
            self.refused += 1
            raise TooManyRequestsError(
                f"storage {storage_id} has {held} keys waiting for Elasticsearch on this "
                f"instance, its share (elasticsearch.batch.max-keys-per-storage is "
                f"{self._limits.max_keys_per_storage}); try again shortly"
            )
        self._batcher.add(pending)
        self._send_batches()
        with waiting():
            return await outcome

    async def drain(self, deadline: float) -> None:
        """Batches still out are answered until ``deadline`` (loop time), then cancelled,
        which fails their operations."""
        loop = asyncio.get_running_loop()
        while self._batches and loop.time() < deadline:
            await asyncio.wait(set(self._batches), timeout=deadline - loop.time())
        for batch in list(self._batches):
            batch.cancel()

    def _send_batches(self) -> None:
        for batch in self._batcher.take():
            # A context of its own: a batch works for many requests, none of whose ids or
            # counts of requests in flight are its own.
            task = asyncio.create_task(self._carry(batch), context=contextvars.Context())
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _carry(self, batch: Batch[_Work[PartT, OutcomeT]]) -> None:
        works = [pending.payload for pending in batch.operations]
        try:
            await self._settle(batch.kind, works)
        except BaseException as error:
            for work in works:
                if not work.outcome.done():
                    work.outcome.set_exception(ActorStoppedError(f"{self._name}: {error!r}"))
            raise
        finally:
            self._batcher.done(batch)
            self._send_batches()

    async def _settle(self, kind: Kind, works: list[_Work[PartT, OutcomeT]]) -> None:
        """Sends ``works`` as one request and hands each its outcome; a refusal of the whole
        request for its content is narrowed down by halves to the operations that caused it."""
        try:
            outcomes = await self._senders[kind]([work.part for work in works])
        except Exception as error:
            if len(works) > 1 and refused_for_its_content(error):
                middle = len(works) // 2
                await self._settle(kind, works[:middle])
                await self._settle(kind, works[middle:])
                return
            for work in works:  # the request as a whole: every operation in it fails
                if not work.outcome.done():
                    work.outcome.set_exception(error)
            return
        for work, outcome in zip(works, outcomes, strict=True):
            if not work.outcome.done():
                work.outcome.set_result(outcome)
