"""MQTT 5 state of persistent sessions across a broker restart, with paho MQTTv5 clients: a
queued message keeps its properties and its expiry counts from when it was received
(5.0 §3.3.2.3.3); a session ends its expiry interval after its client left (§3.1.2.11.2)."""

import time
from pathlib import Path
from queue import Empty
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from prometheus_client import generate_latest

from tests.e2e.expiries import Expiries
from tests.e2e.harness import WAIT, BrokerThread, broker_settings, write_pem
from tests.e2e.v5_client import V5Client, make_properties, publish_properties, v5_client

PASSWORD = "pw-backend-1"


def _device(broker: BrokerThread, certfile: Path, expiry: int) -> V5Client:
    return v5_client(
        broker.port, broker.server_cert, certfile, client_id="k", clean_start=False,
        connect_properties=make_properties(PacketTypes.CONNECT, SessionExpiryInterval=expiry),
    )  # fmt: skip


def _wait_until(moment: float) -> None:
    # The event waited for is time itself passing: an interval must run out.
    time.sleep(max(0.0, moment - time.monotonic()))


def test_queued_messages_keep_properties_and_expiry_across_a_restart(tmp_path: Path) -> None:
    settings = broker_settings(tmp_path / "data")
    broker = BrokerThread(settings)
    try:
        _, issued = broker.provision("keeper")
        certfile = write_pem(tmp_path, issued, "keeper")
        broker.application("backend", "backend", PASSWORD)
        device = _device(broker, certfile, 3600)
        assert device.wait_connack()[0] == 0
        assert device.subscribe_with_id("v1/devices/me/rpc/request/+", 7) == [1]
        device.close()
        backend = v5_client(
            broker.port, broker.server_cert, None, username="backend", password=PASSWORD
        )
        assert backend.wait_connack()[0] == 0
        pairs = [("b", "2"), ("a", "1")]
        kept = publish_properties(
            ContentType="application/json", CorrelationData=b"\x00\x01",
            ResponseTopic="devices/keeper/rpc/response/1", UserProperty=pairs,
            MessageExpiryInterval=3600,
        )  # fmt: skip
        backend.publish("devices/keeper/rpc/request/1", b"kept", properties=kept)
        short = publish_properties(MessageExpiryInterval=2)
        backend.publish("devices/keeper/rpc/request/2", b"expires", properties=short)
        expired_at = time.monotonic() + 2.2
        backend.publish("devices/keeper/rpc/request/3", b"plain")  # PUBACK: it is stored
        backend.close()
        broker.stop()
        _wait_until(expired_at)

        broker = BrokerThread(settings)
        device = _device(broker, certfile, 3600)
        assert device.wait_connack()[0] == 0
        assert device.session_present
        first, second = device.next_message(), device.next_message()
        assert (first.topic, first.payload) == ("v1/devices/me/rpc/request/1", b"kept")
        got: Any = first.properties
        assert got.ContentType == "application/json"
        assert got.CorrelationData == b"\x00\x01"
        assert got.ResponseTopic == "devices/keeper/rpc/response/1"
        assert got.UserProperty == pairs
        assert got.SubscriptionIdentifier == [7]
        # Counted from its receipt, more than two seconds ago, not from the restart.
        assert 3590 <= got.MessageExpiryInterval <= 3598
        # The one whose interval ran out while the broker was down is not delivered.
        assert (second.topic, second.payload) == ("v1/devices/me/rpc/request/3", b"plain")
        assert not hasattr(second.properties, "MessageExpiryInterval")
        try:
            extra = device.messages.get(timeout=0.5)
        except Empty:
            extra = None
        assert extra is None, f"unexpected {extra.topic if extra else ''}"
        # The subscription read back keeps its identifier (§3.8.2.1.2) for what comes now.
        backend = v5_client(
            broker.port, broker.server_cert, None, username="backend", password=PASSWORD
        )
        assert backend.wait_connack()[0] == 0
        backend.publish("devices/keeper/rpc/request/4", b"after")
        after = device.next_message()
        assert after.payload == b"after"
        got = after.properties
        assert got.SubscriptionIdentifier == [7]
        backend.close()
        device.close()
    finally:
        broker.stop()


def test_a_session_expires_its_interval_after_its_client_left_restart_or_not(
    tmp_path: Path, expiries: Expiries
) -> None:
    settings = broker_settings(tmp_path / "data")
    broker = BrokerThread(settings)
    try:
        keeper, issued = broker.provision("keeper")
        certfile = write_pem(tmp_path, issued, "keeper")
        other, other_issued = broker.provision("other")
        other_cert = write_pem(tmp_path, other_issued, "other")
        short = _device(broker, certfile, 2)
        assert short.wait_connack()[0] == 0
        assert short.subscribe("v1/devices/me/rpc/request/+") == [1]
        longer = _device(broker, other_cert, 4)
        assert longer.wait_connack()[0] == 0
        assert longer.subscribe("v1/devices/me/rpc/request/+") == [1]
        short.close()
        assert short.disconnected.wait(10)
        short_left = time.monotonic()
        longer.close()
        assert longer.disconnected.wait(10)
        longer_left = time.monotonic()
        broker.stop()
        _wait_until(short_left + 2.2)

        broker = BrokerThread(settings)
        # The one whose interval passed while the broker was down is ended at start-up; the
        # longer one is back, and its timer runs from its disconnection, not from now.
        assert expiries.keys.get(timeout=WAIT) == f"{keeper.id}/k"
        assert expiries.keys.get(timeout=WAIT) == f"{other.id}/k"
        assert time.monotonic() < longer_left + 4 + 3, "the session expired late"
        assert time.monotonic() >= longer_left + 4 - 0.5  # not before its interval
        scraped = generate_latest(broker.running.broker.metrics.registry).decode()
        assert "nanoiot_sessions_expired_total 2.0" in scraped  # at start-up or not
        again = _device(broker, certfile, 60)
        assert again.wait_connack()[0] == 0
        assert not again.session_present
        again.close()
    finally:
        broker.stop()
