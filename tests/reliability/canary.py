"""A device that must not notice bad clients, and a count of what the broker holds.

``Canary``: a provisioned device whose paho client publishes to its own topic and receives
each message back. ``with canary.busy():`` keeps it publishing while a bad client does its
worst; ``check()`` then proves it is still connected and a fresh message round-trips.

``Census``: the broker's tasks, sessions, live peers and TLS connections, and this process's
open file descriptors (the broker runs in this process: ``BrokerThread``). ``settle`` waits
for what bad clients started to finish, then counts, so two censuses can be compared.
"""

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.harness import WAIT, BrokerThread, Client, device_client

TOPIC = "v1/devices/me/telemetry"
_PACE = 0.02  # seconds between the canary's publishes while busy


class Canary:
    def __init__(self, broker: BrokerThread, directory: Path, name: str = "canary") -> None:
        self.name = name
        self.client: Client
        self.client, self.issued = device_client(broker, directory, name, client_id=name)
        assert self.client.wait_connack() == 0
        assert self.client.subscribe(TOPIC) == [1]
        self.round_trips = 0

    def check(self) -> None:
        """Still connected, and a fresh message goes out and comes back."""
        assert self.client.paho.is_connected(), f"{self.name} lost its connection"
        assert not self.client.disconnected.is_set(), f"{self.name} was disconnected"
        self.round_trips += 1
        payload = f"{self.name} {self.round_trips}".encode()
        self.client.publish(TOPIC, payload)
        assert self.client.next_message().payload == payload

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Publish continuously while the block runs; every message must come back, in order."""
        stop = threading.Event()
        sent: list[bytes] = []
        failures: list[BaseException] = []

        def publish_until_stopped() -> None:
            try:
                while not stop.wait(_PACE):  # pacing, not waiting for an event
                    payload = f"{self.name} busy {len(sent)}".encode()
                    self.client.publish(TOPIC, payload)
                    sent.append(payload)
            except BaseException as exc:  # reported in the test's thread
                failures.append(exc)

        worker = threading.Thread(target=publish_until_stopped, daemon=True)
        worker.start()
        try:
            yield
        finally:
            stop.set()
            worker.join(WAIT)
        assert not failures, f"{self.name} failed to publish: {failures[0]!r}"
        received = [self.client.next_message().payload for _ in sent]
        assert received == sent
        self.check()

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class Census:
    tasks: int
    sessions: int
    live_peers: int
    tls_connections: int
    fds: int

    def __str__(self) -> str:
        return (
            f"tasks={self.tasks} sessions={self.sessions} live={self.live_peers} "
            f"tls={self.tls_connections} fds={self.fds}"
        )


class Baseline:
    """What the broker held before the bad clients came; ``leaks`` compares against it."""

    def __init__(self, broker: BrokerThread) -> None:
        self.broker = broker
        self._tasks: set[asyncio.Task[Any]] = broker.call(_all_tasks())
        self._connections = set(broker.running.listener.protocols)
        self.census = self.settle()
        self.lingering: list[str] = []

    def settle(self) -> Census:
        """Wait (bounded) for tasks and connections begun since the baseline, then count, in
        the same turn of the broker's loop as the last wait found nothing running (counted in
        a later turn, a task a timer started meanwhile would count as a leak)."""
        self.lingering, census = self.broker.call(self._settled(), timeout=3 * WAIT)
        return census

    async def _settled(self) -> tuple[list[str], Census]:
        lingering = await self._wait_for_newcomers()
        return lingering, _count(self.broker)

    def leaks(self) -> list[str]:
        """What grew since the baseline, once the broker has settled (empty: nothing)."""
        after = self.settle()
        grown = [
            f"{name}: {getattr(self.census, name)} -> {getattr(after, name)}"
            for name in ("tasks", "sessions", "live_peers", "tls_connections", "fds")
            if getattr(after, name) > getattr(self.census, name)
        ]
        return grown + [f"task still running: {task}" for task in self.lingering]

    async def _wait_for_newcomers(self) -> list[str]:
        """Wait for every task and connection begun since the baseline, in rounds.

        A connection's closing can start tasks of its own (its session's release) after a
        round has listed the tasks to wait for, so rounds repeat until one finds nothing new
        running; what is still running at the deadline is reported.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        pending: list[asyncio.Task[Any]] = []
        while True:
            async with asyncio.timeout(max(deadline - loop.time(), 0.1)):
                await self._wait_for_connections()
            pending = self._newcomers()
            if not pending or loop.time() >= deadline:
                break
            await asyncio.wait(pending, timeout=max(deadline - loop.time(), 0.1))
        return [task.get_name() + " " + repr(task.get_coro()) for task in pending]

    def _newcomers(self) -> list[asyncio.Task[Any]]:
        current = asyncio.current_task()
        return [
            t
            for t in asyncio.all_tasks()
            if t not in self._tasks and t is not current and not t.done()
        ]

    async def _wait_for_connections(self) -> None:
        listener = self.broker.running.listener
        closing = [p.wait_closed() for p in list(listener.protocols) if p not in self._connections]
        if closing:
            await asyncio.gather(*closing)
        # Transports close their sockets in the loop's next turn (call_soon).
        await asyncio.sleep(0)


async def _all_tasks() -> set[asyncio.Task[Any]]:
    return set(asyncio.all_tasks()) - {asyncio.current_task()}


def _count(broker: BrokerThread) -> Census:
    """Called in a task on the broker's loop, not counted."""
    engine = broker.running.broker
    return Census(
        tasks=len(asyncio.all_tasks()) - 1,  # less the task counting
        sessions=len(engine.registry.sessions),
        live_peers=len(engine.live_peers()),
        tls_connections=len(broker.running.listener.protocols),
        fds=len(os.listdir("/proc/self/fd")),
    )
