"""What the queues of all one device's sessions make a broker process hold, tried past its
bounds (``max_queued_bytes_per_device``, ``max_queued_messages_per_device``): several
persistent sessions of one certificate, each subscribed to its own topic while its client is
away. Past a bound the queue that grows drops its oldest (with nothing of its own queued,
the new message), as past ``max_queued_bytes``; each drop counted and logged once per device.
Another device has a bound of its own, a delivered message gives its bytes back, and sessions
read back from the store keep all they had. Then the attack it stops, measured in the
broker's resident memory. A real broker over mutual TLS, paho clients."""

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import BrokerThread
from tests.e2e.limited_fleet import Fleet
from tests.e2e.peers import Paho

BODY = 1000  # payload bytes: a 4-byte number, then zeros
SIZE = BODY + len("v1/devices/me/rpc/request/0")  # as counted: payload and topic (3.1.1)


def _away(fleet: Fleet, client_id: str, topic: int, *, certfile: Path | None = None) -> None:
    """A persistent session subscribed to its own topic, its client gone."""
    client = Paho(fleet.broker.port, fleet.broker.server_cert, certfile or fleet.certfile,
                  client_id, clean_session=False)  # fmt: skip
    try:
        assert client.connack()[0] == 0
        assert client.subscribe((f"v1/devices/me/rpc/request/{topic}", 1)) == [1]
    finally:
        client.close()


def _publish(fleet: Fleet, *sent: tuple[int, int], device: str = "greedy") -> None:
    """QoS 1 messages from the backend: (topic, number) each, acknowledged to it."""
    backend = fleet.backend()
    try:
        for topic, number in sent:
            payload = number.to_bytes(4, "big") + bytes(BODY - 4)
            backend.publish(f"devices/{device}/rpc/request/{topic}", payload, qos=1)
    finally:
        backend.close()


def _received(fleet: Fleet, client_id: str, count: int) -> list[int]:
    """The numbers of the messages the session kept, its client back for them."""
    back = fleet.paho(client_id, clean_session=False)
    try:
        numbers = [int.from_bytes(m.payload[:4], "big") for m in back.receive(count)]
        assert back.nothing_more()
        return numbers
    finally:
        back.close()


def _queued(fleet: Fleet, device: str | None = None) -> tuple[int, int]:
    """The messages and bytes the device's sessions' queues hold (the greedy one's)."""
    device = device or str(fleet.device.id)

    async def read() -> tuple[int, int]:
        registry = fleet.broker.running.broker.registry
        mine = [s for key, s in registry.sessions.items() if key[0] == device]
        return sum(len(s.queue) for s in mine), sum(s.queued_bytes for s in mine)

    return fleet.broker.call(read())


def _tally(fleet: Fleet) -> tuple[int, int]:
    async def read() -> tuple[int, int]:
        queues = fleet.broker.running.broker.registry.device_queues
        assert queues is not None
        return queues.of_device(str(fleet.device.id))

    return fleet.broker.call(read())


def test_a_devices_sessions_together_stop_at_max_queued_bytes_per_device(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = Fleet(tmp_path, max_queued_bytes_per_device=3 * SIZE + SIZE // 2)
    try:
        for n in range(3):
            _away(fleet, f"s{n}", n)
        with caplog.at_level(logging.WARNING, logger="broker.router"):
            # Three fit; the fourth makes s1 drop its oldest (2), the fifth finds s2 with
            # nothing of its own queued: it is dropped itself.
            _publish(fleet, (0, 0), (0, 1), (1, 2), (1, 3), (2, 4))
        assert _queued(fleet) == (3, 3 * SIZE)
        assert fleet.hits("max_queued_bytes_per_device") == 2
        assert fleet.hits("max_queued_bytes") == 0
        assert _tally(fleet) == (3, 3 * SIZE)
        # Another device: a bound of its own (its three messages fit).
        other = fleet.other_certfile
        _away(fleet, "b0", 0, certfile=other)
        _publish(fleet, (0, 10), (0, 11), (0, 12), device="bystander")
        assert _queued(fleet, str(fleet.bystander.id)) == (3, 3 * SIZE)
        assert fleet.hits("max_queued_bytes_per_device") == 2
        # Delivered: s0's two go, and give their bytes back to the device.
        assert _received(fleet, "s0", 2) == [0, 1]
        assert _tally(fleet) == _queued(fleet) == (1, SIZE)
        _publish(fleet, (2, 5), (2, 6))
        assert fleet.hits("max_queued_bytes_per_device") == 2
        assert _received(fleet, "s1", 1) == [3]
        assert _received(fleet, "s2", 2) == [5, 6]
        assert _tally(fleet) == (0, 0)
        assert fleet.sys_value("$SYS/broker/limits/max_queued_bytes_per_device") == b"2"
        drops = [r.getMessage() for r in caplog.records if "messages dropped" in r.getMessage()]
        assert len(drops) == 1, drops  # once a minute per device, for all its sessions
        assert f"device {fleet.device.id}: 1 messages dropped, the oldest queued" in drops[0]
        assert "max_queued_bytes_per_device" in drops[0]
    finally:
        fleet.broker.stop()


def test_max_queued_messages_per_device_and_a_sessions_end_give_back(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, max_queued_messages_per_device=2)
    try:
        _away(fleet, "s0", 0)
        _away(fleet, "s1", 1)
        _publish(fleet, (0, 0), (1, 1), (1, 2), (0, 3))
        assert fleet.hits("max_queued_messages_per_device") == 2
        assert _tally(fleet) == _queued(fleet) == (2, 2 * SIZE)
        # s1 ends (CleanSession 1 takes it, 3.1.1 §3.1.2.4): its queue's bytes go with it.
        fleet.paho("s1").close()
        assert _tally(fleet) == _queued(fleet) == (1, SIZE)
        _publish(fleet, (0, 4))
        assert _received(fleet, "s0", 2) == [3, 4]
        assert fleet.hits("max_queued_messages_per_device") == 2
    finally:
        fleet.broker.stop()


def test_sessions_restored_past_a_lowered_bound_keep_their_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages acknowledged to their publishers and queued under the bounds of their time
    are read back whole (3.1.1 §4.1), counted and logged; the device's new ones are then
    dropped until enough are delivered, or push out the oldest of the queue they join."""
    fleet = Fleet(tmp_path)  # the defaults
    try:
        _away(fleet, "s0", 0)
        _away(fleet, "s1", 1)
        _publish(fleet, (0, 0), (0, 1), (1, 2), (1, 3))
        fleet.broker.stop()
        lowered = {"max_queued_bytes_per_device": 2 * SIZE + SIZE // 2}
        with caplog.at_level(logging.WARNING, logger="broker.registry"):
            fleet.broker = BrokerThread(fleet.broker.settings.model_copy(update=lowered))

            async def restored() -> None:
                await asyncio.shield(fleet.broker.running.restoration.done)

            fleet.broker.call(restored())
        assert _tally(fleet) == _queued(fleet) == (4, 4 * SIZE)
        assert "restored sessions of 1 devices hold queues past " in caplog.text
        _publish(fleet, (1, 4))  # s0 holds the bound alone: it is dropped
        assert fleet.hits("max_queued_bytes_per_device") == 1
        assert _received(fleet, "s0", 2) == [0, 1]
        _publish(fleet, (1, 5))  # now s1 makes room: its oldest goes
        assert fleet.hits("max_queued_bytes_per_device") == 2
        assert _received(fleet, "s1", 2) == [3, 5]
    finally:
        fleet.broker.stop()


def test_a_queue_read_back_past_the_bound_keeps_its_messages_for_a_new_one(
    tmp_path: Path,
) -> None:
    """One session read back holding four messages past a bound lowered to two and a half:
    a new message for it is dropped itself, not three of the four acknowledged ones."""
    fleet = Fleet(tmp_path)  # the defaults
    try:
        _away(fleet, "s0", 0)
        _publish(fleet, *[(0, n) for n in range(4)])
        fleet.broker.stop()
        lowered = {"max_queued_bytes_per_device": 2 * SIZE + SIZE // 2}
        fleet.broker = BrokerThread(fleet.broker.settings.model_copy(update=lowered))

        async def restored() -> None:
            await asyncio.shield(fleet.broker.running.restoration.done)

        fleet.broker.call(restored())
        _publish(fleet, (0, 4))
        assert fleet.hits("max_queued_bytes_per_device") == 1
        assert _tally(fleet) == _queued(fleet) == (4, 4 * SIZE)
        assert _received(fleet, "s0", 4) == [0, 1, 2, 3]
    finally:
        fleet.broker.stop()


def _resident() -> int:
    """This process's resident memory in bytes (the broker's thread runs in it)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_one_certificate_pins_no_more_queued_bytes_than_its_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attack, scaled to a test: 16 persistent sessions of one certificate, each sent
    4 MiB (within max_queued_bytes) while away, 64 MiB in all, under a 16 MiB device bound.
    Before it every byte was held (and max_sessions_per_device sessions of max_queued_bytes
    each is 1 GiB); now the bound."""
    most = 16 * 2**20
    fleet = Fleet(tmp_path, max_queued_bytes_per_device=most)
    try:
        _away(fleet, "warm", 99, certfile=fleet.other_certfile)  # the paths warmed up
        for n in range(16):
            _away(fleet, f"s{n}", n)
        backend = fleet.backend()
        before = _resident()
        try:
            for n in range(16):
                for m in range(16):
                    payload = bytes([m]) + bytes(256 * 1024 - 512)
                    backend.publish(f"devices/greedy/rpc/request/{n}", payload, qos=1)
        finally:
            backend.close()
        grown = _resident() - before
        with capsys.disabled():
            print(f"\nRSS {before / 2**20:.1f} MiB -> +{grown / 2**20:.1f} MiB, "
                  f"{_queued(fleet)[1] / 2**20:.1f} MiB queued")  # fmt: skip
        assert _queued(fleet)[1] <= most
        assert grown < 40 * 2**20
        fleet.bystander_round_trip()
    finally:
        fleet.broker.stop()
