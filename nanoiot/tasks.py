"""Stopping a background task: cancel it, then wait until it has finished.

Cancelling only asks: the task runs until its next ``await`` and then through its cleanup, so
whatever it holds (a store session, a socket, a timer) is released only once it has finished.
The broker's background loops and the admin API's read-ahead tasks stop this way.

Python 3.11's ``asyncio.wait_for`` can lose a cancellation: cancelled just as what it waits
for completed, it returns the result, and the task that was cancelled goes on (CPython
gh-86296; 3.12 rebuilt it on ``asyncio.timeout``, which cannot). nats-py waits that way
inside its calls (``Subscription.next_msg``, every request), so a loop of NATS calls stopped
at the wrong moment would run on until its own end: ``cancellable`` raises the cancellation
such a call swallowed. The project's own code waits with ``asyncio.timeout``.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

_T = TypeVar("_T")


async def cancel_and_wait(task: "asyncio.Task[Any]") -> None:
    """Cancel ``task`` and wait for its end; an error it ends with (but its cancellation)
    is raised here. The caller cancelled meanwhile is cancelled: the ``CancelledError``
    that ``task``'s end brings is its own then, not only the task's."""
    current = asyncio.current_task()
    before = 0 if current is None else current.cancelling()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if current is not None and current.cancelling() > before:
        raise asyncio.CancelledError


async def cancellable(
    awaitable: Awaitable[_T], undo: Callable[[_T], Awaitable[object]] | None = None
) -> _T:
    """``await awaitable``; a cancellation of the calling task that it swallowed (it
    returned although the task was cancelled meanwhile) is raised once it returned, after
    ``undo(result)`` if given (what it opened, closed: nobody else has it)."""
    task = asyncio.current_task()
    before = 0 if task is None else task.cancelling()
    result = await awaitable
    if task is not None and task.cancelling() > before:
        if undo is not None:
            await undo(result)
        raise asyncio.CancelledError
    return result


def cancel_requested() -> bool:
    """Whether the current task was asked to cancel, also if that request was lost in a
    call that swallowed it: for a task's own loop, which ends then (a task that catches a
    cancellation to go on must not use it)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_all_and_wait(tasks: "Iterable[asyncio.Task[Any]]") -> None:
    """``cancel_and_wait`` for each of ``tasks``, every one cancelled first: a caller
    cancelled while it waits for one leaves none of the others uncancelled."""
    tasks = list(tasks)  # a set the tasks' ends discard themselves from may change meanwhile
    for task in tasks:
        task.cancel()
    for task in tasks:
        await cancel_and_wait(task)
