"""Repeated refusals, aggregated: the first few per address and reason in each interval are
reported one by one, the rest counted and reported as one summary when the interval ends.

A flood of refused CONNECTs (10,852 in 15 s) wrote a log line and an auth-event row for each:
680 MB of log. Per key (client address, reason) and interval, ``RepeatCounter`` lets the first
``repeats`` through and counts the others; ``due`` hands over the counts of the intervals that
have ended. The keys are bounded: past ``max_keys`` addresses in one interval, the others share
one key (address ``*``). No I/O and no clock of its own: the caller passes the time.

``SummaryTimer`` hands the summaries over when their interval ends, on the running event
loop, whether or not another line of that kind comes: a device that stops repeating itself
still gets its count written, and its key is forgotten then (a key that had nothing counted
too), so the keys held are those of the last interval, ``max_keys`` at most.

``LogLimiter`` puts one in front of a logger, for warnings a client's traffic can repeat at
its own rate (a queue overflowing, frames refused): one line per key and interval, then a
count of the rest. ``LimitedLoggers`` gives one per module logger, for the lines an
authenticated device can repeat by connecting again and again (each costs it a TLS handshake:
take-overs, keep-alive expiries, kicks), keyed by the device.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

OTHERS: Final = "*"  # the address of the key shared once too many addresses were seen


@dataclass
class _Window:
    started: float
    reported: int = 0
    suppressed: int = 0


@dataclass(frozen=True)
class Summary:
    """Refusals not reported one by one: ``count`` for ``address`` and ``reason``."""

    address: str
    reason: str
    count: int
    seconds: float


class RepeatCounter:
    def __init__(self, *, repeats: int, interval: float, max_keys: int = 10_000) -> None:
        self._repeats = repeats
        self._interval = interval
        self._max_keys = max_keys
        self._windows: dict[tuple[str, str], _Window] = {}

    def report(self, address: str, reason: str, now: float) -> bool:
        """Whether this refusal is reported one by one (else it is counted for a summary)."""
        key = (address, reason)
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self._max_keys:
                key = (OTHERS, reason)
                window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window(now)
        if window.reported < self._repeats and key[0] != OTHERS:
            window.reported += 1
            return True
        window.suppressed += 1
        return False

    def due(self, now: float) -> list[Summary]:
        """The summaries of the intervals that have ended; those keys start afresh."""
        summaries = []
        for key, window in list(self._windows.items()):
            if now - window.started < self._interval:
                continue
            del self._windows[key]
            if window.suppressed:
                summaries.append(Summary(*key, window.suppressed, self._interval))
        return summaries

    def next_due(self) -> float | None:
        """When the first interval held ends (None: nothing held)."""
        started = min((window.started for window in self._windows.values()), default=None)
        return None if started is None else started + self._interval

    def pending(self) -> bool:
        """Whether some refusals wait for a summary."""
        return any(window.suppressed for window in self._windows.values())

    def __len__(self) -> int:
        return len(self._windows)


class SummaryTimer:
    """Hands ``counter``'s summaries to ``report`` as their intervals end, on the running
    loop; armed by ``arm`` after each count (without a running loop it is not, and the
    summaries wait for the next ``due``). ``clock`` is the counter's time."""

    def __init__(
        self, counter: RepeatCounter, report: Callable[[Summary], None], clock: Callable[[], float]
    ) -> None:
        self._counter = counter
        self._report = report
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's

    def arm(self) -> None:
        """Make sure a timer runs for the first interval held (one timer, not one a key)."""
        if self._timer is not None and self._loop is not None and not self._loop.is_closed():
            return  # armed on a loop that still runs (a loop closed under it never fires)
        due = self._counter.next_due()
        if due is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        # A floor: the loop may fire a timer up to its clock's resolution early.
        self._loop = loop
        self._timer = loop.call_later(max(due - self._clock(), 0.001), self._fire)

    def _fire(self) -> None:
        self._timer = None
        for summary in self._counter.due(self._clock()):
            self._report(summary)
        self.arm()

    def flush(self) -> None:
        """Hand over every count held now (the process stops), and stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for summary in self._counter.due(float("inf")):
            self._report(summary)


class LogLimiter:
    """Lines through ``log``: the first ``repeats`` per ``key`` and ``interval`` seconds as
    written, the others counted and logged as one summary line (``what``: what they were)
    when their interval ends (``SummaryTimer``; without an event loop, with the next line
    after it). Keys are bounded as ``RepeatCounter``'s."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        interval: float = 60.0,
        repeats: int = 1,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._clock = clock
        self._counter = RepeatCounter(repeats=repeats, interval=interval, max_keys=max_keys)
        self._timer = SummaryTimer(self._counter, self._summarise, clock)
        # The level of each kind's summary: its lines'. Kinds are the callers' constants.
        self._levels: dict[str, int] = {}
        self._summed_at = 0.0

    def warning(self, key: str, what: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, key, what, message, *args)

    def info(self, key: str, what: str, message: str, *args: object) -> None:
        self.log(logging.INFO, key, what, message, *args)

    def log(self, level: int, key: str, what: str, message: str, *args: object) -> None:
        now = self._clock()
        self._levels[what] = level
        if now >= self._summed_at + 1.0:  # not a walk of every key per line
            self._summed_at = now
            for summary in self._counter.due(now):
                self._summarise(summary)
        if self._counter.report(key, what, now):
            self._log.log(level, message, *args)
        self._timer.arm()

    def _summarise(self, summary: Summary) -> None:
        self._log.log(self._levels.get(summary.reason, logging.WARNING),
                      "%s: %d more %s in %.0f s", summary.address, summary.count,
                      summary.reason, summary.seconds)  # fmt: skip

    def flush(self) -> None:
        """Write the counts held now (the broker stops)."""
        self._timer.flush()

    def __len__(self) -> int:
        """Keys held (devices, hosts, sessions)."""
        return len(self._counter)


class LimitedLoggers:
    """A ``LogLimiter`` for each logger asked for, all with one interval and repeats; the
    loggers are the modules' own, a handful, so they need no bound of their own."""

    def __init__(self, *, interval: float, repeats: int) -> None:
        self._interval = interval
        self._repeats = repeats
        self._limiters: dict[str, LogLimiter] = {}

    def __call__(self, log: logging.Logger) -> LogLimiter:
        limiter = self._limiters.get(log.name)
        if limiter is None:
            limiter = self._limiters[log.name] = LogLimiter(
                log, interval=self._interval, repeats=self._repeats
            )
        return limiter

    def flush(self) -> None:
        for limiter in self._limiters.values():
            limiter.flush()
