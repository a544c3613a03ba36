"""amqtt's broker-side protocol handler, with keep-alive and packet rules enforced.

``handle_read_timeout``: amqtt 0.12.1 ignores keep-alive timeouts (facts.md §2, T8). MQTT 3.1.1
§3.1.2.10: with no packet within 1.5 × keep-alive the server disconnects the client, as if the
network had failed (so its will is published). ``tests/e2e/test_sessions.py`` fails without
this override.

The disconnect race right after CONNACK (facts.md §2): the broker sends CONNACK before starting
the handler and revocation closes the transport, so the reader sees EOF whenever the close
lands; ``broker.packet_loop`` makes the disconnect waiter before the reader loop starts, so an
EOF seen at once is not lost (``tests/e2e/test_revocation.py`` kicks at CONNACK, 20 times).

The PUBLISH hot path (reader loop, routing, delivery) is in ``broker.packet_loop`` and
``broker.delivery``, mixed in here.
"""

import asyncio
import itertools
import logging
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.mqtt.protocol import handler as amqtt_handler
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from broker.framing import DEFAULT_MAX_PACKET_SIZE, PacketReader
from broker.message_loop import WakingQueue
from broker.packet_loop import PacketLoop
from broker.peer import peer_of

log = logging.getLogger(__name__)
_AMQTT_LOG = logging.getLogger(amqtt_handler.__name__)


class DeviceHandler(PacketLoop, BrokerProtocolHandler):  # type: ignore[misc]  # amqtt is untyped
    def __init__(
        self,
        plugins_manager: Any,
        session: Session | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        super().__init__(plugins_manager, session, loop)
        self.max_packet_size = max_packet_size
        # broker.message_loop waits on these without a task each.
        self._pending_subscriptions = WakingQueue()
        self._pending_unsubscriptions = WakingQueue()

    def attach(self, session: Session, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        """amqtt reads checked packets only: its own loop discards a malformed packet and reads
        on, where MQTT 3.1.1 §4.8 requires closing the connection (``broker.framing``)."""
        peer = peer_of(session)
        label = peer.label if peer is not None else f"session {session.client_id}"
        checked = PacketReader(reader, self.max_packet_size, label, self.on_violation)
        super().attach(session, checked, writer)

    def _init_session(self, session: Session) -> None:
        """amqtt's, with its logger made cheap when it does not log debug: amqtt wraps it in
        a ``LoggerAdapter`` (the client id in every record) and calls it some twenty times
        per connection; a plain logger skips the adapter's work for records never written."""
        super()._init_session(session)
        if not _AMQTT_LOG.isEnabledFor(logging.DEBUG):
            self.logger = _AMQTT_LOG

    def _stop_waiters(self) -> None:
        """amqtt's, without formatting four debug lines per connection that nobody reads."""
        if self.logger.isEnabledFor(logging.DEBUG):
            super()._stop_waiters()
            return
        for waiter in itertools.chain(
            self._puback_waiters.values(),
            self._pubcomp_waiters.values(),
            self._pubrec_waiters.values(),
            self._pubrel_waiters.values(),
        ):
            waiter.cancel()

    def handle_read_timeout(self) -> None:
        client = self.session.client_id if self.session else "?"
        log.info("keep-alive expired for session %s: disconnecting (MQTT 3.1.1 §3.1.2.10)", client)
        if self.reader is not None:
            # EOF ends amqtt's reader loop, which then reports the connection as closed.
            self.reader.feed_eof()


def keep_alive_timeout(keep_alive: int) -> float:
    """Seconds without any packet before the client counts as gone (0: never)."""
    return 1.5 * keep_alive if keep_alive > 0 else 0
