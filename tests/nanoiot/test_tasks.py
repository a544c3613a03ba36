"""``cancel_and_wait``: a cancelled task has finished its cleanup when the call returns."""

import asyncio

import pytest

from nanoiot.tasks import cancel_and_wait, cancel_requested, cancellable


async def test_returns_once_the_task_has_cleaned_up() -> None:
    released = asyncio.Event()

    async def holds_something() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            released.set()

    task = asyncio.create_task(holds_something())
    await asyncio.sleep(0)  # it is inside its try
    await cancel_and_wait(task)
    assert task.cancelled()
    assert released.is_set()


async def test_an_error_the_task_ends_with_is_raised() -> None:
    async def fails_on_the_way_out() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("cleanup failed")

    task = asyncio.create_task(fails_on_the_way_out())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(task)


async def test_a_task_already_done_is_left_as_it_ended() -> None:
    task = asyncio.create_task(asyncio.sleep(0, result=7))
    await task
    await cancel_and_wait(task)
    assert task.result() == 7


async def test_the_caller_cancelled_while_it_waits_is_cancelled() -> None:
    """The waiting caller's own cancellation is not taken for the task's and swallowed: a
    stop that is itself stopped (a deadline over it) ends there."""
    cleanup = asyncio.Event()

    async def slow_to_clean_up() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await cleanup.wait()

    task = asyncio.create_task(slow_to_clean_up())
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await cancel_and_wait(task)
    cleanup.set()
    await asyncio.gather(task, return_exceptions=True)


async def test_cancellable_raises_a_cancellation_the_awaited_swallowed() -> None:
    """What Python 3.11's ``asyncio.wait_for`` does when cancelled as its result came: the
    result returned, the cancellation gone; ``cancellable`` raises it."""
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiting = asyncio.Event()

    async def swallows() -> int:
        try:
            waiting.set()
            return await asyncio.shield(answer)
        except asyncio.CancelledError:
            return answer.result()  # came in the same turn

    async def reads() -> int:
        return await cancellable(swallows())

    task = asyncio.create_task(reads())
    await waiting.wait()
    answer.set_result(7)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_lost_earlier_is_still_requested() -> None:
    """A task's own loop stops on a cancellation that a call swallowed before it."""
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    turns: list[int] = []

    async def swallows() -> int:
        try:
            return await asyncio.shield(answer)
        except asyncio.CancelledError:
            return answer.result()

    async def loop() -> None:
        await swallows()  # the cancellation is lost here
        while not cancel_requested():
            turns.append(1)
            await asyncio.sleep(0)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    answer.set_result(7)
    task.cancel()
    await task
    assert turns == []
