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
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from sqlalchemy import insert

from broker.cluster.frames import to_key
from broker.registry import Registry
from broker.session_store import SqlSessionStore
from nanoiot.settings import Settings
from storage import migrate
from storage.engine import create_engine
from storage.models import Base
from tests.e2e.conftest import broker_settings
from tests.e2e.harness import WAIT, BrokerThread, mqtt_client, write_pem
from tests.natsserver import NATS_URL

SESSIONS = 2_000  # restored by A: two of its pages (``broker.restore.PAGE``)
QUEUED = 3  # QoS 1 messages queued for each session, the device's too


async def _fill(url: str, device_id: uuid.UUID, count: int) -> list[str]:
    """``count`` persistent sessions of devices of their own and one of ``device_id`` (client
    id "sensor"), subscribed and with messages queued; their keys. The fleet's device ids
    sort first, so the device's session is on the last page."""
    engine = create_engine(url)
    now, tables = datetime.now(UTC), Base.metadata.tables
    devices: list[dict[str, object]] = []
    sessions: list[dict[str, object]] = []
    subscriptions: list[dict[str, object]] = []
    messages: list[dict[str, object]] = []
    keys: list[str] = []
    fleet = [(uuid.UUID(int=n + 1), f"fleet-{n}") for n in range(count)]
    for owner, name in [*fleet, (device_id, "sensor")]:
        key = f"{owner}/{name}"
        keys.append(key)
        if owner != device_id:
            devices.append({"id": owner, "name": name, "type": "default", "label": "",
                            "created_at": now, "enabled": True})  # fmt: skip
        sessions.append({"key": key, "device_id": owner, "device_name": name,
                         "client_id": name, "updated_at": now})  # fmt: skip
        subscriptions.extend(
            {"session_key": key, "topic_filter": f"devices/{name}/in/{n}/+", "qos": 1,
             "me_form": False, "options": 0} for n in range(3)
        )  # fmt: skip
        messages.extend(
            {"session_key": key, "topic": f"devices/{name}/in/0/{n}", "payload": b"%d" % n,
             "qos": 1, "attempted": False, "packet_id": None, "released": False,
             "retain": False} for n in range(QUEUED)
        )  # fmt: skip
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(tables["devices"]), devices)
            await connection.execute(insert(tables["mqtt_sessions"]), sessions)
            await connection.execute(insert(tables["mqtt_subscriptions"]), subscriptions)
            await connection.execute(insert(tables["mqtt_queued_messages"]), messages)
    finally:
        await engine.dispose()
    return keys


async def _claimed_by_a(cluster: str, keys: list[str]) -> None:
    """Each session's claim names node A, as its last connect left it."""
    client = await nats.connect(NATS_URL)
    try:
        bucket = await client.jetstream().key_value(f"{cluster}_clients")
        for first in range(0, len(keys), 200):
            chunk = keys[first : first + 200]
            await asyncio.gather(*(bucket.put(to_key(key), b"node-a") for key in chunk))
    finally:
        await client.close()


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
    asyncio.run(migrate.upgrade(postgres_url))
    return broker_settings(
        tmp_path / "data", database_url=postgres_url, nats_url=NATS_URL,
        cluster_name=cluster_name, node_name="node-b",
    )  # fmt: skip


def test_a_device_taking_its_session_elsewhere_while_its_member_restores_the_fleet(
    settings: Settings, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node_a = settings.model_copy(update={"node_name": "node-a"})
    b = BrokerThread(settings)  # B restores nothing: every claim names A
    a: BrokerThread | None = None
    try:
        device, issued = b.provision("sensor")
        certfile = write_pem(tmp_path, issued, "sensor")
        keys = b.call(_fill(postgres_url, device.id, SESSIONS))
        b.call(_claimed_by_a(settings.cluster_name, keys))
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
