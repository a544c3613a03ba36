"""Expired messages never take room from live ones (MQTT 5.0 §3.3.2.3.3 [MQTT-3.3.2-5]): a
persistent session's queue holding messages whose Message Expiry Interval passed, at
``max_queued_messages`` or at its device's ``max_queued_messages_per_device``, lets them go
(deleted from the store too) before it drops a live one; and so does a queue read back from
the store, whether they expired while the broker was down (never counted then) or after.
A real broker over mutual TLS, paho MQTT 5 clients, SQLite and PostgreSQL stores."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from prometheus_client import generate_latest

from broker.mqtt.session import Outgoing
from broker.server import RunningBroker
from storage.session_data import StoredSession
from tests.e2e.harness import BrokerThread, broker_settings, write_pem
from tests.e2e.v5_client import (
    V5Client,
    make_properties,
    publish_properties,
    v5_application,
    v5_client,
)
from tests.sqlite_template import migrated_sqlite

PASSWORD = "pw-backend-expiry"
SHORT = publish_properties(MessageExpiryInterval=1)  # seconds: kept short, and waited for


class Site:
    """A broker, the device "meter" whose persistent sessions are away, and the application
    "backend" that sends them QoS 1 messages."""

    def __init__(self, tmp_path: Path, **settings: object) -> None:
        data = tmp_path / "data"
        if "database_url" not in settings:
            migrated_sqlite(data / "nanoiot.db")
        self.broker = BrokerThread(broker_settings(data, **settings))
        device, issued = self.broker.provision("meter")
        self.device_id = str(device.id)
        self.certfile = write_pem(tmp_path, issued, "meter")
        self.broker.application("backend", "backend", PASSWORD)

    def restart(self) -> None:
        self.broker.stop()
        self.broker = BrokerThread(self.broker.settings)

        async def restored() -> None:
            await asyncio.shield(self.broker.running.restoration.done)

        self.broker.call(restored())

    def meter(self, client_id: str, level: str = "+") -> V5Client:
        """The meter's session ``client_id`` (Clean Start 0, an hour's expiry), subscribed
        to its requests ``level``."""
        connect = make_properties(PacketTypes.CONNECT, SessionExpiryInterval=3600)
        client = v5_client(self.broker.port, self.broker.server_cert, self.certfile,
                           client_id=client_id, clean_start=False,
                           connect_properties=connect)  # fmt: skip
        assert client.wait_connack()[0] == 0
        assert client.subscribe(f"v1/devices/me/rpc/request/{level}") == [1]
        return client

    def away(self, client_id: str, level: str = "+") -> None:
        client = self.meter(client_id, level)
        client.close()
        assert client.disconnected.wait(10)

    def send(self, *messages: tuple[str, bytes, bool]) -> None:
        """(session's topic level, payload, short-lived) each, PUBACK'd: queued and stored."""
        backend = v5_application(self.broker, "backend", PASSWORD)
        try:
            for level, payload, short in messages:
                topic = f"devices/meter/rpc/request/{level}"
                backend.publish(topic, payload, qos=1, properties=SHORT if short else None)
        finally:
            backend.close()

    def received(self, client_id: str, count: int) -> list[bytes]:
        """What the session kept, its client back for it (and acknowledging it)."""
        client = self.meter(client_id)
        try:
            assert client.session_present
            got = [bytes(client.next_message().payload) for _ in range(count)]
            client.assert_nothing_more()
            return got
        finally:
            client.close()
            assert client.disconnected.wait(10)

    def expired(self) -> None:
        """Wait until the broker's clock passes the deadline of every message queued for the
        meter: on that clock, a timer set for it (the event itself, not a guess of it)."""

        async def wait() -> None:
            loop = asyncio.get_running_loop()
            deadline = max(m.expires_at for m in self._queues() if m.expires_at is not None)
            while loop.time() < deadline:  # a timer may fire a clock tick early
                passed: asyncio.Future[None] = loop.create_future()
                timer = loop.call_at(deadline, passed.set_result, None)
                try:
                    await passed
                finally:
                    timer.cancel()

        self.broker.call(wait())

    def queued(self) -> tuple[int, int]:
        """The messages queued for the meter's sessions, as its device's tally counts them;
        checked against the queues themselves."""

        async def read() -> tuple[int, int]:
            queues = self.running.broker.registry.device_queues
            assert queues is not None
            tally = queues.of_device(self.device_id)
            held = list(self._queues())
            assert tally == (len(held), sum(m.size for m in held))
            return tally

        return self.broker.call(read())

    def stored(self) -> dict[str, list[bytes]]:
        """The payloads the store keeps for each of the meter's sessions (all written)."""

        async def read() -> list[StoredSession]:
            await self.running.broker.store.flush()
            return await self.running.store.load_sessions()

        return {s.client_id: [m.payload for m in s.queued] for s in self.broker.call(read())}

    def hits(self, limit: str) -> int:
        return self.running.broker.metrics.limit_hits[limit]

    def scraped(self, sample: str) -> float:
        """A sample of ``nanoiot_<sample>`` as ``/metrics`` shows it (0 if it is not shown)."""
        text = generate_latest(self.running.broker.metrics.registry).decode()
        lines = [line for line in text.splitlines() if line.startswith(f"nanoiot_{sample} ")]
        return float(lines[0].split()[-1]) if lines else 0

    @property
    def running(self) -> RunningBroker:
        return self.broker.running

    def _queues(self) -> Iterator[Outgoing]:
        registry = self.running.broker.registry
        for key, session in registry.sessions.items():
            if key[0] == self.device_id:
                yield from session.queue


def test_expired_messages_make_room_at_a_sessions_bound(tmp_path: Path) -> None:
    """Two live messages (one QoS 0 would do too), then two that expire: at the bound the
    expired go, not the oldest live ones (which went before, while the expired stayed)."""
    site = Site(tmp_path, max_queued_messages=4)
    try:
        site.away("m")
        site.send(("1", b"live0", False), ("1", b"live1", False),
                  ("2", b"short0", True), ("2", b"short1", True))  # fmt: skip
        site.expired()  # then taken out by the sweep or at the bound, whichever comes first
        site.send(("3", b"new0", False), ("3", b"new1", False))
        assert (site.hits("message_expiry"), site.hits("max_queued_messages")) == (2, 0)
        assert site.scraped('limit_hits_total{limit="message_expiry"}') == 2
        assert site.stored() == {"m": [b"live0", b"live1", b"new0", b"new1"]}
        assert site.received("m", 4) == [b"live0", b"live1", b"new0", b"new1"]
        assert site.queued() == (0, 0)
    finally:
        site.broker.stop()


def test_a_devices_other_sessions_expired_messages_make_room(tmp_path: Path) -> None:
    """The device's bound held by another session's expired messages: before, the new
    message was dropped itself (its session had nothing queued to make room with)."""
    site = Site(tmp_path, max_queued_messages_per_device=3)
    try:
        site.away("a", "1")
        site.away("b", "2")
        site.send(*[("1", f"short{n}".encode(), True) for n in range(3)])
        site.expired()
        site.send(*[("2", f"live{n}".encode(), False) for n in range(3)])
        assert (site.hits("message_expiry"), site.hits("max_queued_messages_per_device")) == (3, 0)
        assert site.stored() == {"a": [], "b": [b"live0", b"live1", b"live2"]}
        assert site.received("b", 3) == [b"live0", b"live1", b"live2"]
        assert site.received("a", 0) == []
    finally:
        site.broker.stop()


@pytest.mark.parametrize("when", ["while_down", "after_restart"])
def test_a_restored_queues_expired_messages_take_no_room(
    database_url: str, tmp_path: Path, when: str
) -> None:
    """Read back with messages that expired while the broker was down, a queue counts and
    keeps only its live ones (the others are deleted from the store); with messages that
    expire later, they make room at the bound as any queue's do."""
    site = Site(tmp_path, database_url=database_url, max_queued_messages=4)
    try:
        site.away("m")
        site.send(("1", b"live0", False), ("1", b"live1", False),
                  ("2", b"short0", True), ("2", b"short1", True))  # fmt: skip
        if when == "while_down":
            site.expired()  # before the stop: they are read back expired
        site.restart()
        if when == "while_down":
            assert site.queued()[0] == 2
            assert site.stored() == {"m": [b"live0", b"live1"]}
        else:
            assert site.queued()[0] == 4
            site.expired()
        site.send(("3", b"new0", False), ("3", b"new1", False))
        assert site.hits("max_queued_messages") == 0
        assert site.received("m", 4) == [b"live0", b"live1", b"new0", b"new1"]
        assert site.stored() == {"m": []}
    finally:
        site.broker.stop()
