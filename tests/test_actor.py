"""The actor base: replies, orderly stop, and callers never left hanging when an actor dies."""

import asyncio
from dataclasses import dataclass

import pytest

from pipeline.mailbox import Actor, ActorStoppedError, Ask


@dataclass(frozen=True)
class Add(Ask[int]):
    amount: int


@dataclass(frozen=True)
class Block(Ask[int]):
    """Handled only once ``release`` is set."""

    release: asyncio.Event


@dataclass(frozen=True)
class Fail(Ask[int]):
    error: BaseException


class Counter(Actor[Add | Block | Fail]):
    def __init__(self) -> None:
        super().__init__(name="counter")
        self.total = 0
        self.entered = asyncio.Event()

    async def handle(self, message: Add | Block | Fail) -> int:
        if isinstance(message, Block):
            self.entered.set()
            await message.release.wait()
        elif isinstance(message, Fail):
            raise message.error
        else:
            self.total += message.amount
        return self.total


class Fatal(BaseException):
    """An error the actor cannot survive (BaseException, not Exception)."""


async def test_ask_returns_the_reply_in_mailbox_order() -> None:
    actor = Counter()
    actor.start()
    actor.send(Add(1))
    assert await actor.ask(Add(2)) == 3
    await actor.stop()


async def test_an_error_while_handling_goes_to_the_caller_and_the_actor_goes_on() -> None:
    actor = Counter()
    actor.start()
    with pytest.raises(ValueError, match="bad message"):
        await actor.ask(Fail(ValueError("bad message")))
    assert await actor.ask(Add(5)) == 5
    await actor.stop()


async def test_orderly_stop_handles_what_was_sent_before_it() -> None:
    actor = Counter()
    actor.start()
    for _ in range(100):
        actor.send(Add(1))
    await actor.stop()
    assert actor.total == 100
    assert not actor.running
    with pytest.raises(ActorStoppedError):
        actor.send(Add(1))


async def test_a_crashing_actor_fails_every_waiting_caller() -> None:
    actor = Counter()
    actor.start()
    release = asyncio.Event()
    blocked = asyncio.create_task(actor.ask(Block(release)))
    await actor.entered.wait()
    crash = asyncio.create_task(actor.ask(Fail(Fatal("boom"))))
    waiting = [asyncio.create_task(actor.ask(Add(1))) for _ in range(3)]
    release.set()
    async with asyncio.timeout(5):
        assert await blocked == 0
        with pytest.raises(ActorStoppedError, match="boom"):
            await crash
        for caller in waiting:
            with pytest.raises(ActorStoppedError, match="crashed"):
                await caller
    assert not actor.running
    with pytest.raises(ActorStoppedError):
        await actor.ask(Add(1))


async def test_a_cancelled_actor_fails_its_callers() -> None:
    actor = Counter()
    actor.start()
    release = asyncio.Event()
    blocked = asyncio.create_task(actor.ask(Block(release)))
    queued = asyncio.create_task(actor.ask(Add(1)))
    await actor.entered.wait()
    assert actor._task is not None
    actor._task.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(ActorStoppedError):
            await blocked
        with pytest.raises(ActorStoppedError):
            await queued


async def test_stop_cancels_an_actor_that_does_not_finish_in_time() -> None:
    actor = Counter()
    actor.start()
    stuck = asyncio.create_task(actor.ask(Block(asyncio.Event())))
    await actor.entered.wait()
    async with asyncio.timeout(5):
        await actor.stop(timeout_s=0.05)
        with pytest.raises(ActorStoppedError):
            await stuck
    assert not actor.running


async def test_starting_twice_is_an_error() -> None:
    actor = Counter()
    actor.start()
    with pytest.raises(RuntimeError):
        actor.start()
    await actor.stop()


async def test_sending_to_an_actor_never_started_fails() -> None:
    with pytest.raises(ActorStoppedError):
        Counter().send(Add(1))


class Timed(Counter):
    """An actor with a timer that is always due: what a history flush waiting is."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[int] = []
        """The total at each ``after_messages``."""
        self.deadlines = 0
        self.deadline_ran = asyncio.Event()

    def next_deadline(self) -> float | None:
        return asyncio.get_running_loop().time() - 1.0

    async def on_deadline(self) -> None:
        self.deadlines += 1
        self.deadline_ran.set()

    async def after_messages(self) -> None:
        self.runs.append(self.total)


async def test_messages_waiting_go_before_a_deadline_and_after_messages_runs_once_for_them() -> (
    None
):
    """The history actor gets the records of a batch of operations together: each must not
    wait for the timers, nor run the flush check of its own."""
    actor = Timed()
    actor.start()
    release = asyncio.Event()
    blocked = asyncio.create_task(actor.ask(Block(release)))
    await actor.entered.wait()
    for _ in range(50):  # they wait behind the blocked message, all at once
        actor.send(Add(1))
    release.set()
    async with asyncio.timeout(5):
        await blocked
        assert await actor.ask(Add(0)) == 50
        await actor.deadline_ran.wait()  # the overdue timer runs once nothing waits
    assert actor.runs[0] == 50  # one run for the blocked message and the 50 behind it
    await actor.stop()


async def test_close_mailbox_refuses_new_messages_and_handles_those_waiting() -> None:
    actor = Counter()
    actor.start()
    actor.send(Add(3))
    reply = actor.ask_in_turn(Add(4))  # in the mailbox once this returns
    actor.close_mailbox()
    assert not actor.accepting
    with pytest.raises(ActorStoppedError):
        actor.send(Add(1))
    async with asyncio.timeout(5):
        assert await reply == 7
    await actor.stop()
