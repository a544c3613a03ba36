"""Backpressure for MQTT 3.1 and 3.1.1 publishers: the broker stops reading a connection while
``max_awaiting_pubrel`` of its QoS 1/2 messages wait for their PUBACK / PUBREC.

The broker answers such a PUBLISH only once the store has committed the message (§4.3.2,
``broker.acks``), and these versions have no Receive Maximum (MQTT 5's bound, which a client
is told and which closes it past it). Nor may the broker close a 3.1.1 client for not
waiting: nothing in 3.1.1 asks it to. So the protocol core stops at the bound
(``Connection.window_full``), the socket is no longer read, and TCP holds the client back:
what it sent waits in the kernel's buffers, not in the broker. Each acknowledgement that goes
out reads on. Keep-alive does not run out meanwhile (``Connection.keep_alive_expired``), and
starts again once reading does (§3.1.2.10: the client was not read, not silent).

Works on ``broker.client.MqttClient``'s state, as ``broker.connecting`` does.
"""

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.client import MqttClient

log = logging.getLogger("broker.client")  # logged as the connection it belongs to


def hold_back(client: "MqttClient") -> None:
    """Stop reading ``client``'s socket: its unanswered messages fill the window."""
    if client._full:
        return
    client._full = True
    client.broker.metrics.publishers_paused += 1
    log.debug("%s: %d messages await their acknowledgement (max_awaiting_pubrel): "
              "reading paused", client.label, client.broker.limits.max_awaiting_pubrel)  # fmt: skip
    client.tls.pause_reading()


def read_again(client: "MqttClient") -> None:
    """Acknowledgements went out (``broker.acks``): read on if the window has room, first
    what the last read brought beyond it."""
    if not client._full or client.ended or client.core.window_full:
        return
    client._full = False
    client.core.last_received = client._loop.time()  # §3.1.2.10: its keep-alive starts again
    client.tls.resume_reading()
    client._receive(b"")
