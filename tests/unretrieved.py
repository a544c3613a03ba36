"""Futures whose exception nobody retrieved, as the event loop reports them.

A future that failed and is garbage before anyone asked for its exception is logged by the
loop's exception handler as "Future exception was never retrieved" when it is collected;
``gc.collect`` at the end of the block makes that happen there and then.
"""

import asyncio
import contextlib
import gc
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def never_retrieved() -> Iterator[list[str]]:
    """The list of such reports for the futures that are garbage at the end of the block
    (so the block should keep none in its own variables); filled in as the block ends."""
    loop = asyncio.get_running_loop()
    reports: list[str] = []
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "never retrieved" in message:
            reports.append(f"{message}: {context.get('exception')!r}")
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    try:
        yield reports
    finally:
        gc.collect()
        loop.set_exception_handler(previous)
