"""amqtt's broker-side protocol handler, with the two fixes a device broker needs.

Pinned against amqtt 0.12.1 (``tests/broker/test_amqtt_pins.py`` fails if upstream changes
what these overrides rely on):

- ``start``: amqtt creates the disconnect waiter only after the reader task runs, so a
  connection closed right after CONNACK (a revocation, facts.md §2) is lost and the session
  hangs. We create the waiter first.
- ``handle_read_timeout``: amqtt ignores keep-alive timeouts (facts.md §2, T8). MQTT 3.1.1
  §3.1.2.10: with no packet within 1.5 × keep-alive the server disconnects the client, as if
  the network had failed (so its will is published).
"""

import asyncio
import logging

from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.protocol.handler import ProtocolHandler

log = logging.getLogger(__name__)


class DeviceHandler(BrokerProtocolHandler):  # type: ignore[misc]  # amqtt is untyped
    async def start(self) -> None:
        waiter = self._disconnect_waiter  # type: ignore[has-type]  # set in amqtt's __init__
        if waiter is None or waiter.done():
            self._disconnect_waiter = asyncio.get_running_loop().create_future()
        await ProtocolHandler.start(self)

    def handle_read_timeout(self) -> None:
        client = self.session.client_id if self.session else "?"
        log.info("keep-alive expired for session %s: disconnecting (MQTT 3.1.1 §3.1.2.10)", client)
        if self.reader is not None:
            # EOF ends amqtt's reader loop, which then reports the connection as closed.
            self.reader.feed_eof()


def keep_alive_timeout(keep_alive: int) -> float:
    """Seconds without any packet before the client counts as gone (0: never)."""
    return 1.5 * keep_alive if keep_alive > 0 else 0
