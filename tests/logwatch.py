"""A test's own ``logging.Handler`` on some of the product's loggers for a while: how tests
wait for what the broker logs in their process (a session's expiry, a purge, a pause) instead
of polling for its effect."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty, Queue
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


class Lines(logging.Handler):
    """Log messages as they come, to wait on (from any thread: a ``BrokerThread``'s too)."""

    def __init__(self, wait: float) -> None:
        super().__init__(logging.DEBUG)
        self.wait = wait
        self.lines: Queue[str] = Queue()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.put(record.getMessage())

    def saw(self, fragment: str) -> bool:
        """Whether a line with ``fragment`` comes within ``wait`` of the previous one."""
        try:
            while fragment not in self.lines.get(timeout=self.wait):
                pass
        except Empty:
            return False
        return True

    def next_of(self, *fragments: str) -> str | None:
        """The first line to come (within ``wait`` of the previous one) with one of
        ``fragments``, or None."""
        try:
            while True:
                line = self.lines.get(timeout=self.wait)
                if any(fragment in line for fragment in fragments):
                    return line
        except Empty:
            return None


@contextmanager
def watching(wait: float, *names: str) -> Iterator[Lines]:
    """``Lines`` of the loggers ``names``, from DEBUG on, meanwhile."""
    with attached(Lines(wait), *names, level=logging.DEBUG) as handler:
        yield handler
