"""A member restoring a fleet's persistent sessions from the store with the cluster on
(``broker.restore``): two real nodes in threads of their own (``BrokerThread``) on the
machine's NATS and a fresh PostgreSQL database, a real paho device over mutual TLS.

Node A restores 2,000 sessions whose claims name it (three subscriptions, three queued QoS 1
messages each) while the device, whose session A holds too, connects to node B: A's restore
read the claims before the device took its session, so its pages must skip that one
(``Restoration.taken``); the device gets its session from B, queue and all, and A ends up
holding every other session and not that one (restored there too, the session would be held
by two members, its filters in both members' routes)."""

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from broker.registry import Registry
from broker.session_store import SqlSessionStore
from nanoiot.settings import Settings
from tests.broker.cluster.restoring_fleet import QUEUED, node_b_settings, sensor_and_fleet
from tests.e2e.harness import WAIT, BrokerThread, mqtt_client

SESSIONS = 2_000  # restored by A: two of its pages (``broker.restore.PAGE``)


class Gate:
    """Holds node A's restore before its second page, until ``open``; and says when A gave a
    session up to another member (its ``Registry.hand_over`` returned)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None  # A's: only its store is held
        self.held = threading.Event()  # A asked for its second page
        self.handed_over = threading.Event()
        self._opened: asyncio.Event | None = None
        load_page, hand_over = SqlSessionStore.load_page, Registry.hand_over

        async def held_page(store: SqlSessionStore, after: str | None, limit: int) -> Any:
            if after is not None and asyncio.get_running_loop() is self.loop:
                self._opened = self._opened or asyncio.Event()
                self.held.set()
                await self._opened.wait()
            return await load_page(store, after, limit)

        async def watched_hand_over(registry: Registry, *args: Any, **kwargs: Any) -> Any:
            given = await hand_over(registry, *args, **kwargs)
            if asyncio.get_running_loop() is self.loop:
                self.handed_over.set()
            return given

        monkeypatch.setattr(SqlSessionStore, "load_page", held_page)
        monkeypatch.setattr(Registry, "hand_over", watched_hand_over)

    def open(self) -> None:
        assert self.loop is not None
        assert self._opened is not None
        self.loop.call_soon_threadsafe(self._opened.set)


@pytest.fixture
def settings(postgres_url: str, cluster_name: str, tmp_path: Path) -> Settings:
    return node_b_settings(postgres_url, cluster_name, tmp_path)


def test_a_device_taking_its_session_elsewhere_while_its_member_restores_the_fleet(
    settings: Settings, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node_a = settings.model_copy(update={"node_name": "node-a"})
    b = BrokerThread(settings)  # B restores nothing: every claim names A
    a: BrokerThread | None = None
    try:
        device, certfile = sensor_and_fleet(b, postgres_url, tmp_path, SESSIONS)
        gate = Gate(monkeypatch)
        a = BrokerThread(node_a)
        gate.loop = a.loop
        assert gate.held.wait(WAIT), "A's restore never asked for its second page"
        # A read the claims, and its first page; the device's session is on the second.
        client = mqtt_client(b.port, b.server_cert, certfile, client_id="sensor",
                             clean_session=False)  # fmt: skip
        try:
            assert gate.handed_over.wait(WAIT), "A was never asked for the session"
            gate.open()
            assert client.wait_connack() == 0
            assert client.session_present.get(timeout=WAIT) is True
            got = sorted(client.next_message().payload for _ in range(QUEUED))
            assert got == [b"%d" % n for n in range(QUEUED)]  # its queue, from the store
            restoration = a.running.restoration
            a.call(asyncio.wait_for(asyncio.shield(restoration.done), WAIT))
            assert (restoration.sessions, restoration.messages) == (
                SESSIONS, SESSIONS * QUEUED,
            )  # fmt: skip
            key = (str(device.id), "sensor")
            assert key not in a.running.broker.registry.sessions, "held by A and B"
            assert key in b.running.broker.registry.sessions
            live = (a.running.broker.registry.live, b.running.broker.registry.live)
            assert [len(clients.get(str(device.id), ())) for clients in live] == [0, 1]
        finally:
            client.close()
        # Its session ended: none to adopt as the nodes stop, one after the other.
        ending = mqtt_client(b.port, b.server_cert, certfile, client_id="sensor")
        try:
            assert ending.wait_connack() == 0
        finally:
            ending.close()
    finally:
        try:
            b.stop()  # first: A, leaving first, would have B adopt its 2,000 sessions
        finally:
            if a is not None:
                a.stop()
