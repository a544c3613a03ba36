"""amqtt's broker-side protocol handler, with keep-alive enforced.

``handle_read_timeout``: amqtt 0.12.1 ignores keep-alive timeouts (facts.md §2, T8). MQTT 3.1.1
§3.1.2.10: with no packet within 1.5 × keep-alive the server disconnects the client, as if the
network had failed (so its will is published). ``tests/e2e/test_sessions.py`` fails without
this override.

The disconnect race right after CONNACK (facts.md §2) needs no override here: the broker sends
CONNACK before starting the handler and revocation closes the transport, so the reader sees EOF
whenever the close lands (``tests/e2e/test_revocation.py`` kicks at CONNACK, 20 times).
"""

import logging

from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

log = logging.getLogger(__name__)


class DeviceHandler(BrokerProtocolHandler):  # type: ignore[misc]  # amqtt is untyped
    def handle_read_timeout(self) -> None:
        client = self.session.client_id if self.session else "?"
        log.info("keep-alive expired for session %s: disconnecting (MQTT 3.1.1 §3.1.2.10)", client)
        if self.reader is not None:
            # EOF ends amqtt's reader loop, which then reports the connection as closed.
            self.reader.feed_eof()


def keep_alive_timeout(keep_alive: int) -> float:
    """Seconds without any packet before the client counts as gone (0: never)."""
    return 1.5 * keep_alive if keep_alive > 0 else 0
