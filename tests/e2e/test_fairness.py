"""One device's big SUBSCRIBEs do not stall the others: the filters past
``max_filters_per_subscribe`` are refused unread, and a read brings one turn's work at a time
(``broker.backpressure.take_turns``). Real TLS, real broker, raw MQTT clients."""

import threading
import time
from pathlib import Path

from broker.mqtt.encode import encode
from broker.mqtt.packets import (
    MQTT_5,
    Connect,
    Pingreq,
    Pingresp,
    Suback,
    Subscribe,
    SubscribeRequest,
    Unsuback,
    Unsubscribe,
)
from tests.e2e.harness import BrokerThread, broker_settings, write_pem
from tests.e2e.peers import Raw

# Measured on the 2-core test machine (load average 4 to 5), the longest PINGRESP wait while
# one device sent SUBSCRIBEs of one-character filters: 250,000 a packet, 2.3 to 2.4 s before
# the bound, 0.13 s with it; 500,000 (here), 4.6 to 5.4 s before, 0.2 to 0.57 s with it.
MOST_DELAY = 2.0
FLOOD_PACKETS = 3
FILTERS = 500_000  # one-character filters, 2 MB a packet


class Devices:
    def __init__(self, tmp_path: Path, **settings: int) -> None:
        values = broker_settings(tmp_path / "data", **settings)
        self.broker = BrokerThread(values)
        self.certs: dict[str, Path] = {}
        for name in ("flooder", "bystander"):
            _, issued = self.broker.provision(name)
            self.certs[name] = write_pem(tmp_path, issued, name)

    def raw(self, name: str, client_id: str, level: int = 4) -> Raw:
        raw = Raw(self.broker.port, self.broker.server_cert, self.certs[name], level)
        raw.connect(Connect(level, client_id, True, 0))
        return raw

    def hits(self) -> int:
        return self.broker.running.broker.metrics.limit_hits["max_filters_per_subscribe"]


def _requests(count: int, topic: str = "v1/devices/me/a/{n}") -> tuple[SubscribeRequest, ...]:
    return tuple(SubscribeRequest(topic.format(n=n), 1) for n in range(count))


def test_filters_past_the_bound_are_refused_each(tmp_path: Path) -> None:
    devices = Devices(tmp_path, max_filters_per_subscribe=10)
    try:
        with devices.raw("flooder", "v311") as raw:
            raw.send(Subscribe(1, _requests(15)))
            assert raw.read() == Suback(1, (1,) * 10 + (0x80,) * 5)  # 3.1.1 §3.9.3
            filters = tuple(f"v1/devices/me/a/{n}" for n in range(11))
            raw.send(Unsubscribe(2, filters))
            assert raw.closed()  # its UNSUBACK could not say which are left (§3.11.3)
        with devices.raw("flooder", "v5", MQTT_5) as raw:
            raw.send(Subscribe(1, _requests(15)))
            suback = raw.read()
            assert isinstance(suback, Suback)
            assert suback.codes == (1,) * 10 + (0x97,) * 5  # 5.0 §3.9.3: quota exceeded
            raw.send(Unsubscribe(2, tuple(f"v1/devices/me/a/{n}" for n in range(12))))
            unsuback = raw.read()
            assert isinstance(unsuback, Unsuback)
            assert unsuback.codes == (0,) * 10 + (0x83,) * 2  # 5.0 §3.11.3
        assert devices.hits() == 4
    finally:
        devices.broker.stop()


def _flood(raw: Raw) -> None:
    """SUBSCRIBEs of one-character filters, two at a time in flight so that the broker
    always has the next one to read."""
    packet = Subscribe(1, (SubscribeRequest("a", 0),) * FILTERS)
    data = encode(packet, raw.level)
    raw.send(data)
    for _ in range(FLOOD_PACKETS - 1):
        raw.send(data)
        assert isinstance(raw.read(), Suback)
    assert isinstance(raw.read(), Suback)


def _pings_while(flood: threading.Thread, other: Raw) -> list[float]:
    """How long each of ``other``'s PINGREQs waited for its PINGRESP while ``flood`` ran."""
    flood.start()
    delays: list[float] = []
    while flood.is_alive():
        started = time.monotonic()
        other.send(Pingreq())
        assert other.read() == Pingresp()
        delays.append(time.monotonic() - started)
        flood.join(0.01)  # a probe every 10 ms; a busier one would take the flood's GIL
    assert len(delays) > 1
    return delays


def test_a_flood_of_big_subscribes_does_not_delay_another_device(tmp_path: Path) -> None:
    devices = Devices(tmp_path, max_packet_size=FILTERS * 4 + 16)
    try:
        with devices.raw("flooder", "f") as flooder, devices.raw("bystander", "b") as other:
            flood = threading.Thread(target=_flood, args=(flooder,), daemon=True)
            delays = _pings_while(flood, other)
        assert max(delays) < MOST_DELAY, f"PINGRESP after {max(delays):.2f} s"
        assert devices.hits() == FLOOD_PACKETS
    finally:
        devices.broker.stop()


def _many_subscribes(raw: Raw, count: int) -> None:
    """``count`` SUBSCRIBEs of 100 filters sent at once: reads of many packets each, which
    the broker handles a turn at a time; every SUBACK comes, in order (§4.6)."""
    raw.send(b"".join(encode(Subscribe(n, _requests(100, "a/{n}")), raw.level)
                      for n in range(1, count + 1)))  # fmt: skip
    for n in range(1, count + 1):
        suback = raw.read()
        assert isinstance(suback, Suback)
        assert suback.packet_id == n


def test_a_read_of_many_subscribes_is_handled_in_turns(tmp_path: Path) -> None:
    devices = Devices(tmp_path)
    try:
        with devices.raw("flooder", "f") as flooder, devices.raw("bystander", "b") as other:
            flood = threading.Thread(target=_many_subscribes, args=(flooder, 2000), daemon=True)
            delays = _pings_while(flood, other)
            flooder.send(Pingreq())
            assert flooder.read() == Pingresp()  # read on after the turns
        assert max(delays) < MOST_DELAY, f"PINGRESP after {max(delays):.2f} s"
        assert devices.hits() == 0
    finally:
        devices.broker.stop()
