"""What queueing a message costs in the protocol core (``Session.enqueue``), per message, and
what taking expired messages out at a bound costs (``broker.mqtt.queues``).

    .venv/bin/python -m bench.queue_bench                       # ~20 s
    PYTHONPATH=/path/to/other/checkout .venv/bin/python -m bench.queue_bench --no-record

A micro-benchmark of pure code on a clock passed in (no broker, no I/O): run it on two
checkouts in turn (``PYTHONPATH``) to compare them on one machine; a checkout whose
``enqueue`` takes no clock is measured without one. Each row is the best of ``--rounds``.
"""

import argparse
import asyncio
import datetime
import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench._report import machine_lines
from broker.mqtt.limits import Limits
from broker.mqtt.session import Outgoing, QueueTally, Session

QUEUE = 1000  # max_queued_messages' default
CLOCKED = "now" in inspect.signature(Session.enqueue).parameters
Row = tuple[str, Callable[[int], float]]


def _enqueue(session: Session, message: Outgoing, limits: Limits, now: float) -> None:
    if CLOCKED:
        session.enqueue(message, limits, now)
    else:
        session.enqueue(message, limits)


def _messages(count: int, expires: Callable[[int], float | None]) -> list[Outgoing]:
    return [Outgoing("t/1", b"x" * 64, 1, expires_at=expires(n)) for n in range(count)]


def _timed(session: Session, messages: list[Outgoing], limits: Limits, dt: float) -> float:
    """ns per message queued into ``session``, the clock moving ``dt`` a message."""
    now = 0.0
    started = time.perf_counter_ns()
    for message in messages:
        _enqueue(session, message, limits, now)
        now += dt
    return (time.perf_counter_ns() - started) / len(messages)


def _full(expires: Callable[[int], float | None]) -> Session:
    session = Session("s", persistent=True)
    for message in _messages(QUEUE, expires):
        session.restore(message)
    return session


def fits(count: int, expiry: float | None = None) -> float:
    """Below the bound: queued, then sent (the queue stays short)."""
    session, limits = Session("s", persistent=True), Limits()
    messages = _messages(count, lambda n: expiry)
    started = time.perf_counter_ns()
    for message in messages:
        _enqueue(session, message, limits, 0.0)
        session.next_to_send(20)
        session.inflight.clear()
    return (time.perf_counter_ns() - started) / count


def full_live(count: int, expiry: float | None = None) -> float:
    """At max_queued_messages, nothing expired: each message drops the oldest."""
    session = _full(lambda n: expiry)
    return _timed(session, _messages(count, lambda n: expiry), Limits(), 1e-6)


def full_expiring_in_order(count: int) -> float:
    """At the bound, the head expires as each message comes (one interval, in order)."""
    session = _full(lambda n: n + 1.0)
    return _timed(session, _messages(count, lambda n: QUEUE + n + 1.0), Limits(), 1.0)


def mixed(count: int, rate: float) -> float:
    """At the bound, every other message long-lived, the others expiring one per message
    behind them: the worst case, a scan per message if scans were not limited. ``rate``:
    messages a second into this one queue."""
    dt = 1.0 / rate
    session = _full(lambda n: None if n % 2 else (n + 1) * dt)
    new = _messages(count, lambda n: None if n % 2 else (QUEUE + n + 1) * dt)
    return _timed(session, new, Limits(), dt)


def scan(count: int) -> float:
    """One scan of a full queue with one expired message in its middle (µs, as ns/1000)."""
    if not hasattr(Session, "purge_expired"):
        return float("nan")  # a checkout from before it
    total = 0
    for _ in range(count // 100 or 1):
        session = _full(lambda n: 0.5 if n == QUEUE // 2 else 3600.0)
        started = time.perf_counter_ns()
        session.purge_expired(1.0)
        total += time.perf_counter_ns() - started
    return total / (count // 100 or 1)


def device(count: int, sessions: int = 100) -> float:
    """At max_queued_messages_per_device with ``sessions`` sessions, each new message drops
    the oldest of its queue (one message a second: a walk of the device each time)."""
    limits = Limits(max_queued_messages_per_device=sessions * 10)
    tally = QueueTally()
    group = [Session(n, persistent=True) for n in range(sessions)]
    for session in group:
        session.attach(tally)
        for message in _messages(10, lambda n: 3600.0):
            session.restore(message)
    return _timed(group[0], _messages(count, lambda n: 3600.0), limits, 1.0)


def loop_time(count: int) -> float:
    """What ``AwayQueue.keep`` pays for the clock it passes: ``loop.time()``."""

    async def run() -> float:
        started = time.perf_counter_ns()
        for _ in range(count):
            asyncio.get_running_loop().time()
        return (time.perf_counter_ns() - started) / count

    return asyncio.run(run())


ROWS: list[Row] = [
    ("fits, no expiry (queued then sent)", fits),
    ("fits, with an expiry", lambda n: fits(n, 3600.0)),
    ("full, live, no expiry (oldest dropped)", full_live),
    ("full, live, with an expiry", lambda n: full_live(n, 3600.0)),
    ("full, head expiring in order", full_expiring_in_order),
    ("full, mixed intervals, 1,000 msg/s into the queue", lambda n: mixed(n, 1000.0)),
    ("full, mixed intervals, 100,000 msg/s into the queue", lambda n: mixed(n, 100_000.0)),
    ("one scan of a full queue (µs, not ns)", lambda n: scan(n) / 1000),
    ("device bound, 100 sessions, oldest dropped", device),
    ("loop.time() (AwayQueue's clock)", loop_time),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args(argv)
    lines = [f"Session.enqueue per message, ns (best of {args.rounds}; clock passed: {CLOCKED})",
             "", "| case | ns |", "|---|---:|"]  # fmt: skip
    for name, run in ROWS:
        best = min(run(args.messages) for _ in range(args.rounds))
        lines.append(f"| {name} | {best:,.0f} |")
        print(lines[-1], flush=True)
    report = "\n".join(["# Queue micro-benchmark", "", *lines, "", *machine_lines(), ""])
    if not args.no_record:
        today = datetime.date.today().isoformat()
        output = args.output or Path("bench/results") / f"queue-{today}.tmp.md"
        output.write_text(report)
        print(f"written to {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
