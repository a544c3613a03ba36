"""One device can no longer grow the broker's memory: each limit, tried past its setting.

Every hit is counted (``nanoiot_limit_hits_total{limit=...}`` and ``$SYS/broker/limits/``)
and other devices go on as before. Unacknowledged outbound QoS 1 (the in-flight window, then
the queue) is tried in ``tests/broker/test_outgoing_buffer.py``.
"""

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from broker.mqtt.packets import (
    MQTT_5,
    Connack,
    Connect,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Pubrec,
    Suback,
    Subscribe,
    SubscribeRequest,
)
from broker.tls_protocol import TlsProtocol
from tests.e2e.limited_fleet import Fleet
from tests.e2e.peers import Raw
from tests.reliability.wire import client_context, tls_attempt

MakeFleet = Callable[..., Fleet]


@pytest.fixture
def make_fleet(tmp_path: Path) -> Iterator[MakeFleet]:
    made: list[Fleet] = []

    def make(**limits: int) -> Fleet:
        made.append(Fleet(tmp_path, **limits))
        return made[-1]

    try:
        yield make
    finally:
        for fleet in made:
            fleet.broker.stop()


def test_100000_subscriptions_are_refused_past_the_limit(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(max_subscriptions=100, max_filters_per_subscribe=1000)
    engine = fleet.broker.running.broker
    with fleet.raw("collector") as raw:
        for packet in range(100):  # 100 SUBSCRIBE packets of 1,000 filters each
            requests = tuple(
                SubscribeRequest(f"v1/devices/me/rpc/request/{packet}/{n}", 0) for n in range(1000)
            )
            raw.send(Subscribe(packet + 1, requests))
            suback = raw.read()
            assert isinstance(suback, Suback)
            granted = [code for code in suback.codes if code != 0x80]
            assert len(granted) == (100 if packet == 0 else 0)
        assert fleet.broker.call(_subscriptions(fleet)) == 100  # the trie holds 100, not 100,000
        fleet.bystander_round_trip()
    assert fleet.hits("max_subscriptions") == 99_900
    fleet.broker.call(engine.store.flush())
    [stored] = fleet.broker.call(fleet.broker.running.store.load_sessions())
    assert len(stored.subscriptions) == 100  # and so does the store
    assert engine.metrics.subscriptions_denied == 99_900


async def _subscriptions(fleet: Fleet) -> int:
    return fleet.broker.running.broker.router.subscription_count


@pytest.mark.parametrize(
    ("limits", "kept", "limit"),
    [
        ({"max_queued_messages": 10}, 10, "max_queued_messages"),
        ({"max_queued_bytes": 9 * 1100}, 9, "max_queued_bytes"),  # 1,024 + topic each
    ],
    ids=["messages", "bytes"],
)
def test_an_offline_queue_keeps_the_newest_within_its_limits(
    make_fleet: MakeFleet,
    limits: dict[str, int],
    kept: int,
    limit: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet = make_fleet(**limits)
    away = fleet.paho("away", clean_session=False)
    assert away.subscribe(("v1/devices/me/rpc/request/+", 1)) == [1]
    away.close()
    backend = fleet.backend()
    for n in range(50):
        payload = n.to_bytes(4, "big") + bytes(1020)
        backend.publish(f"devices/greedy/rpc/request/{n}", payload, qos=1)
    assert fleet.hits(limit) == 50 - kept
    back = fleet.paho("away", clean_session=False)
    try:
        numbers = [int.from_bytes(m.payload[:4], "big") for m in back.receive(kept)]
        assert numbers == list(range(50 - kept, 50))  # the oldest went first
        assert back.nothing_more()
    finally:
        back.close()
        backend.close()
    assert fleet.sys_value(f"$SYS/broker/limits/{limit}") == str(50 - kept).encode()
    # Logged once (then counted), not once per message dropped.
    drops = [r for r in caplog.records if "messages dropped" in r.getMessage()]
    assert len(drops) == 1, [r.getMessage() for r in drops]
    assert limit in drops[0].getMessage()
    assert "/away" in drops[0].getMessage()
    assert "dropped, the oldest queued" in drops[0].getMessage()


def test_retained_messages_on_distinct_topics_are_bounded_per_device(
    make_fleet: MakeFleet,
) -> None:
    fleet = make_fleet(max_retained_messages_per_device=20, max_retained_bytes_per_device=100_000)
    engine = fleet.broker.running.broker
    publisher = fleet.paho("retainer")
    publisher.publish("v1/devices/me/attributes/big", b"y" * 200_000, 1, retain=True)
    for n in range(30):
        publisher.publish(f"v1/devices/me/attributes/{n}", b"x" * 100, 1, retain=True)
    publisher.close()
    assert engine.retained.owned_by(str(fleet.device.id)) == 20
    assert fleet.hits("max_retained_messages_per_device") == 10
    assert fleet.hits("max_retained_bytes_per_device") == 1
    reader = fleet.backend()
    try:
        assert reader.subscribe("devices/greedy/#", qos=0) == [0]
        first_twenty = {reader.next_message().topic for _ in range(20)}
        assert first_twenty == {f"devices/greedy/attributes/{n}" for n in range(20)}
        assert reader.no_message()
    finally:
        reader.close()
    scraped = generate_latest(engine.metrics.registry).decode()
    assert 'nanoiot_limit_hits_total{limit="max_retained_messages_per_device"} 10.0' in scraped
    fleet.broker.call(fleet.broker.running.store.delete_device(fleet.device.id))
    fleet.broker.call(fleet.broker.running.follower.poll_once())
    assert engine.retained.owned_by(str(fleet.device.id)) == 0  # gone with the device


def test_inbound_qos2_without_pubrel_closes_past_the_limit(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(max_awaiting_pubrel=10)
    with fleet.raw("hoarder") as raw:
        for packet_id in range(1, 11):
            raw.send(Publish("v1/devices/me/telemetry", b"x" * 1000, 2, packet_id=packet_id))
            assert raw.read() == Pubrec(packet_id)
        raw.send(Publish("v1/devices/me/telemetry", b"one more", 2, packet_id=11))
        assert raw.closed()
    assert fleet.hits("max_awaiting_pubrel") == 1
    fleet.bystander_round_trip()


def test_connections_past_max_connections_are_closed_before_their_handshake(
    make_fleet: MakeFleet, caplog: pytest.LogCaptureFixture
) -> None:
    # Anyone can open connections, certificate or not: the listener holds max_connections.
    caplog.set_level(logging.WARNING, logger="broker.connection_limit")
    fleet = make_fleet(max_connections=3)
    held = [fleet.paho(f"held-{number}") for number in range(3)]
    attempt = tls_attempt(fleet.broker.port, client_context(fleet.broker.server_cert))
    assert attempt.version is None  # no handshake: closed as soon as it was accepted
    assert attempt.error is not None
    assert attempt.closed_by_server
    assert fleet.hits("max_connections") == 1
    assert "max_connections (3) reached: 1 connection(s) closed before any TLS work" in (
        caplog.text
    )
    opened = list(fleet.broker.running.listener.protocols)
    for client in held:
        client.close()
    fleet.broker.call(_all_closed(opened))
    fleet.bystander_round_trip()  # the connections they held are free again


async def _all_closed(protocols: list[TlsProtocol]) -> None:
    await asyncio.gather(*(protocol.wait_closed() for protocol in protocols))


def test_a_device_s_sessions_are_bounded_and_its_own_still_connect(make_fleet: MakeFleet) -> None:
    # Each client id a device makes up is a session kept for it (with subscriptions and a
    # queue), unless strict_client_id: max_sessions_per_device bounds them.
    fleet = make_fleet(max_sessions_per_device=3)
    for number in range(3):
        with fleet.raw(f"kept-{number}"):
            pass
    port, server_cert = fleet.broker.port, fleet.broker.server_cert
    with Raw(port, server_cert, fleet.certfile) as raw:
        raw.send(Connect(4, "one-more", False, 0))
        assert raw.read() == Connack(False, 3)  # 3.1.1 §3.2.2.3: server unavailable
        assert raw.closed()
    with Raw(port, server_cert, fleet.certfile, level=MQTT_5) as raw:
        raw.send(Connect(MQTT_5, "one-more-5", True, 0))
        connack = raw.read()
        assert isinstance(connack, Connack)
        assert connack.code == 0x97  # 5.0 §3.2.2.2: quota exceeded
        assert raw.closed()
    assert fleet.hits("max_sessions_per_device") == 2
    with Raw(port, server_cert, fleet.certfile) as raw:
        raw.send(Connect(4, "kept-1", False, 0))
        assert raw.read() == Connack(True, 0)  # its session is there: it always connects
    fleet.bystander_round_trip()


def test_refused_topics_are_kept_cut_and_logged_a_few_times_a_host(
    make_fleet: MakeFleet, caplog: pytest.LogCaptureFixture
) -> None:
    # Each topic a client may not use is logged once per connection: the connection kept the
    # whole topic to know it, up to 100 of 64 KiB (6 MB for as long as it lasted), and logged
    # 100 lines a connection.
    caplog.set_level(logging.INFO, logger="broker.client")
    fleet = make_fleet(auth_log_repeats=3)
    engine = fleet.broker.running.broker
    with fleet.raw("nosy") as raw:
        for number in range(100):  # another device's topics: refused
            raw.send(Publish(f"devices/bystander/{number}/" + "x" * 60_000, b"", 0))
        raw.send(Pingreq())
        assert raw.read() == Pingresp()  # every PUBLISH before it was handled (§4.6)
        [client] = engine.registry.live[str(fleet.device.id)]
        assert client._denied is not None
        assert len(client._denied) == 100
        assert sum(len(topic) for topic in client._denied) < 100 * 200  # 6,002,090 before
    lines = [r.getMessage() for r in caplog.records if "may not publish to" in r.getMessage()]
    assert len(lines) == 3  # auth_log_repeats a minute; then one summary line
    fleet.bystander_round_trip()


def test_retained_topics_of_4_byte_characters_count_their_utf8_bytes(
    make_fleet: MakeFleet,
) -> None:
    # §1.5.3: a topic is UTF-8. Counted in characters, a topic of emoji was a quarter of its
    # bytes, and a device kept four times max_retained_bytes_per_device of them.
    fleet = make_fleet(max_retained_bytes_per_device=100_000)
    engine = fleet.broker.running.broker
    topic = "v1/devices/me/" + "\U0001f600" * 10_000  # 40,014 bytes of UTF-8
    with fleet.raw("emoji") as raw:
        for n in range(1, 11):
            raw.send(Publish(f"{topic}{n}", b"x", 1, retain=True, packet_id=n))
            assert raw.read() == Puback(n)
    assert engine.retained.owned_by(str(fleet.device.id)) == 2  # 10 before
    assert fleet.hits("max_retained_bytes_per_device") == 8


def test_queued_topics_of_4_byte_characters_count_their_utf8_bytes(
    make_fleet: MakeFleet,
) -> None:
    # As retained ones: counted in characters, an offline queue held four times
    # max_queued_bytes of such topics.
    fleet = make_fleet(max_queued_bytes=100_000)
    away = fleet.paho("away", clean_session=False)
    assert away.subscribe(("v1/devices/me/#", 1)) == [1]
    away.close()
    topic = "v1/devices/me/" + "\U0001f600" * 10_000  # 40,014 bytes of UTF-8
    with fleet.raw("emoji") as raw:
        for n in range(1, 11):
            raw.send(Publish(f"{topic}{n}", b"x", 1, packet_id=n))
            assert raw.read() == Puback(n)
    assert fleet.hits("max_queued_bytes") == 8  # 2 kept (9 before)
