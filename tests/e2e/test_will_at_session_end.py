"""MQTT 5 end to end: a will with a Will Delay Interval goes when the delay passes or when the
session ends, whichever comes first (5.0 §3.1.3.2.2, [MQTT-3.1.2-8]).

Each client here asks for a delay of 30 s, longer than any wait of the test: the will must
come because the session ended first: with the connection (Session Expiry 0), at its expiry,
by a DISCONNECT that sets Session Expiry 0 (§3.14.2.2.2), or by a connect with Clean Start 1
that discards it (§3.1.2.4). Mosquitto 2.0 waits for the delay in all four.
"""

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.mqtt.packets import MQTT_5, Connect, Disconnect, Will
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import BrokerThread, write_pem
from tests.e2e.peers import Raw
from tests.e2e.v5_client import v5_watcher

DELAY = 30  # seconds: longer than the test waits for anything (harness.WAIT)


def _connect(raw: Raw, *, clean: bool, expiry: int, will: bool) -> None:
    will_message = Will(
        "v1/devices/me/status", b"gone", 1,
        properties=Properties([(Property.WILL_DELAY_INTERVAL, DELAY)]),
    )  # fmt: skip
    asked = Properties([(Property.SESSION_EXPIRY_INTERVAL, expiry)])
    raw.connect(
        Connect(MQTT_5, "w", clean, 60, will=will_message if will else None, properties=asked)
    )


def _closed(raw: Raw, _: Callable[[], Raw]) -> None:
    raw.sock.close()  # the network connection ends without DISCONNECT


def _disconnect_ending_session(raw: Raw, _: Callable[[], Raw]) -> None:
    raw.send(Disconnect(0x04, Properties([(Property.SESSION_EXPIRY_INTERVAL, 0)])))
    assert raw.read() is None
    raw.sock.close()


def _clean_start_after(raw: Raw, connection: Callable[[], Raw]) -> None:
    raw.sock.close()
    _connect(connection(), clean=True, expiry=0, will=False)


@pytest.mark.parametrize(
    ("expiry", "end", "at_least"),
    [
        (0, _closed, 0.0),  # the session ends with its connection (§3.1.2.11.2)
        (1, _closed, 0.9),  # it expires after 1 s, not 30
        (60, _disconnect_ending_session, 0.0),
        (60, _clean_start_after, 0.0),
    ],
    ids=["expiry-0", "expiry-1", "disconnect-expiry-0", "clean-start"],
)
def test_a_delayed_will_goes_when_the_session_ends_first(
    broker: BrokerThread,
    tmp_path: Path,
    expiry: int,
    end: Callable[[Raw, Callable[[], Raw]], None],
    at_least: float,
) -> None:
    name = f"ending-{expiry}-{end.__name__.strip('_')}".replace("_", "-")
    _, issued = broker.provision(name)
    certfile = write_pem(tmp_path, issued, name)
    watcher = v5_watcher(broker, f"devices/{name}/status")
    opened: list[Raw] = []

    def connection() -> Raw:
        opened.append(Raw(broker.port, broker.server_cert, certfile, MQTT_5))
        return opened[-1]

    try:
        raw = connection()
        _connect(raw, clean=True, expiry=expiry, will=True)
        ended = time.monotonic()
        end(raw, connection)
        will = watcher.next_message()  # harness.WAIT (10 s), a third of the delay
        assert will.payload == b"gone"
        assert time.monotonic() - ended >= at_least
    finally:
        watcher.close()
        for each in opened:
            each.sock.close()
