"""MQTT 5 end to end: a client's will and its own session's subscription with No Local.

The will is the Application Message of the connection that set it (§3.1.2.5), so No Local
(5.0 §3.8.3.1 [MQTT-3.8.3-3]: not to a connection with the publishing connection's ClientID)
keeps it from the client's own persistent session, as Mosquitto does; without No Local the
session gets it when it comes back, like any message queued while it was away.
"""

from pathlib import Path

import pytest

from broker.mqtt.packets import MQTT_5, Connect, Suback, Subscribe, SubscribeRequest, Will
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import BrokerThread, write_pem
from tests.e2e.peers import Raw
from tests.e2e.v5_client import v5_watcher

STATUS = "v1/devices/me/status"
KEPT = Properties([(Property.SESSION_EXPIRY_INTERVAL, 60)])


def _own_connect(clean: bool, will: Will | None = None) -> Connect:
    return Connect(MQTT_5, "own", clean, 60, will=will, properties=KEPT)


@pytest.mark.parametrize("no_local", [True, False], ids=["no-local", "local"])
def test_a_will_reaches_its_own_session_only_without_no_local(
    broker: BrokerThread, tmp_path: Path, no_local: bool
) -> None:
    name = f"own-will-{int(no_local)}"
    _, issued = broker.provision(name)
    certfile = write_pem(tmp_path, issued, name)
    watcher = v5_watcher(broker, f"devices/{name}/status")
    try:
        first = Raw(broker.port, broker.server_cert, certfile, MQTT_5)
        first.connect(_own_connect(True, Will(STATUS, b"gone", 1)))
        first.send(Subscribe(1, (SubscribeRequest(STATUS, 1, no_local=no_local),)))
        assert isinstance(first.read(), Suback)
        first.sock.close()  # without DISCONNECT: the will goes (§3.1.2.5)
        assert watcher.next_message().payload == b"gone"  # routed, to every subscriber
        again = Raw(broker.port, broker.server_cert, certfile, MQTT_5)
        assert again.connect(_own_connect(False)).session_present
        payloads = [p.payload for p in again.publishes_before_pingresp()]
        assert payloads == ([] if no_local else [b"gone"])
        again.sock.close()
    finally:
        watcher.close()
