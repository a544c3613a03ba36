"""The per-client message loop without amqtt's four tasks (``broker.message_loop``).

Real broker, real TLS, a real paho client: SUBSCRIBE, UNSUBSCRIBE, a QoS 2 message (the only
kind that still travels amqtt's delivery queue) and DISCONNECT all go through our loop, and
amqtt's own loop is never entered.
"""

from pathlib import Path

import pytest
from amqtt.broker import Broker

from broker.message_loop import WakingQueue
from tests.e2e.conftest import broker_settings
from tests.e2e.harness import BrokerThread, device_client


async def test_a_waking_queue_calls_back_on_every_put() -> None:
    queue = WakingQueue()
    calls: list[int] = []
    queue.on_put = lambda: calls.append(queue.qsize())
    queue.put_nowait("a")
    await queue.put("b")
    assert calls == [1, 2]
    assert [queue.get_nowait(), queue.get_nowait()] == ["a", "b"]


def test_subscribe_unsubscribe_qos2_and_disconnect_take_our_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered: list[str] = []
    original = Broker._client_message_loop

    async def amqtts_loop(self: Broker, session: object, handler: object) -> None:
        entered.append("amqtt")
        await original(self, session, handler)

    monkeypatch.setattr(Broker, "_client_message_loop", amqtts_loop)
    broker = BrokerThread(broker_settings(tmp_path / "data"))
    try:
        device, _ = device_client(broker, tmp_path, "relay", client_id="r")
        try:
            assert device.wait_connack() == 0
            assert device.subscribe("v1/devices/me/attributes", qos=2) == [2]
            device.publish("v1/devices/me/attributes", b"on", qos=2)
            message = device.next_message()
            assert (message.payload, message.qos) == (b"on", 2)
            device.paho.unsubscribe("v1/devices/me/attributes")
            device.publish("v1/devices/me/telemetry", b"round trip", qos=2)
            device.publish("v1/devices/me/attributes", b"off", qos=2)
            assert device.no_message()
        finally:
            device.close()
    finally:
        broker.stop()
    assert entered == []
