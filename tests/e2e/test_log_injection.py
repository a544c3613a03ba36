"""A device cannot write log lines of its choosing, nor drive the operator's terminal.

A client id is the client's own text: MQTT 3.1.1 §3.1.3.1 and 5.0 §3.1.3.1 allow any UTF-8
but U+0000, so a newline and an escape sequence too. The refusals before authentication
escaped it, but once admitted, the lines naming the client ("connected again", keep-alive
expiries, refusals past a bound) and its session ("session <device>/<client id> expired")
wrote it as sent: a device wrote a whole line that looked like the broker's own, and an
escape sequence that cleared the screen of an operator who followed the log in a terminal.
"""

import io
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.mqtt.packets import MQTT_5, Connect, Disconnect
from broker.mqtt.properties import Properties, Property
from nanoiot.cli.serve import log_handler
from tests.e2e.harness import WAIT, BrokerThread, running_broker, write_pem
from tests.e2e.peers import Raw

FORGED = "2026-12-07 18:00:00,000 WARNING broker.client: device 'boiler' overheated"
# Clears the screen and sets the terminal's title.
EVIL = f"x'\n{FORGED}\r\x1b[2J\x1b]0;owned\x07"
LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|DEBUG)\s+broker[.\w]*: ")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    with running_broker(tmp_path / "data") as running:
        yield running


@pytest.fixture
def certfile(broker: BrokerThread, tmp_path: Path) -> Path:
    _, issued = broker.provision("intruder")
    return write_pem(tmp_path, issued, "intruder")


@pytest.fixture
def written() -> Iterator[io.StringIO]:
    """What ``nanoiot serve`` writes to stderr for the broker's loggers."""
    handler = log_handler()
    assert isinstance(handler, logging.StreamHandler)
    out = io.StringIO()
    handler.setStream(out)
    broker_log = logging.getLogger("broker")
    broker_log.addHandler(handler)
    try:
        yield out
    finally:
        broker_log.removeHandler(handler)


def _wait_for(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)  # the broker's log lines, read as it writes them


def test_a_client_id_writes_no_line_and_no_escape_sequence(
    broker: BrokerThread,
    certfile: Path,
    caplog: pytest.LogCaptureFixture,
    written: io.StringIO,
) -> None:
    caplog.set_level(logging.INFO, logger="broker")
    one_second = Properties([(Property.SESSION_EXPIRY_INTERVAL, 1)])
    first = Raw(broker.port, broker.server_cert, certfile, level=MQTT_5)
    first.connect(Connect(MQTT_5, EVIL, True, 0, properties=one_second))
    # The same client id again takes the session over (5.0 §3.1.4-3): "connected again".
    again = Raw(broker.port, broker.server_cert, certfile, level=MQTT_5)
    again.connect(Connect(MQTT_5, EVIL, False, 0, properties=one_second))
    assert first.closed()
    first.close()
    again.send(Disconnect())  # its session expires 1 s later: "session ... expired"
    assert again.closed()
    again.close()

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name.startswith("broker")]

    _wait_for(lambda: any(m.endswith(" expired") for m in messages()))
    naming = [m for m in messages() if "overheated" in m]
    assert any("connected again" in m for m in naming)
    assert any(m.endswith(" expired") for m in naming)
    # The lines that name the client carry its id escaped, whatever handler writes them.
    assert [m for m in naming if "connected again" in m and not m.isprintable()] == []
    # As written to stderr: no line but the broker's, and no escape sequence.
    lines = written.getvalue().splitlines()
    assert [line for line in lines if line.startswith(FORGED)] == []
    assert [line for line in lines if not LINE.match(line)] == []
    assert [line for line in lines if not line.isprintable()] == []
    shown = [line for line in lines if "\\n" + FORGED in line]
    assert any(line.endswith(" expired") for line in shown)
