"""Refusals cannot flood the log or the auth-event table, nor forge a log line.

The attack: CONNECTs with an unknown access token and a 60 KiB client id that holds a newline
and a made-up log line, again and again. Before, each refusal logged the whole client id (and
the newline started a line of the attacker's choosing) and wrote an auth-event row: 10,852
refusals in 15 s wrote 680 MB of log. Now client-chosen text is cut and escaped, the first
few refusals per address and reason in an interval are reported one by one, and the rest as
one summary line and one event when the interval ends.
"""

import logging
import re
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.records import AuthOutcome
from tests.e2e.harness import WAIT, BrokerThread, broker_settings, running_broker
from tests.reliability.packets import connect
from tests.reliability.wire import RawMqtt, client_context

ATTEMPTS = 40
REPEATS = 3
FORGED = "\n2026-01-01 00:00:00,000 INFO    nanoiot.auth: connected device 'boss' (token)"
CLIENT_ID = "x" * 30_000 + FORGED + "y" * 30_000
SUMMARY = re.compile(
    r"(\d+) more refusals from 127\.0\.0\.1 in 1 s, not reported one by one \[unknown_token\]"
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    limits = {
        "auth_log_repeats": REPEATS,
        "auth_log_interval_seconds": 1.0,
        # Every attempt is refused from one address: its connects are not slowed.
        "auth_failures_before_throttle": ATTEMPTS + 1,
    }
    with running_broker(tmp_path / "data", **limits) as running:
        yield running


def _refused(broker: BrokerThread, context: ssl.SSLContext) -> bytes:
    with RawMqtt(broker.port, context) as client:
        client.send(connect(CLIENT_ID, username="no-such-token"))
        return client.recv_exactly(4)


def _auth_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "nanoiot.auth"]


def test_a_flood_of_refusals_is_cut_escaped_and_summarised(
    broker: BrokerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nanoiot.auth")
    context = client_context(broker.server_cert)
    for _ in range(ATTEMPTS):
        assert _refused(broker, context) == b"\x20\x02\x00\x05"  # CONNACK 5, every time

    # Every refusal is accounted for: logged one by one, or in a summary once its interval
    # (1 s) ended. The attempts may span several intervals on a busy machine.
    deadline = time.monotonic() + WAIT
    while True:
        lines = _auth_lines(caplog)
        one_by_one = [line for line in lines if line.startswith("refused 127.0.0.1 (client id")]
        summaries = [SUMMARY.fullmatch(line) for line in lines]
        summarised = sum(int(found.group(1)) for found in summaries if found)
        if len(one_by_one) + summarised == ATTEMPTS:
            break
        assert time.monotonic() < deadline, lines[-3:]
        time.sleep(0.05)  # the summary comes when the interval ends
    intervals = sum(1 for found in summaries if found)
    assert intervals >= 1
    assert len(one_by_one) <= REPEATS * (intervals + 1) < ATTEMPTS
    for line in lines:
        assert "\n" not in line  # no forged line
        assert len(line) < 1024
    assert "...(+59950 characters)" in one_by_one[0]  # cut, and says how much

    broker.call(broker.running.auth_log.flushed())
    events = broker.call(broker.running.store.list_auth_events(limit=100))
    denied = [e for e in events if e.outcome is AuthOutcome.DENIED]
    assert len(denied) == len(one_by_one) + intervals
    assert all(len(e.reason) < 1024 for e in denied)
    assert any("more refusals from 127.0.0.1" in e.reason for e in denied)


def test_escaping_keeps_a_newline_from_starting_a_line(
    broker: BrokerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nanoiot.auth")
    context = client_context(broker.server_cert)
    with RawMqtt(broker.port, context) as client:
        client.send(connect("evil" + FORGED[:40], username="no-such-token"))
        assert client.recv_exactly(4) == b"\x20\x02\x00\x05"
    broker.call(broker.running.auth_log.flushed())
    line = next(line for line in _auth_lines(caplog) if "client id 'evil" in line)
    assert "\n" not in line
    assert "evil\\n2026-01-01" in line


def test_connects_refused_before_authentication_are_logged_a_few_times_a_host(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No certificate, no credentials: a CONNECT of a protocol level the broker does not speak
    # is refused before any lookup (3.1.1 §3.1.2.2). Before, each wrote a line.
    caplog.set_level(logging.INFO, logger="broker.client")
    settings = broker_settings(
        tmp_path / "data", auth_log_repeats=REPEATS, auth_log_interval_seconds=600.0,
        auth_failures_before_throttle=ATTEMPTS + 1,
    )  # fmt: skip
    with BrokerThread(settings) as running:
        context = client_context(running.server_cert)
        for _ in range(ATTEMPTS):
            with RawMqtt(running.port, context) as client:
                client.send(connect("unheard-of", level=7))
                assert client.recv_exactly(4) == b"\x20\x02\x00\x01"  # CONNACK 1, every time
                assert client.closed_by_server()[0]
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "broker.client" and r.getMessage().startswith("refused 127.0.0.1")
    ]
    assert len(lines) == REPEATS, lines  # the rest are summed up when the interval ends
