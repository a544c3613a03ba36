"""The broker's own count of live MQTT connections, to check what a scenario divides by.

A figure per connection is only true if the broker holds the connections the load generator
thinks it opened: two connections with one client id make the broker close the first (MQTT
3.1.1 §3.1.4), and memory divided by twice the live connections came out half of what it is.
So every scenario that holds connections asks the broker, not the generator:

- NanoIoT: the ``nanoiot_connected_clients`` gauge of ``/metrics`` (admin token), read at once;
- Mosquitto and amqtt: ``$SYS/broker/clients/connected``, which they publish every
  ``sys_interval`` (1 s here; Mosquitto waits two intervals between updates), read by an
  observer connection of ours that counts itself.
"""

import asyncio
import contextlib
import time
from typing import Protocol

import httpx

from bench.compare_brokers import NANOIOT, BrokerProcess
from bench.mqtt_wire import MqttClient, client_context, connect, subscribe_packet

SYS_TOPIC = "$SYS/broker/clients/connected"
UPTIME_TOPIC = "$SYS/broker/uptime"
WAIT_S = 15.0  # Mosquitto: two $SYS intervals and some; NanoIoT answers at once
POLL_S = 0.05  # between two reads of /metrics


class LiveCountMismatch(RuntimeError):
    """The broker holds another number of connections than the scenario divides by."""


class LiveCount(Protocol):
    async def wait_for(self, expected: int, limit_s: float) -> int:
        """The broker's count once it is ``expected``, or the last one read after
        ``limit_s`` seconds."""

    async def close(self) -> None: ...


async def check(
    count: LiveCount, expected: int, broker: str, what: str, limit_s: float = WAIT_S
) -> None:
    """Raise LiveCountMismatch unless the broker counts ``expected`` live connections
    (waiting up to ``limit_s`` for it to get there)."""
    found = await count.wait_for(expected, limit_s)
    if found != expected:
        raise LiveCountMismatch(
            f"{broker} counts {found:,} live connections; {what} divides by {expected:,}"
        )


class MetricsCount:
    """``nanoiot_connected_clients`` from NanoIoT's ``/metrics``."""

    def __init__(self, http_url: str, token: str) -> None:
        self._client = httpx.AsyncClient(
            base_url=http_url, headers={"Authorization": f"Bearer {token}"}
        )

    async def read(self) -> int:
        response = await self._client.get("/metrics")
        response.raise_for_status()
        for line in response.text.splitlines():
            if line.startswith("nanoiot_connected_clients "):
                return int(float(line.split()[1]))
        raise RuntimeError("no nanoiot_connected_clients in /metrics")

    async def wait_for(self, expected: int, limit_s: float) -> int:
        # The broker has no event to offer another process: poll, bounded by limit_s.
        for _ in range(int(limit_s / POLL_S)):
            if (found := await self.read()) == expected:
                return found
            await asyncio.sleep(POLL_S)
        return await self.read()

    async def close(self) -> None:
        await self._client.aclose()


class SysCount:
    """``$SYS/broker/clients/connected``, through an observer connection (not counted).

    Mosquitto publishes a $SYS value only when it changed, so a value read before the check
    may be stale and yet right. Both brokers publish ``$SYS/broker/uptime`` at every interval,
    before the client count: a count is fresh once an uptime message arrived after the check
    began, followed by a count or by ``GRACE_S`` of silence (the count did not change).
    """

    GRACE_S = 0.2

    def __init__(self) -> None:
        self.latest: int | None = None
        self.ticks = 0
        self.tick_at = self.count_at = 0.0
        self.updated = asyncio.Event()
        self._client: MqttClient | None = None

    @classmethod
    async def open(cls, port: int, ca: str, pem: str, client_id: str) -> "SysCount":
        observer = cls()
        observer._client = await connect(port, client_context(ca, pem), client_id,
                                         observer._on_publish)  # fmt: skip
        for topic in (UPTIME_TOPIC, SYS_TOPIC):
            observer._client.suback = asyncio.get_running_loop().create_future()
            observer._client.write(subscribe_packet(topic, 0))
            if await observer._client.suback != 0:
                raise RuntimeError(f"subscription to {topic} refused")
        return observer

    def _on_publish(self, topic: bytes, payload: bytes) -> None:
        if topic == UPTIME_TOPIC.encode():
            self.ticks += 1
            self.tick_at = time.monotonic()
        else:
            self.latest = int(payload) - 1  # the observer is one of the connected clients
            self.count_at = time.monotonic()
        self.updated.set()

    def _fresh(self, ticks_before: int) -> bool:
        if self.ticks <= ticks_before:
            return False
        return self.count_at >= self.tick_at or time.monotonic() - self.tick_at >= self.GRACE_S

    async def wait_for(self, expected: int, limit_s: float) -> int:
        deadline = time.monotonic() + limit_s
        ticks_before = self.ticks
        while not (self._fresh(ticks_before) and self.latest == expected):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.updated.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.updated.wait(), min(remaining, self.GRACE_S))
        return -1 if self.latest is None else self.latest

    async def close(self) -> None:
        if self._client is not None and self._client.transport is not None:
            self._client.transport.close()


async def open_for(broker: BrokerProcess, pem: str) -> LiveCount:
    """The live count of ``broker``; Mosquitto and amqtt get an observer presenting ``pem``."""
    if broker.name == NANOIOT:
        return MetricsCount(broker.http_url, broker.admin_token)
    return await SysCount.open(broker.port, str(broker.ca_file), pem, "bench-sys-observer")
