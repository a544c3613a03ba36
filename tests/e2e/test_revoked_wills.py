"""A will waiting for its Will Delay Interval (MQTT 5.0 §3.1.3.2.2) when its device is revoked
or disabled: dropped, as the will of a connection closed by a revocation is. Before, a device
that dropped its connection and was then revoked still published it once the delay ran out.
Real broker, real TLS, a backend subscribed to every device topic."""

from collections.abc import Callable
from pathlib import Path

import pytest

from broker.mqtt.packets import MQTT_5, Connect, Will
from broker.mqtt.properties import Properties, Property
from storage.records import Device
from storage.sql import SqlCredentialStore
from tests.e2e.harness import WAIT, BrokerThread, write_pem
from tests.e2e.peers import Raw
from tests.e2e.v5_client import v5_application
from tests.logwatch import Lines, attached

Change = Callable[[SqlCredentialStore, Device], object]


def away_with_will(broker: BrokerThread, directory: Path, name: str, delay: int) -> Device:
    """``name`` connects with a will delayed ``delay`` s and a session kept a minute, then
    drops its connection without DISCONNECT: the will waits for its delay."""
    device, issued = broker.provision(name)
    raw = Raw(broker.port, broker.server_cert, write_pem(directory, issued, name), MQTT_5)
    try:
        will = Will(
            "v1/devices/me/status", f"{name} gone".encode(), 1,
            properties=Properties([(Property.WILL_DELAY_INTERVAL, delay)]),
        )  # fmt: skip
        session = Properties([(Property.SESSION_EXPIRY_INTERVAL, 60)])
        raw.connect(Connect(MQTT_5, name, False, 60, will=will, properties=session))
    finally:
        raw.close()
    return device


@pytest.mark.parametrize(
    "change",
    [
        lambda store, device: store.revoke_x509(device.id),
        lambda store, device: store.set_device_enabled(device.id, False),
    ],
    ids=["revoke", "disable"],
)
def test_a_waiting_will_of_a_revoked_device_is_dropped(
    broker: BrokerThread, tmp_path: Path, change: Change
) -> None:
    broker.application("watcher", "watcher", "pw-watcher")
    watcher = v5_application(broker, "watcher", "pw-watcher")
    try:
        assert watcher.subscribe("devices/#") == [1]
        with attached(Lines(WAIT), "broker.core") as lines:
            revoked = away_with_will(broker, tmp_path, "revoked", delay=5)
            # The control: its will is due after the revoked device's would have been.
            away_with_will(broker, tmp_path, "kept", delay=7)
            broker.call(change(broker.running.store, revoked))  # type: ignore[arg-type]
            dropped = lines.saw("will of session")
        got = watcher.next_message()
        assert (got.topic, got.payload) == ("devices/kept/status", b"kept gone")
        watcher.assert_nothing_more()
        assert dropped
    finally:
        watcher.close()
