"""A test's own ``logging.Handler`` on some of the product's loggers for a while: how tests
wait for what the broker logs in their process (a session's expiry, a purge, a pause) instead
of polling for its effect."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

H = TypeVar("H", bound=logging.Handler)


@contextmanager
def attached(handler: H, *names: str, level: int = logging.INFO) -> Iterator[H]:
    """``handler`` on the loggers ``names``, which log from ``level`` on meanwhile."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
    try:
        yield handler
    finally:
        for logger, before in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(before)
