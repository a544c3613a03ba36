"""A fleet of persistent sessions in the store for a member to restore, their claims naming
node A (``tests/broker/cluster/test_restore_takeover.py``, ``test_restore_connect.py``)."""

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import nats
from sqlalchemy import insert

from broker.cluster.frames import to_key
from nanoiot.settings import Settings
from storage import migrate
from storage.engine import create_engine
from storage.models import Base
from storage.records import Device
from tests.e2e.harness import BrokerThread, broker_settings, write_pem
from tests.natsserver import NATS_URL

QUEUED = 3  # QoS 1 messages queued for each session, the device's too


async def fill(url: str, device_id: uuid.UUID, count: int) -> list[str]:
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


async def claimed_by_a(cluster: str, keys: list[str]) -> None:
    """Each session's claim names node A, as its last connect left it."""
    client = await nats.connect(NATS_URL)
    try:
        bucket = await client.jetstream().key_value(f"{cluster}_clients")
        for first in range(0, len(keys), 200):
            chunk = keys[first : first + 200]
            await asyncio.gather(*(bucket.put(to_key(key), b"node-a") for key in chunk))
    finally:
        await client.close()


def node_b_settings(postgres_url: str, cluster_name: str, tmp_path: Path) -> Settings:
    """Node B's settings on a migrated ``postgres_url`` and the machine's NATS."""
    asyncio.run(migrate.upgrade(postgres_url))
    return broker_settings(
        tmp_path / "data", database_url=postgres_url, nats_url=NATS_URL,
        cluster_name=cluster_name, node_name="node-b",
    )  # fmt: skip


def sensor_and_fleet(b: BrokerThread, url: str, tmp_path: Path, count: int) -> tuple[Device, Path]:
    """The device "sensor" provisioned through node ``b`` and its .nopass.pem file in
    ``tmp_path``; ``count`` more sessions in the store at ``url`` (``fill``), every claim
    naming node A."""
    device, issued = b.provision("sensor")
    certfile = write_pem(tmp_path, issued, "sensor")
    keys = b.call(fill(url, device.id, count))
    b.call(claimed_by_a(b.settings.cluster_name, keys))
    return device, certfile
