"""SIGKILL of ``nanoiot serve`` loses no acknowledged QoS 1 message of a persistent session.

MQTT 3.1.1 §3.1.2.4: a session with CleanSession 0 keeps its subscriptions and the QoS 1
messages that arrive while its client is away; §4.3.2: once the server has sent PUBACK it
owns the message. The broker is killed the moment the publisher sees its last PUBACK, so a
queued message not yet durable at PUBACK would be lost. After the restart the subscriber gets
every message once; what it acknowledged never comes back, and what it did not comes back
with DUP set (§3.3.1.1).
"""

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from queue import Empty

import paho.mqtt.client as mqtt
import pytest

from storage.session_data import StoredSession
from tests.e2e.harness import WAIT
from tests.reliability.serve_process import (
    Fleet,
    ServeProcess,
    Session,
    payloads,
    wait_for_store,
)

RPC = "v1/devices/me/rpc/request/+"
COUNT = 120


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path) as started:
        yield started


def publish_then_kill(fleet: Fleet, broker: ServeProcess, sent: list[bytes]) -> None:
    """The backend publishes ``sent`` at QoS 1; SIGKILL the moment the last PUBACK arrives."""
    backend = fleet.backend(broker)
    acknowledged: list[int] = []

    def on_puback(_c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        acknowledged.append(mid)
        if len(acknowledged) == len(sent):
            os.kill(broker.process.pid, signal.SIGKILL)

    backend.paho.on_publish = on_puback
    infos = [
        backend.paho.publish(f"devices/sensor/rpc/request/{n}", payload, qos=1)
        for n, payload in enumerate(sent)
    ]
    assert broker.process.wait(WAIT) == -signal.SIGKILL
    assert all(info.is_published() for info in infos), "killed before every PUBACK"


def queue_for_offline_sensor(fleet: Fleet, broker: ServeProcess, sent: list[bytes]) -> None:
    """The sensor subscribes and leaves; the backend publishes ``sent``; SIGKILL at the last
    PUBACK."""
    sensor = fleet.sensor_session(broker)
    assert sensor.wait_connack() == (0, False)
    assert sensor.subscribe(RPC) == [1]
    sensor.close()
    publish_then_kill(fleet, broker, sent)


def assert_in_order(received: list[mqtt.MQTTMessage], sent: list[bytes], *, dup: bool) -> None:
    assert [m.payload for m in received] == sent
    assert [m.topic for m in received] == [
        f"v1/devices/me/rpc/request/{n}" for n in range(len(sent))
    ]
    assert {(m.qos, m.dup, m.retain) for m in received} == {(1, dup, False)}


def test_acknowledged_messages_survive_sigkill_and_come_once(fleet: Fleet) -> None:
    sent = payloads(COUNT)
    queue_for_offline_sensor(fleet, fleet.start(), sent)

    broker = fleet.start()
    sensor = fleet.sensor_session(broker)
    assert sensor.wait_connack() == (0, True)
    assert_in_order(sensor.receive(COUNT), sent, dup=False)
    wait_for_store(fleet.data, "the acknowledged messages deleted", lambda s: not s[0].queued)
    sensor.close()
    broker.kill()

    broker = fleet.start()
    sensor = fleet.sensor_session(broker)
    assert sensor.wait_connack() == (0, True)
    fleet.backend(broker).paho.publish("devices/sensor/rpc/request/new", b"after", qos=1)
    first = sensor.receive(1)[0]  # the subscription survived two restarts
    assert (first.topic, first.payload, first.dup) == (
        "v1/devices/me/rpc/request/new", b"after", False,
    )  # fmt: skip
    assert sensor.no_message()


def test_unacknowledged_messages_come_back_with_dup_after_sigkill(fleet: Fleet) -> None:
    sent = payloads(20)
    queue_for_offline_sensor(fleet, fleet.start(), sent)

    broker = fleet.start()
    silent = fleet.sensor_session(broker, manual_ack=True)  # receives, never acknowledges
    assert silent.wait_connack() == (0, True)
    assert_in_order(silent.receive(len(sent)), sent, dup=False)
    broker.kill()

    broker = fleet.start()
    sensor = fleet.sensor_session(broker)
    assert sensor.wait_connack() == (0, True)
    assert_in_order(sensor.receive(len(sent)), sent, dup=True)
    wait_for_store(fleet.data, "the acknowledged messages deleted", lambda s: not s[0].queued)


def only_attributes(sessions: list[StoredSession]) -> bool:
    return bool(sessions) and [sub.topic_filter for sub in sessions[0].subscriptions] == [
        "devices/sensor/attributes"
    ]


def test_unsubscribe_and_clean_session_survive_sigkill(fleet: Fleet) -> None:
    broker = fleet.start()
    sensor = fleet.sensor_session(broker)
    assert sensor.wait_connack() == (0, False)
    assert sensor.subscribe(RPC) == [1]
    assert sensor.subscribe("v1/devices/me/attributes") == [1]
    sensor.unsubscribe(RPC)
    sensor.close()
    wait_for_store(fleet.data, "one subscription left", only_attributes)
    broker.kill()

    broker = fleet.start()
    backend = fleet.backend(broker)
    backend.paho.publish("devices/sensor/rpc/request/1", b"unsubscribed", qos=1)
    backend.paho.publish("devices/sensor/attributes", b"subscribed", qos=1).wait_for_publish(WAIT)
    sensor = fleet.sensor_session(broker)
    assert sensor.wait_connack() == (0, True)
    first = sensor.receive(1)[0]
    assert (first.topic, first.payload) == ("v1/devices/me/attributes", b"subscribed")
    assert sensor.no_message()
    sensor.close()

    # §3.1.2.4: CleanSession 1 discards the session, in the store too.
    clean = fleet.sensor_session(broker, clean_session=True)
    assert clean.wait_connack() == (0, False)
    wait_for_store(fleet.data, "no session", lambda s: s == [])
    broker.kill()
    broker = fleet.start()
    again = fleet.sensor_session(broker)
    assert again.wait_connack() == (0, False)
    wait_for_store(fleet.data, "a new, empty session", lambda s: bool(s) and not s[0].subscriptions)


def test_sigkill_with_an_online_persistent_subscriber_loses_nothing(fleet: Fleet) -> None:
    """In flight to a connected persistent subscriber is in the store too (§4.4): what the
    broker acknowledged to the publisher reaches the subscriber after a SIGKILL, whether it
    was sent before (again, with DUP) or still waiting behind the in-flight window."""
    broker = fleet.start()
    silent = fleet.sensor_session(broker, manual_ack=True)  # online, acknowledges nothing
    assert silent.wait_connack() == (0, False)
    assert silent.subscribe(RPC) == [1]
    sent = payloads(COUNT)
    publish_then_kill(fleet, broker, sent)
    before = _drain(silent)
    assert before == sent[: len(before)]

    broker = fleet.start()
    sensor = fleet.sensor_session(broker)
    assert sensor.wait_connack() == (0, True)
    received = sensor.receive(COUNT)
    assert [m.payload for m in received] == sent  # all of them, in order
    assert all(m.dup for m in received[: len(before)])  # those sent before come again with DUP
    wait_for_store(fleet.data, "every message acknowledged", lambda s: not s[0].queued)


def test_sigkill_while_an_online_subscriber_acknowledges_some_loses_nothing(
    fleet: Fleet,
) -> None:
    """A subscriber that acknowledges every other message: after SIGKILL the others come
    again, and everything the publisher had acknowledged arrives at least once."""
    broker = fleet.start()
    sensor = fleet.sensor_session(broker, manual_ack=True)
    assert sensor.wait_connack() == (0, False)
    assert sensor.subscribe(RPC) == [1]
    before: list[bytes] = []

    def ack_every_other(client: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        before.append(bytes(message.payload))
        if len(before) % 2:
            client.ack(message.mid, message.qos)

    sensor.paho.on_message = ack_every_other
    sent = payloads(COUNT)
    publish_then_kill(fleet, broker, sent)
    sensor.close()

    broker = fleet.start()
    again = fleet.sensor_session(broker)
    assert again.wait_connack() == (0, True)
    after = _drain(again)
    assert set(before) | set(after) == set(sent)  # nothing acknowledged is lost
    assert set(before[1::2]) <= set(after)  # what it did not acknowledge came again


def _drain(session: Session) -> list[bytes]:
    """Every message that arrives until none comes for half a second (its broker is gone
    or idle: nothing is on its way any more)."""
    got: list[bytes] = []
    while True:
        try:
            got.append(bytes(session.messages.get(timeout=0.5).payload))
        except Empty:
            return got
