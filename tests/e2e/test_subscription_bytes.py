"""The memory one device's topic filters make a broker process hold, tried past its bounds:
one session's (``max_subscription_bytes``) and all the device's sessions' together
(``max_subscription_bytes_per_device``), each filter counted as documented (its UTF-8 bytes
twice, 288 bytes a level, 384 more: ``broker.subscription_bytes``). Refused as past
``max_subscriptions`` (3.1.1 SUBACK 0x80, 5.0 0x97 Quota exceeded, §3.9.3), counted, logged;
released by UNSUBSCRIBE and the session's end, not counted twice by a take-over, and a
persistent session read back from the store keeps all it had. Then the attack it stops: one
certificate, a hundred persistent sessions, a hundred 127-level filters each, measured in
the broker's resident memory. A real broker over mutual TLS, raw MQTT 3.1.1 and 5 clients."""

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from broker.mqtt.packets import (
    MQTT_5,
    Connack,
    Connect,
    Publish,
    Suback,
    Subscribe,
    SubscribeRequest,
    Unsuback,
    Unsubscribe,
)
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import BrokerThread
from tests.e2e.limited_fleet import Fleet
from tests.e2e.peers import Raw

ME, CANONICAL = "v1/devices/me/rpc/request", "devices/greedy/rpc/request"


def _cost(canonical: str) -> int:
    """What a filter is counted as, as the settings document it."""
    return 2 * len(canonical.encode()) + 288 * (canonical.count("/") + 1) + 384


EACH = _cost(f"{CANONICAL}/000")  # 1,880 bytes: every filter below is this long
FILTERS = [f"{ME}/{n:03}" for n in range(20)]


def _subscribe(raw: Raw, packet_id: int, *filters: str, qos: int = 1) -> tuple[int, ...]:
    raw.send(Subscribe(packet_id, tuple(SubscribeRequest(f, qos) for f in filters)))
    suback = raw.read()
    assert isinstance(suback, Suback)
    return suback.codes


def _unsubscribe(raw: Raw, packet_id: int, *filters: str) -> None:
    raw.send(Unsubscribe(packet_id, filters))
    assert isinstance(raw.read(), Unsuback)


def _connect(fleet: Fleet, client_id: str, level: int, *, clean: bool = False) -> Raw:
    """A session of the greedy device: MQTT 3.1.1 (persistent unless ``clean``), or 5 with
    Clean Start (ending with its connection unless not ``clean``: then kept an hour)."""
    raw = Raw(fleet.broker.port, fleet.broker.server_cert, fleet.certfile, level=level)
    kept = Properties([(Property.SESSION_EXPIRY_INTERVAL, 3600)])
    properties = kept if level == MQTT_5 and not clean else Properties([])
    raw.send(Connect(level, client_id, clean or level == MQTT_5, 0, properties=properties))
    connack = raw.read()
    assert isinstance(connack, Connack)
    assert connack.code == 0
    return raw


def _counted(fleet: Fleet, client_id: str | None = None) -> int:
    """The bytes counted for the greedy device, or for one of its sessions."""
    device = str(fleet.device.id)

    async def read() -> int:
        broker = fleet.broker.running.broker
        if client_id is None:
            return broker.subscription_bytes.of_device(device)
        return broker.registry.sessions[(device, client_id)].subscription_bytes

    return fleet.broker.call(read())


@pytest.mark.parametrize(("level", "refused"), [(4, 0x80), (MQTT_5, 0x97)], ids=["3.1.1", "5"])
def test_one_sessions_filters_past_max_subscription_bytes_are_refused(
    tmp_path: Path, level: int, refused: int, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = Fleet(tmp_path, max_subscription_bytes=3 * EACH + EACH // 2)
    try:
        with (
            caplog.at_level(logging.INFO, logger="broker.client"),
            _connect(fleet, "one", level) as raw,
        ):
            assert _subscribe(raw, 1, *FILTERS[:4]) == (1, 1, 1, refused)
            assert _counted(fleet, "one") == _counted(fleet) == 3 * EACH
            # New options for a filter it holds (§3.8.4): nothing more held, never refused.
            assert _subscribe(raw, 2, FILTERS[0], qos=0) == (0,)
            # A filter alone past the bound: 127 levels, 38 KB counted.
            deep = f"{ME}/{'/'.join(['ab'] * 122)}"
            _unsubscribe(raw, 3, *FILTERS[:3])
            assert _counted(fleet, "one") == 0  # released
            assert _subscribe(raw, 4, deep, *FILTERS[3:7]) == (refused, 1, 1, 1, refused)
            assert _counted(fleet, "one") == 3 * EACH
        assert fleet.hits("max_subscription_bytes") == 3
        assert fleet.hits("max_subscription_bytes_per_device") == 0
        assert f"may not subscribe (max_subscription_bytes {3 * EACH + EACH // 2}) to" in (
            caplog.text
        )
        fleet.bystander_round_trip()
    finally:
        fleet.broker.stop()


def test_a_devices_sessions_together_stop_at_max_subscription_bytes_per_device(
    tmp_path: Path,
) -> None:
    fleet = Fleet(tmp_path, max_subscription_bytes_per_device=5 * EACH + EACH // 2)
    a = _connect(fleet, "a", 4)  # persistent
    b = _connect(fleet, "b", MQTT_5, clean=True)
    try:
        assert _subscribe(a, 1, *FILTERS[:3]) == (1, 1, 1)
        assert _subscribe(b, 1, *FILTERS[3:6]) == (1, 1, 0x97)
        assert _counted(fleet) == 5 * EACH
        # A take-over: the same session on a new connection holds what it held, once.
        a.close()
        a = _connect(fleet, "a", 4)
        assert _counted(fleet) == 5 * EACH
        assert _subscribe(a, 2, FILTERS[0], FILTERS[6]) == (1, 0x80)
        _unsubscribe(b, 2, FILTERS[3])
        assert _subscribe(a, 3, FILTERS[6]) == (1,)
        assert _counted(fleet, "a") == 4 * EACH
        # Another device has a bound of its own.
        with Raw(fleet.broker.port, fleet.broker.server_cert, fleet.other_certfile) as other:
            other.connect(Connect(4, "other", True, 0))
            assert _subscribe(other, 1, *FILTERS[:5]) == (1,) * 5
    finally:
        a.close()
        b.close()
    try:
        # b's session ended with its connection: its client id connecting again comes after.
        with _connect(fleet, "b", MQTT_5, clean=True) as b:
            assert _counted(fleet) == 4 * EACH
            assert _subscribe(b, 1, *FILTERS[7:9]) == (1, 0x97)
            # A take-over with CleanSession 1 ends the session it takes (3.1.1 §3.1.2.4).
            with _connect(fleet, "a", 4, clean=True):
                assert _counted(fleet) == EACH  # b's
        assert fleet.hits("max_subscription_bytes_per_device") == 3
        fleet.bystander_round_trip()
    finally:
        fleet.broker.stop()


def test_sessions_restored_past_lowered_bounds_keep_their_filters_and_take_no_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Persistent sessions' filters, made under the bounds of their time, are restored
    whole after both were lowered (3.1.1 §4.1: the session keeps its subscriptions; the same
    for one taken over from, or adopted of, another cluster member): counted, logged, still
    routed to, and no new filter is taken while the session or device stays past them."""
    fleet = Fleet(tmp_path)  # the defaults
    try:
        with _connect(fleet, "kept", 4) as raw:
            assert _subscribe(raw, 1, *FILTERS[:4]) == (1,) * 4
        with _connect(fleet, "five", MQTT_5) as raw:
            assert _subscribe(raw, 1, *FILTERS[4:6]) == (1, 1)
        fleet.broker.stop()
        lowered = {
            "max_subscription_bytes": 2 * EACH + EACH // 2,
            "max_subscription_bytes_per_device": 3 * EACH + EACH // 2,
        }
        with caplog.at_level(logging.WARNING, logger="broker.registry"):
            fleet.broker = BrokerThread(fleet.broker.settings.model_copy(update=lowered))

            async def restored() -> int:
                running = fleet.broker.running
                await asyncio.shield(running.restoration.done)
                return running.broker.router.subscription_count

            assert fleet.broker.call(restored()) == 6  # none dropped
        assert _counted(fleet) == 6 * EACH
        assert _counted(fleet, "kept") == 4 * EACH
        assert "1 restored sessions hold filters counted past max_subscription_bytes " in (
            caplog.text
        )
        assert "restored sessions of 1 devices hold filters counted past " in caplog.text
        with _connect(fleet, "kept", 4) as kept, _connect(fleet, "new", MQTT_5) as new:
            assert _subscribe(kept, 2, FILTERS[3], FILTERS[9]) == (1, 0x80)
            assert _subscribe(new, 1, FILTERS[9]) == (0x97,)
            sender = fleet.paho("sender")  # the last filter restored still routes
            try:
                sender.publish(f"{ME}/003", b"kept", 1)
            finally:
                sender.close()
            delivered = kept.read()
            assert isinstance(delivered, Publish)
            assert (delivered.topic, delivered.payload) == (f"{ME}/003", b"kept")
        assert fleet.hits("max_subscription_bytes") == 1
        assert fleet.hits("max_subscription_bytes_per_device") == 1
    finally:
        fleet.broker.stop()


def _resident() -> int:
    """This process's resident memory in bytes (the broker's thread runs in it)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def _fitting(tail: str) -> int:
    """How many of the attack's filters fit, in the order they are sent, at the default
    bounds: 512 KiB a session, 1 MiB the device."""
    fitting, device = 0, 1024 * 1024
    for session in range(100):
        room = 512 * 1024
        for n in range(100):
            counted = _cost(f"{CANONICAL}/{session}/{n}/{tail}")
            if counted <= min(room, device):
                room, device, fitting = room - counted, device - counted, fitting + 1
    return fitting


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_one_certificate_pins_no_more_than_its_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attack at the default settings: max_sessions_per_device (100) persistent
    sessions, each subscribing max_subscriptions (100) distinct filters of 127 levels
    (max_topic_levels 128), 36 KB of trie each. Before the byte bounds: 10,000 filters, about
    360 MB held for as long as the sessions live; now the device's first 27."""
    fleet = Fleet(tmp_path)
    try:
        # The broker's paths and its store warmed up, by another device.
        with Raw(fleet.broker.port, fleet.broker.server_cert, fleet.other_certfile) as raw:
            raw.connect(Connect(4, "warm", False, 0))
            assert _subscribe(raw, 1, *FILTERS) == (1,) * 20
            _unsubscribe(raw, 2, *FILTERS)
        before = _resident()
        tail = "/".join(f"{n:02}" for n in range(121))  # 127 levels in the canonical form
        granted = 0
        for session in range(100):
            with fleet.raw(f"s{session}") as raw:
                filters = [f"{ME}/{session}/{n}/{tail}" for n in range(100)]
                granted += sum(code != 0x80 for code in _subscribe(raw, 1, *filters))
        grown = _resident() - before
        with capsys.disabled():
            print(f"\nRSS {before / 2**20:.1f} MiB -> +{grown / 2**20:.1f} MiB, {granted} granted")
        assert granted == _fitting(tail) == 27
        assert _counted(fleet) <= 1024 * 1024
        assert grown < 24 * 2**20
        hits = fleet.hits("max_subscription_bytes") + fleet.hits(
            "max_subscription_bytes_per_device"
        )
        assert hits == 10_000 - granted
        fleet.bystander_round_trip()
    finally:
        fleet.broker.stop()
