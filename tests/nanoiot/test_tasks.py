"""``cancel_and_wait``: a cancelled task has finished its cleanup when the call returns."""

import asyncio

import pytest

from nanoiot.tasks import cancel_and_wait


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
