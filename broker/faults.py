"""What the protocol core says ends a connection: a limit exceeded, a protocol violation, a
refused CONNECT; each counted, logged, and the connection ended, a 5.0 client told why.

The DISCONNECT's reason code is the core's own for a violation, and for a limit 0x97 (quota
exceeded) unless a more exact one applies (5.0 §3.14.2.1). A violation's, a limit's and a
refused CONNECT's log lines are limited per host (``Broker.client_log``): a misbehaving fleet
would otherwise flood the log.

Works on ``broker.client.MqttClient``'s state, as ``broker.connecting`` does.
"""

from typing import TYPE_CHECKING, Final

from auth.connack import ConnackCode
from broker.connection_limit import host_of
from broker.mqtt.codes import Reason
from broker.mqtt.events import ConnectionRefused, LimitExceeded, ProtocolViolation

if TYPE_CHECKING:
    from broker.client import MqttClient

__all__ = ["limit_exceeded", "refused", "violated"]

# The DISCONNECT reason code (5.0 §3.14.2.1) of a limit that ends a connection; others 0x97.
_LIMIT_REASONS: Final = {
    "max_awaiting_pubrel": Reason.RECEIVE_MAXIMUM_EXCEEDED,
    # An answer larger than the client reads (§3.1.2.11.4): "greater than Maximum Packet
    # Size for this Client".
    "client_maximum_packet_size": Reason.PACKET_TOO_LARGE,
}


def limit_exceeded(client: "MqttClient", event: LimitExceeded) -> None:
    client.broker.metrics.count_limit(event.limit)
    client.broker.client_log.warning(
        host_of(client.tls.remote[0]), f"connections closed over {event.limit}",
        "%s: %s: closing (%s)", client.label, event.detail, event.limit,
    )  # fmt: skip
    code = _LIMIT_REASONS.get(event.limit, Reason.QUOTA_EXCEEDED)
    client._end(will=True, reason=(code, f"{event.detail} (over {event.limit})"))


def violated(client: "MqttClient", event: ProtocolViolation) -> None:
    metrics = client.broker.metrics
    metrics.count_violation()
    if event.code == Reason.PACKET_TOO_LARGE:
        metrics.count_limit("max_packet_size")
    lines, host = client.broker.client_log, host_of(client.tls.remote[0])
    if event.connected:
        lines.info(host, "protocol violations",
                   "protocol violation by %s: %s: closing (MQTT 3.1.1 §4.8)",
                   client.label, event.reason)  # fmt: skip
    else:
        lines.info(host, "first packets that were not a valid CONNECT",
                   "refused %s: first packet is not a valid CONNECT (%s)",
                   client.label, event.reason)  # fmt: skip
    client._end(will=True, reason=(event.code, event.reason))


def refused(client: "MqttClient", event: ConnectionRefused) -> None:
    """A CONNECT the core refused before authentication (a protocol level it does not speak,
    a client id it cannot take, a CONNECT too large): anyone can send one, certificate or
    not, so its lines are limited per host as a violation's."""
    if event.return_code == ConnackCode.UNACCEPTABLE_PROTOCOL:
        client.broker.metrics.count_violation()
    client.broker.client_log.info(
        host_of(client.tls.remote[0]), "CONNECTs refused before authentication",
        "refused %s: %s", client.label, event.reason,
    )  # fmt: skip
    client._end(will=False)
