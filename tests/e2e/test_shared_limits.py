"""Shared subscriptions (MQTT 5.0 §4.8.2) one device makes a broker hold, tried past their
limits: the share name's length (``max_share_name_length``) and the bytes naming the groups
a broker process holds (``max_shared_subscription_bytes``; in a cluster each message routed
to a node names its groups in one NATS message: ``tests/cluster/test_shared_names.py``).
Each refusal is counted, and the other devices go on as before. A real broker over mutual
TLS, raw MQTT 3.1.1 and 5 clients."""

from pathlib import Path

from broker.mqtt.packets import (
    MQTT_5,
    Connack,
    Connect,
    Suback,
    Subscribe,
    SubscribeRequest,
    Unsuback,
    Unsubscribe,
)
from broker.mqtt.shared import naming
from tests.e2e.harness import BrokerThread
from tests.e2e.limited_fleet import Fleet
from tests.e2e.peers import Raw

RPC = "v1/devices/me/rpc/request/+"  # the device's own: its ACL lets it subscribe
CANONICAL = "devices/greedy/rpc/request/+"  # as the broker keeps it


def _subscribe(raw: Raw, packet_id: int, *filters: str) -> tuple[int, ...]:
    raw.send(Subscribe(packet_id, tuple(SubscribeRequest(f, 1) for f in filters)))
    suback = raw.read()
    assert isinstance(suback, Suback)
    return suback.codes


def _connected_5(fleet: Fleet, client_id: str) -> Raw:
    broker = fleet.broker
    raw = Raw(broker.port, broker.server_cert, fleet.certfile, level=MQTT_5)
    raw.send(Connect(MQTT_5, client_id, True, 0))
    connack = raw.read()
    assert isinstance(connack, Connack)
    assert connack.code == 0
    return raw


def _groups(broker: BrokerThread) -> tuple[int, int]:
    async def read() -> tuple[int, int]:
        shared = broker.running.broker.shared
        return len(shared.groups), shared.named

    return broker.call(read())


def test_a_share_name_past_max_share_name_length_is_refused(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)  # the default: 128 characters
    try:
        longest, longer = "n" * 128, "n" * 129
        with _connected_5(fleet, "five") as raw:
            codes = _subscribe(raw, 1, f"$share/{longest}/{RPC}", f"$share/{longer}/{RPC}")
            assert codes == (1, 0x8F)  # 5.0 §3.9.3: Topic Filter Invalid (not here)
            assert _groups(fleet.broker) == (1, naming(longest, CANONICAL))
            raw.send(Unsubscribe(2, (f"$share/{longer}/{RPC}",)))
            assert raw.read() == Unsuback(2, (0x8F,))  # §3.11.3: as its SUBACK said
        with fleet.raw("three") as raw:
            assert _subscribe(raw, 1, f"$share/{longer}/{RPC}") == (0x80,)  # 3.1.1 §3.9.3
        assert fleet.hits("max_share_name_length") == 2
        fleet.bystander_round_trip()
    finally:
        fleet.broker.stop()


def test_shared_subscriptions_past_max_shared_subscription_bytes_are_refused(
    tmp_path: Path,
) -> None:
    each = naming("g000", CANONICAL)  # 34 bytes a group
    fleet = Fleet(tmp_path, max_shared_subscription_bytes=10 * each + each // 2)
    try:
        names = [f"$share/g{n:03}/{RPC}" for n in range(100)]
        with _connected_5(fleet, "five") as first, _connected_5(fleet, "second") as second:
            assert _subscribe(first, 1, *names) == (1,) * 10 + (0x97,) * 90  # quota exceeded
            assert _groups(fleet.broker) == (10, 10 * each)
            # Joining a group there is costs nothing: a member more, no name more.
            assert _subscribe(second, 1, names[0], names[10]) == (1, 0x97)
            first.send(Unsubscribe(2, tuple(names[1:3])))  # two groups gone
            assert first.read() == Unsuback(2, (0, 0))
            assert _subscribe(second, 2, *names[10:13]) == (1, 1, 0x97)
            first.send(Unsubscribe(3, (names[0],)))  # its group stays: the second is in it
            assert first.read() == Unsuback(3, (0,))
            assert _subscribe(first, 4, names[13]) == (0x97,)
            with fleet.raw("three") as raw:
                assert _subscribe(raw, 1, names[13]) == (0x80,)  # 3.1.1 §3.9.3
            assert _groups(fleet.broker) == (10, 10 * each)
        assert fleet.hits("max_shared_subscription_bytes") == 90 + 1 + 1 + 1 + 1
        fleet.bystander_round_trip()
    finally:
        fleet.broker.stop()
