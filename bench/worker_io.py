"""What load-generator processes share: talking to the benchmark, and tallying deliveries.

A worker prints one JSON line per state (``announce``) and reads one JSON command per line
from its stdin (``next_command``; None once stdin is closed), so the benchmark can check the
broker's own count of live connections between "connected" and "go".
"""

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.mqtt_wire import PAYLOAD

Work = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def run_worker(work: Callable[[dict[str, Any]], Work]) -> None:
    """A worker's main: the spec from the JSON file named on the command line, ``work(spec)``
    run on uvloop when installed (the generator must not be the slower side), and its result
    announced last with this process's CPU seconds."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> None:
        cpu = own_cpu()
        result = await work(spec)(spec)
        announce({**result, "cpu_s": own_cpu() - cpu})

    asyncio.run(main())


def announce(state: dict[str, Any]) -> None:
    print(json.dumps(state), flush=True)


async def next_command() -> dict[str, Any] | None:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line.strip():
        return None
    command: dict[str, Any] = json.loads(line)
    return command


def give_way() -> bool:
    """This process under SCHED_BATCH (sched(7)), if the system has it: its wake-ups do not
    preempt a running process. A throughput generator sharing the cores with the brokers it
    drives wakes for every read it is given (a QoS 1 subscriber's: one every 20 messages, the
    broker's in-flight window); each wake-up took a core from a broker worker in the middle
    of its work, and found one read to do. Now it runs when a core is free or a broker's time
    slice ends, and takes what came meanwhile in one turn. What it sends and checks is the
    same: every PUBACK is still sent for every message it receives."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed
        return False
    return True


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def now_ns() -> int:
    """CLOCK_MONOTONIC: one clock for every process of the machine, so a send time written by
    one worker is compared with a receive time taken by another."""
    return time.monotonic_ns()


@dataclass
class Tally:
    """Deliveries to one or more subscribers: counts, order per publisher (MQTT 3.1.1 §4.6
    only promises order per publisher and subscriber), and publish-to-delivery latencies."""

    keep_latency: bool = False
    received: int = 0
    out_of_order: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def subscriber(self) -> "Subscriber":
        return Subscriber(self)

    def percentiles(self) -> dict[str, float]:
        ordered = sorted(self.latencies_ns)
        if not ordered:
            return {}

        def at(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

        return {"p50": at(0.50), "p99": at(0.99), "max": ordered[-1] / 1e6}

    async def settle(self, expected: int, quiet_s: float, limit_s: float | None = None) -> None:
        """Until ``expected`` deliveries, nothing arrived for ``quiet_s``, or ``limit_s``."""
        deadline = None if limit_s is None else time.monotonic() + limit_s
        while self.received < expected:
            self.progress.clear()
            wait = quiet_s if deadline is None else min(quiet_s, deadline - time.monotonic())
            if wait <= 0:
                return
            try:
                await asyncio.wait_for(self.progress.wait(), wait)
            except TimeoutError:
                return


@dataclass
class Subscriber:
    tally: Tally
    expected_next: dict[int, int] = field(default_factory=dict)  # publisher -> next sequence

    def on_publish(self, topic: bytes, payload: bytes) -> None:
        publisher, seq, sent_ns = PAYLOAD.unpack(payload)
        tally = self.tally
        if tally.keep_latency:
            tally.latencies_ns.append(now_ns() - sent_ns)
        if seq != self.expected_next.get(publisher, 0):
            tally.out_of_order += 1
        self.expected_next[publisher] = seq + 1
        tally.received += 1
        tally.progress.set()
