"""TLS failures a new user meets, seen on a running node: the INFO line and /metrics.

Real clients: paho with the wrong CA file, mosquitto_pub speaking plain MQTT to the TLS port,
and paho limited to TLS 1.0 as in the product text (with the security level lowered, or it
would not even send its ClientHello).
"""

import logging
import ssl
import subprocess
from pathlib import Path
from queue import Queue

import paho.mqtt.client as mqtt
import pytest
from OpenSSL import SSL
from paho.mqtt.enums import CallbackAPIVersion

from broker.proxy_protocol import ProxyHeaderError
from broker.tls_failures import FailureKind
from tests.certgen import issue
from tests.e2e.harness import WAIT, BrokerThread, write_pem
from tests.e2e.interop import close_leaked_tls_socket, deprecated_protocol, require_tool


def watch_failures(broker: BrokerThread) -> "Queue[tuple[str, int]]":
    """A queue that gets the peer of every failed handshake, once the broker has logged it."""
    reported: Queue[tuple[str, int]] = Queue()
    listener = broker.running.listener
    report = listener.handshake_failed

    def reporting(
        remote: tuple[str, int],
        kind: FailureKind,
        error: SSL.Error | ProxyHeaderError | None,
        first: bytes,
    ) -> None:
        report(remote, kind, error, first)
        reported.put(remote)

    listener.handshake_failed = reporting
    return reported


def paho_attempt(
    port: int, ca_file: Path, certfile: Path, tls_version: ssl._SSLMethod, ciphers: str | None
) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    with deprecated_protocol(tls_version):
        client.tls_set(
            ca_certs=str(ca_file), certfile=str(certfile), cert_reqs=ssl.CERT_REQUIRED,
            tls_version=tls_version, ciphers=ciphers,
        )  # fmt: skip
    with pytest.raises(ssl.SSLError) as failed:
        client.connect("127.0.0.1", port)
    close_leaked_tls_socket(failed.value)


def test_wrong_ca_plain_mqtt_and_tls_1_0_are_logged_and_counted(
    broker: BrokerThread, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broker.tls_failures")
    reported = watch_failures(broker)
    device = write_pem(tmp_path, issue("tls-device"), "tls-device")
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_text(issue("Other CA", ca=True).cert_pem)

    paho_attempt(broker.port, other_ca, device, ssl.PROTOCOL_TLS_CLIENT, None)
    reported.get(timeout=WAIT)
    paho_attempt(broker.port, broker.server_cert, device, ssl.PROTOCOL_TLSv1, "DEFAULT:@SECLEVEL=0")
    reported.get(timeout=WAIT)
    mosquitto_pub = require_tool("mosquitto_pub", "mosquitto-clients")
    subprocess.run(
        [mosquitto_pub, "-h", "127.0.0.1", "-p", str(broker.port), "-t", "t", "-m", "plain"],
        capture_output=True, timeout=WAIT, check=False,
    )  # fmt: skip
    reported.get(timeout=WAIT)

    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("failed: client does not trust our certificate" in line for line in lines)
    assert any("failed: client offers only TLS 1.0" in line for line in lines)
    assert any("failed: plain MQTT on the TLS port" in line for line in lines)
    text = broker.metrics()
    for reason in ("untrusted_server_certificate", "protocol_version", "plain_mqtt"):
        assert f'nanoiot_tls_handshake_failures_total{{reason="{reason}"}} 1.0' in text
    assert 'nanoiot_tls_handshake_failures_total{reason="timeout"} 0.0' in text
