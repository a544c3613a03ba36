"""Revocation reaches live sessions: from another process, within a second, without wills."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auth.connack import ConnackCode
from broker import connecting
from broker.client import MqttClient
from broker.mqtt.packets import Connect
from broker.sessions import BrokerSession
from tests.e2e.harness import WAIT, BrokerThread, Client, application_client, device_client

NANOIOT = str(Path(sys.executable).with_name("nanoiot"))


def cli(broker: BrokerThread, *args: str) -> None:
    """Run the real CLI in another process against the broker's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOIOT_", "MQTT_SSL_"))}
    env["NANOIOT_DATA_DIR"] = str(broker.settings.data_dir)
    subprocess.run([NANOIOT, *args], env=env, check=True, capture_output=True, timeout=60)


@pytest.fixture
def watcher(broker: BrokerThread) -> Iterator[Client]:
    """A backend subscribed to every device topic: it would see a will message."""
    client = application_client(broker, "watcher", "pw-watcher", client_id="w")
    assert client.wait_connack() == 0
    assert client.subscribe("devices/#") == [1]
    yield client
    client.close()


@pytest.mark.parametrize(
    "command",
    [
        ("credentials", "revoke", "dev-1"),
        ("device", "disable", "dev-1"),
        ("device", "delete", "dev-1"),
    ],
)
def test_change_in_another_process_disconnects_within_a_second(
    broker: BrokerThread, watcher: Client, tmp_path: Path, command: tuple[str, ...]
) -> None:
    device, issued = device_client(
        broker, tmp_path, "dev-1", client_id="d1", will=("v1/devices/me/status", b"gone")
    )
    canary, _ = device_client(broker, tmp_path, "canary", client_id="c")
    try:
        assert device.wait_connack() == 0
        assert canary.wait_connack() == 0
        cli(broker, *command)
        changed = time.monotonic()
        assert device.disconnected.wait(WAIT)
        assert time.monotonic() - changed < 1.0
        # No will from a revoked device, and the canary is untouched.
        canary.publish("v1/devices/me/telemetry", b"still here")
        assert watcher.next_message().payload == b"still here"
        assert watcher.no_message()
        again, _ = device_client(broker, tmp_path, "dev-1", issued, client_id="d1")
        assert again.wait_connack() == ConnackCode.NOT_AUTHORIZED
        again.close()
    finally:
        device.close()
        canary.close()


def test_revocation_right_after_connack_is_not_lost(
    broker: BrokerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kick that lands right after the CONNACK (in the same turn) closes the connection."""
    real_accept = connecting.accept
    kicked: list[MqttClient] = []

    def kick_right_after(
        client: MqttClient, session: BrokerSession, present: bool, connect: Connect
    ) -> None:
        real_accept(client, session, present, connect)
        assert client.peer is not None
        kicked.append(client)
        client.broker.kick_device(client.peer.device_id, "test: revoked at CONNACK")

    monkeypatch.setattr(connecting, "accept", kick_right_after)
    _, issued = broker.provision("racer")
    for attempt in range(20):
        client, _ = device_client(broker, tmp_path, "racer", issued, client_id=f"r{attempt}")
        try:
            assert client.wait_connack() == 0
            assert client.disconnected.wait(WAIT)
            assert kicked[-1].ended
        finally:
            client.close()
    assert broker.running.broker.live_peers() == []
