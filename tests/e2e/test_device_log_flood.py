"""A device cannot flood the log by connecting again and again.

Each connection of an authenticated device writes a line: "connected" when it is accepted,
"session expired" when a session it left expires, "connected again" when it takes
its own session over, "keep-alive expired" when it goes silent, "disconnecting" when it is
kicked. Before, each wrote its line: a device that connected in a loop (a TLS handshake each)
wrote as many as it liked. Now, as the refusals before authentication, the first
``auth_log_repeats`` of each kind per device in an interval are written, and the rest are
counted in one summary line when the interval ends, whether or not the device goes on.
"""

import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.mqtt.packets import MQTT_3_1_1, MQTT_5, Connect, Disconnect
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import WAIT, BrokerThread, running_broker, write_pem
from tests.e2e.peers import Raw

REPEATS = 2
TAKE_OVERS = 8
SUMMARY = re.compile(
    r"device 'looper': (\d+) more "
    r"(take-overs|keep-alive expiries|connections|session expiries) in 1 s"
)
CONNECTS = 20


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    limits = {"auth_log_repeats": REPEATS, "auth_log_interval_seconds": 1.0}
    with running_broker(tmp_path / "data", **limits) as running:
        yield running


@pytest.fixture
def certfile(broker: BrokerThread, tmp_path: Path) -> Path:
    _, issued = broker.provision("looper")
    return write_pem(tmp_path, issued, "looper")


def _lines(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if fragment in r.getMessage()]


def _summarised(caplog: pytest.LogCaptureFixture, kind: str) -> int:
    found = (SUMMARY.fullmatch(r.getMessage()) for r in caplog.records)
    return sum(int(m.group(1)) for m in found if m is not None and m.group(2) == kind)


def _connected(broker: BrokerThread, certfile: Path, client_id: str, keep_alive: int) -> Raw:
    raw = Raw(broker.port, broker.server_cert, certfile)
    raw.connect(Connect(MQTT_3_1_1, client_id, True, keep_alive))
    return raw


def _wait_for(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)  # the broker's log lines, read as it writes them


def test_take_overs_are_logged_a_few_times_a_device(
    broker: BrokerThread, certfile: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broker")
    previous = _connected(broker, certfile, "loop", 60)
    started = time.monotonic()
    for _ in range(TAKE_OVERS):  # each CONNECT takes the session over (3.1.1 §3.1.4)
        again = _connected(broker, certfile, "loop", 60)
        assert previous.closed()
        previous.close()
        previous = again
    within_one_interval = time.monotonic() - started < 1.0

    # The device stops: the count of the take-overs not written is written when their
    # interval ends, with no line after it, so that every take-over is told.
    def written() -> int:
        return len(_lines(caplog, "connected again"))

    _wait_for(lambda: written() + _summarised(caplog, "take-overs") == TAKE_OVERS)
    if within_one_interval:  # else (a loaded machine) more intervals, more lines
        assert written() == REPEATS
    assert _summarised(caplog, "take-overs") > 0
    previous.close()


def test_keep_alive_expiries_are_logged_a_few_times_a_device(
    broker: BrokerThread, certfile: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broker")
    silent = [_connected(broker, certfile, f"silent-{n}", 1) for n in range(5)]
    for raw in silent:  # closed after 1.5 x 1 s of silence (3.1.1 §3.1.2.10)
        assert raw.closed()
        raw.close()
    assert len(_lines(caplog, "keep-alive expired")) == REPEATS


def test_connections_are_logged_a_few_times_a_device(
    broker: BrokerThread, certfile: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Each accepted CONNECT wrote "connected device ...": a device's certificate connecting
    # in a loop wrote a line per TLS handshake, at its own rate, for as long as it liked.
    caplog.set_level(logging.INFO, logger="nanoiot.auth")
    started = time.monotonic()
    for n in range(CONNECTS):
        raw = _connected(broker, certfile, f"loop-{n}", 60)
        raw.send(Disconnect())
        assert raw.closed()
        raw.close()
    intervals = int(time.monotonic() - started) + 1  # 1 s each: a loaded machine has more

    def written() -> int:
        return len(_lines(caplog, "connected device 'looper'"))

    _wait_for(lambda: written() + _summarised(caplog, "connections") == CONNECTS)
    assert written() <= REPEATS * intervals
    assert _summarised(caplog, "connections") > 0


def test_session_expiries_are_logged_a_few_times_a_device(
    broker: BrokerThread, certfile: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # MQTT 5 §3.1.2.11.2: a session is kept for its Session Expiry Interval after its client
    # left, then ends, with a line. New client ids and 1 s each: a line for every connect.
    caplog.set_level(logging.INFO, logger="broker")
    one_second = Properties([(Property.SESSION_EXPIRY_INTERVAL, 1)])
    clients = []
    for n in range(CONNECTS):
        raw = Raw(broker.port, broker.server_cert, certfile, level=MQTT_5)
        raw.connect(Connect(MQTT_5, f"brief-{n}", True, 0, properties=one_second))
        clients.append(raw)
    for raw in clients:  # left together, so that they expire together
        raw.send(Disconnect())
    for raw in clients:
        assert raw.closed()
        raw.close()

    def written() -> int:
        return len([line for line in _lines(caplog, "/brief-") if line.endswith(" expired")])

    _wait_for(lambda: written() + _summarised(caplog, "session expiries") == CONNECTS)
    assert _summarised(caplog, "session expiries") > 0
