"""Stopping a background task: cancel it, then wait until it has finished.

Cancelling only asks: the task runs until its next ``await`` and then through its cleanup, so
whatever it holds (a store session, a socket, a timer) is released only once it has finished.
The broker's background loops and the admin API's read-ahead tasks stop this way.
"""

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: "asyncio.Task[Any]") -> None:
    """Cancel ``task`` and wait for its end; an error it ends with (but its cancellation)
    is raised here."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
