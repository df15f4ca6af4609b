"""The actor base of the whole service: one asyncio task, one mailbox, typed messages, an
orderly stop. It lives in ``pipeline`` so that the history actor uses it without importing
the rest of the service; the service's actors (``kv_storage.actors``) use the same one.

Callers ``send`` a message (fire and forget) or ``ask`` and await the reply, whose type the
message declares (``Ask[answer type]``). Whatever ends the actor's task, an orderly stop or a
crash, every caller still waiting for a reply is failed rather than left hanging.

Timers: an actor that has work due without a message says when (``next_deadline``); the loop
runs ``on_deadline`` then, once no message is waiting. Messages already waiting are handled
first, one after the other, before the timers are looked at again: they often come together
(the history records of one batch of storage operations), and each need not set up a timer;
``after_messages`` then runs once for all of them.

An actor may answer some messages at once (``answer_at_once``): its code then runs in the
caller's task, without the mailbox and the task per message, which on a hot path cost more
than the work itself. Its state is still touched only by its own code, on the event loop.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

logger = logging.getLogger(__name__)

MessageT = TypeVar("MessageT")
AnswerT = TypeVar("AnswerT", covariant=True)


class Ask(Generic[AnswerT]):
    """A message that is answered; its parameter is the answer's type. ``await
    actor.ask(message)`` has that type, so a caller that expects another one fails type
    checking instead of misreading the answer at run time."""

    __slots__ = ()


class ActorStoppedError(RuntimeError):
    """The actor is not running (never started, stopped, or crashed)."""


@dataclass(slots=True)
class _Envelope(Generic[MessageT]):
    message: MessageT
    reply: "asyncio.Future[Any] | None" = field(default=None)


class _Stop:
    """Put last in the mailbox: everything sent before it is handled first."""


class Actor(Generic[MessageT]):
    """Subclasses implement ``handle``; its result is the reply to ``ask``. Messages are
    handled one at a time, in the order they came: the mailbox serialises the actor's state.
    Work that needs no serialising (waiting for Elasticsearch, say) is no message: the actor
    answers it at once, as a plain call (``answer_at_once``), and says why."""

    def __init__(self, *, name: str) -> None:
        self.name = name
        self._mailbox: asyncio.Queue[_Envelope[MessageT] | _Stop] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._accepting = False

    async def handle(self, message: MessageT) -> Any:
        raise NotImplementedError

    def answer_at_once(self, message: Ask[AnswerT]) -> Awaitable[AnswerT] | None:
        """The answer to ``message``, to be awaited by the caller in its own task; ``None``:
        the message goes through the mailbox. Only for messages whose handling touches the
        actor's state without awaiting in between (then awaits I/O, or ``ask_in_turn``)."""
        return None

    def next_deadline(self) -> float | None:
        """Loop time at which ``on_deadline`` must run if no message comes first (timers)."""
        return None

    async def on_deadline(self) -> None:
        """Called in the actor's task when ``next_deadline`` has passed."""

    async def after_messages(self) -> None:
        """Called in the actor's task once a message and those waiting behind it were handled
        (an actor that handles one message at a time): work that follows from a run of messages
        rather than from each."""

    def on_end(self) -> None:
        """Called when the actor's task ends, however it ends: release what the actor holds
        (a task of its own still out, say)."""

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def accepting(self) -> bool:
        """Whether messages are taken: running, and no stop has begun."""
        return self._accepting and self.running

    def close_mailbox(self) -> None:
        """Takes no more messages; those in the mailbox are still handled. The first step of
        a stop, for an actor whose stop has work of its own to do first."""
        self._accepting = False

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"actor {self.name} was started already")
        self._accepting = True
        self._task = asyncio.create_task(self._mailbox_loop(), name=f"actor:{self.name}")
        self._task.add_done_callback(self._on_done)

    def send(self, message: MessageT) -> None:
        """Deliver without waiting for the outcome; failures are logged by the actor."""
        self._deliver(_Envelope(message))

    async def ask(self, message: Ask[AnswerT]) -> AnswerT:
        """Deliver and wait for ``handle``'s result (or its exception)."""
        if not self._accepting or not self.running:
            raise ActorStoppedError(f"actor {self.name} is not running")
        at_once = self.answer_at_once(message)
        if at_once is not None:
            return await at_once
        return await self.ask_in_turn(message)

    def ask_in_turn(self, message: Ask[AnswerT]) -> "asyncio.Future[AnswerT]":
        """``ask`` through the mailbox, whatever ``answer_at_once`` would say: the message is
        in the mailbox when this returns, and the reply comes in the future it returns."""
        reply: asyncio.Future[AnswerT] = asyncio.get_running_loop().create_future()
        self._deliver(_Envelope(cast(MessageT, message), reply))
        return reply

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Handle what is already in the mailbox, then end; cancel if that takes too long."""
        if self._task is None or self._task.done():
            return
        self._accepting = False
        self._mailbox.put_nowait(_Stop())
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            logger.warning("actor %s did not stop within %.1f s; cancelling", self.name, timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _deliver(self, envelope: _Envelope[MessageT]) -> None:
        if not self._accepting or not self.running:
            raise ActorStoppedError(f"actor {self.name} is not running")
        self._mailbox.put_nowait(envelope)

    async def _mailbox_loop(self) -> None:
        try:
            while True:
                deadline = self.next_deadline()
                if deadline is None:
                    envelope = await self._mailbox.get()
                else:
                    try:
                        async with asyncio.timeout_at(deadline):
                            envelope = await self._mailbox.get()
                    except TimeoutError:
                        await self.on_deadline()
                        continue
                if isinstance(envelope, _Stop):
                    break
                await self._process(envelope)
                if await self._process_waiting():
                    break
                await self.after_messages()
        finally:
            self.on_end()

    async def _process_waiting(self) -> bool:
        """Handles the messages waiting now, in turn; whether a stop was among them."""
        for _ in range(self._mailbox.qsize()):
            envelope = self._mailbox.get_nowait()
            if isinstance(envelope, _Stop):
                return True
            await self._process(envelope)
        return False

    async def _process(self, envelope: _Envelope[MessageT]) -> None:
        reply = envelope.reply
        try:
            result = await self.handle(envelope.message)
        except Exception as error:
            if reply is None:
                logger.exception("actor %s failed to handle %r", self.name, envelope.message)
            elif not reply.done():
                reply.set_exception(error)
            return
        except BaseException as error:
            # Cancellation or a fatal error ends the actor; the caller must not hang.
            if reply is not None and not reply.done():
                reply.set_exception(ActorStoppedError(f"actor {self.name} stopped: {error!r}"))
            raise
        if reply is not None and not reply.done():
            reply.set_result(result)

    def _on_done(self, task: "asyncio.Task[None]") -> None:
        self._accepting = False
        cause = "stopped"
        if task.cancelled():
            cause = "was cancelled"
        elif task.exception() is not None:
            cause = f"crashed: {task.exception()!r}"
            logger.error("actor %s crashed", self.name, exc_info=task.exception())
        while not self._mailbox.empty():
            envelope = self._mailbox.get_nowait()
            if isinstance(envelope, _Envelope) and envelope.reply and not envelope.reply.done():
                envelope.reply.set_exception(ActorStoppedError(f"actor {self.name} {cause}"))
