"""Shared subscriptions (MQTT 5.0 §4.8.2) one device makes a broker hold, tried past their
limits: the share name's length (``max_share_name_length``), the bytes naming the groups
a broker process holds (``max_shared_subscription_bytes``; in a cluster each message routed
to a node names its groups in one NATS message: ``tests/cluster/test_shared_names.py``), and
one device's share of those (``max_shared_subscription_bytes_per_device``), released on every
way its sessions leave a group. Each refusal is counted, and the other devices go on as
before. A real broker over mutual TLS, raw MQTT 3.1.1 and 5 clients."""

import asyncio
import logging
from pathlib import Path

import pytest

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
from broker.mqtt.properties import Properties, Property
from broker.mqtt.shared import naming
from nanoiot.settings import Settings
from tests.e2e.expiries import Expiries
from tests.e2e.harness import WAIT, BrokerThread
from tests.e2e.limited_fleet import Fleet
from tests.e2e.peers import Raw

RPC = "v1/devices/me/rpc/request/+"  # the device's own: its ACL lets it subscribe
CANONICAL = "devices/greedy/rpc/request/+"  # as the broker keeps it


def _subscribe(raw: Raw, packet_id: int, *filters: str) -> tuple[int, ...]:
    raw.send(Subscribe(packet_id, tuple(SubscribeRequest(f, 1) for f in filters)))
    suback = raw.read()
    assert isinstance(suback, Suback)
    return suback.codes


def _connected_5(fleet: Fleet, client_id: str, *, bystander: bool = False, expiry: int = 0) -> Raw:
    broker = fleet.broker
    certfile = fleet.other_certfile if bystander else fleet.certfile
    raw = Raw(broker.port, broker.server_cert, certfile, level=MQTT_5)
    properties = Properties([(Property.SESSION_EXPIRY_INTERVAL, expiry)] if expiry else [])
    raw.send(Connect(MQTT_5, client_id, True, 0, properties=properties))
    connack = raw.read()
    assert isinstance(connack, Connack)
    assert connack.code == 0
    return raw


def _groups(broker: BrokerThread) -> tuple[int, int]:
    async def read() -> tuple[int, int]:
        shared = broker.running.broker.shared
        return len(shared.groups), shared.named

    return broker.call(read())


def _named_by_greedy(fleet: Fleet) -> int:
    """Bytes naming the groups the greedy device's sessions are in, as the broker counts them."""

    async def read() -> int:
        return fleet.broker.running.broker.shared.named_by(str(fleet.device.id))

    return fleet.broker.call(read())


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


def _default(setting: str) -> int:
    default = Settings.model_fields[setting].default
    assert isinstance(default, int)
    return default


def test_one_device_cannot_take_every_shared_subscription_a_broker_holds(tmp_path: Path) -> None:
    """The attack: with the longest share names, one device's persistent sessions (a
    hundred subscriptions each) would name every group the broker may hold, and no other
    device could make one. Its share is bounded; the others still make theirs."""
    fleet = Fleet(tmp_path)  # the defaults
    try:
        each = naming("n" * 128, CANONICAL)
        sessions = _default("max_shared_subscription_bytes") // each // 100 + 1  # enough
        codes: list[int] = []
        for s in range(sessions):  # its sessions stay, their clients gone
            names = [f"$share/{f'{s:03}{i:03}':n<128}/{RPC}" for i in range(100)]
            with fleet.raw(f"greedy-{s}") as raw:
                codes += _subscribe(raw, 1, *names)
        with _connected_5(fleet, "other", bystander=True) as other:
            assert _subscribe(other, 1, f"$share/{'o' * 128}/{RPC}") == (1,)
        granted = _default("max_shared_subscription_bytes_per_device") // each
        assert codes == [1] * granted + [0x80] * (len(codes) - granted)  # 3.1.1 §3.9.3
        assert _named_by_greedy(fleet) == granted * each
        assert fleet.hits("max_shared_subscription_bytes_per_device") == len(codes) - granted
        assert fleet.hits("max_shared_subscription_bytes") == 0
        fleet.bystander_round_trip()
    finally:
        fleet.broker.stop()


def test_a_devices_share_is_counted_once_a_group_and_released_when_it_leaves(
    tmp_path: Path, expiries: Expiries
) -> None:
    each = naming("g000", CANONICAL)  # 34 bytes a group
    fleet = Fleet(tmp_path, max_shared_subscription_bytes_per_device=3 * each + each // 2)
    try:
        n = [f"$share/g{i:03}/{RPC}" for i in range(8)]
        first = _connected_5(fleet, "first")
        with first, _connected_5(fleet, "second") as second:
            assert _subscribe(first, 1, *n[:4]) == (1, 1, 1, 0x97)  # 5.0: quota exceeded
            first.send(Subscribe(2, (SubscribeRequest(n[0], 0),)))  # new options: §3.8.4
            assert first.read() == Suback(2, (0,))
            # Its other session joining a group it is in costs nothing; a fourth still does.
            assert _subscribe(second, 1, n[0], n[3]) == (1, 0x97)
            assert _named_by_greedy(fleet) == 3 * each
            # UNSUBSCRIBE: a group is released when the last of its sessions leaves it.
            first.send(Unsubscribe(3, (n[0],)))
            assert first.read() == Unsuback(3, (0,))
            assert _subscribe(second, 2, n[3]) == (0x97,)  # second is still in n[0]
            first.send(Unsubscribe(4, (n[1],)))
            assert first.read() == Unsuback(4, (0,))
            assert _subscribe(second, 3, n[3]) == (1,)
            # Session end: first's (Clean Start, expiry 0) ends with its connection; its
            # client id connecting again comes after that.
            first.close()
            _connected_5(fleet, "first").close()
            assert _named_by_greedy(fleet) == 2 * each  # n[0] and n[3], second's
        with _connected_5(fleet, "second"):  # after the one before ended
            assert _named_by_greedy(fleet) == 0
        # Expiry (5.0 §3.1.2.11.2): a session kept for a second after its client left.
        with _connected_5(fleet, "expiring", expiry=1) as expiring:
            assert _subscribe(expiring, 1, *n[4:]) == (1, 1, 1, 0x97)
        assert expiries.keys.get(timeout=WAIT) == f"{fleet.device.id}/expiring"
        assert _named_by_greedy(fleet) == 0
        with _connected_5(fleet, "after") as after:
            assert _subscribe(after, 1, *n[5:]) == (1, 1, 1)
        assert fleet.hits("max_shared_subscription_bytes_per_device") == 4
        fleet.bystander_round_trip()
    finally:
        fleet.broker.stop()


def test_a_devices_share_counts_restored_sessions_and_a_take_over_releases_it(
    tmp_path: Path,
) -> None:
    each = naming("g000", CANONICAL)
    fleet = Fleet(tmp_path, max_shared_subscription_bytes_per_device=2 * each + each // 2)
    try:
        n = [f"$share/g{i:03}/{RPC}" for i in range(3)]
        with fleet.raw("kept") as raw:  # a persistent 3.1.1 session
            assert _subscribe(raw, 1, n[0], n[1]) == (1, 1)
        fleet.broker.stop()
        fleet.broker = BrokerThread(fleet.broker.settings)  # the same data directory

        async def restored() -> None:
            await asyncio.shield(fleet.broker.running.restoration.done)

        fleet.broker.call(restored())
        assert _named_by_greedy(fleet) == 2 * each  # restored at start: counted again
        with _connected_5(fleet, "new") as new:
            assert _subscribe(new, 1, n[2]) == (0x97,)
            # A take-over with CleanSession 1 ends the session it takes (3.1.1 §3.1.2.4).
            with Raw(fleet.broker.port, fleet.broker.server_cert, fleet.certfile) as taker:
                assert taker.connect(Connect(4, "kept", True, 0)) == Connack(False, 0)
                assert _named_by_greedy(fleet) == 0
                assert _subscribe(new, 2, n[2]) == (1,)
        assert fleet.hits("max_shared_subscription_bytes_per_device") == 1
    finally:
        fleet.broker.stop()


def test_groups_restored_past_a_lowered_bound_are_kept_and_new_ones_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A persistent session's groups, made under the bounds of its time, are restored whole
    after both bounds were lowered (MQTT 3.1.1 §4.1: the session keeps its subscriptions; the
    same for one taken over from, or adopted of, another cluster member): counted, logged,
    and no new group is made while the process and the device stay past their bounds;
    joining one there is costs nothing, as always."""
    each = naming("g000", CANONICAL)
    fleet = Fleet(tmp_path)  # the defaults
    try:
        n = [f"$share/g{i:03}/{RPC}" for i in range(4)]
        with fleet.raw("kept") as raw:  # a persistent 3.1.1 session
            assert _subscribe(raw, 1, *n[:3]) == (1, 1, 1)
        fleet.broker.stop()
        lowered = {
            "max_shared_subscription_bytes": each + each // 2,
            "max_shared_subscription_bytes_per_device": each + each // 2,
        }
        with caplog.at_level(logging.WARNING, logger="broker.registry"):
            fleet.broker = BrokerThread(fleet.broker.settings.model_copy(update=lowered))

            async def restored() -> None:
                await asyncio.shield(fleet.broker.running.restoration.done)

            fleet.broker.call(restored())
        assert _groups(fleet.broker) == (3, 3 * each)  # none dropped
        assert _named_by_greedy(fleet) == 3 * each
        assert "past max_shared_subscription_bytes " in caplog.text
        assert "past max_shared_subscription_bytes_per_device " in caplog.text
        with _connected_5(fleet, "new") as new:
            assert _subscribe(new, 1, n[3]) == (0x97,)  # a new group: quota exceeded
            assert _subscribe(new, 2, n[0]) == (1,)  # joining one: granted
        assert _groups(fleet.broker) == (3, 3 * each)
        assert fleet.hits("max_shared_subscription_bytes_per_device") == 1
    finally:
        fleet.broker.stop()
