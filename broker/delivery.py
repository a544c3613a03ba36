"""The PUBLISH hot path, without amqtt's queue hops: a mixin for ``broker.handler.DeviceHandler``.

amqtt 0.12.1 moves every incoming PUBLISH through the session's delivery queue, a per-client
message loop (``asyncio.wait`` on four futures), the broker's broadcast queue and loop, and
one task per subscriber running ``mqtt_publish`` (facts.md §2: ~4.7 ``create_task`` and 4
``asyncio.wait`` per delivered message). Here:

- ``handle_publish`` (QoS 0 and 1) hands the message straight to the broker's ``route``
  (``broker.routing``), in the task amqtt's reader loop made for the packet, before anything
  else of that client runs: one publisher's messages keep their order (MQTT 3.1.1 §4.6). QoS 1
  is acknowledged after routing (§4.3.2: PUBACK once the server owns the message). QoS 2 keeps
  amqtt's flow.
- ``send_publish`` writes the encoded PUBLISH to the subscriber's stream at once. A QoS 1
  message stays in the session's ``inflight_out`` until its PUBACK (``handle_puback``), and
  is re-sent with DUP set when a persistent session reconnects (§4.4, §3.3.1.1); amqtt's flow
  dropped it after 5 s without PUBACK. QoS 2 goes through amqtt's ``mqtt_publish``.
- A subscriber that stops reading cannot make the broker buffer without bound: once more than
  ``max_outgoing_buffer`` bytes wait for it, QoS 0 messages to it are dropped (MQTT 3.1.1
  §4.3.1: at most once) and counted; once QoS 1/2 messages pile up past
  ``SLOW_CLOSE_FACTOR`` times that, its connection is closed. Nothing at QoS 1 is lost: the
  message stays in ``inflight_out`` and a persistent session queues what follows while the
  client is away, as for any disconnected client (§3.1.2.4).
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from amqtt.errors import AMQTTError
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.session import OutgoingApplicationMessage, Session

log = logging.getLogger(__name__)

Route = Callable[[Session, str, bytes, int, bool], bool]  # session, topic, data, QoS, retain

DEFAULT_MAX_OUTGOING_BUFFER = 1024 * 1024
SLOW_CLOSE_FACTOR = 4  # QoS 1/2 backlog, in multiples of max_outgoing_buffer, that closes


def remaining_length(value: int) -> bytes:
    """MQTT 3.1.1 §2.2.3: seven bits a byte, least significant first."""
    if value < 128:
        return bytes((value,))
    encoded = bytearray()
    while True:
        value, digit = divmod(value, 128)
        encoded.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(encoded)


def encode_publish(
    topic: str, data: bytes, qos: int, packet_id: int, retain: bool = False
) -> bytes:
    """A whole PUBLISH packet (§3.3); ``packet_id`` is written only for QoS 1 and 2."""
    name = topic.encode()
    head = len(name).to_bytes(2, "big") + name
    if qos:
        head += packet_id.to_bytes(2, "big")
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    return bytes((first,)) + remaining_length(len(head) + len(data)) + head + data


class DirectDelivery(BrokerProtocolHandler):  # type: ignore[misc]  # amqtt is untyped
    """Mixed into ``DeviceHandler`` before amqtt's ``BrokerProtocolHandler``."""

    route: Route | None = None  # set by the broker once the session is authenticated
    # True when it holds the PUBACK back (until queued messages are durable) and sends it
    # itself, in order (broker.persistence).
    defer_puback: Callable[[Session, int, Any], bool] | None = None
    max_outgoing_buffer = DEFAULT_MAX_OUTGOING_BUFFER
    on_drop: Callable[[], None] | None = None  # counts a QoS 0 message dropped (metrics)
    on_violation: Callable[[], None] | None = None  # counts a close for a protocol violation
    _closing_slow = False
    session: Session | None
    reader: Any
    writer: Any

    async def handle_publish(self, publish_packet: PublishPacket) -> None:
        route, session = self.route, self.session
        qos = publish_packet.qos
        if route is None or session is None or qos == QOS_2:
            await super().handle_publish(publish_packet)
            return
        topic, data = publish_packet.topic_name, publish_packet.data
        if topic is None or data is None:
            return
        if qos == QOS_0 and publish_packet.dup_flag:
            log.info("%s sent a QoS 0 PUBLISH with DUP set: ignored (§3.3.1.2)", session.client_id)
            return
        self.receive_publish(topic, data, qos, publish_packet.packet_id, publish_packet.retain_flag)

    def receive_publish(
        self, topic: str, data: bytes, qos: int, packet_id: int | None, retain: bool
    ) -> None:
        """Route one QoS 0 or 1 PUBLISH of this client now, then acknowledge it."""
        route, session = self.route, self.session
        assert route is not None
        assert session is not None
        if not route(session, topic, data, qos, retain):
            # A protocol violation (§4.8): end the stream as the packet reader does.
            if self.on_violation is not None:
                self.on_violation()
            if self.reader is not None:
                self.reader.feed_eof()
        elif qos == QOS_1 and packet_id is not None and self.writer is not None:
            defer = self.defer_puback
            if defer is None or not defer(session, packet_id, self.writer):
                self.writer.write(b"\x40\x02" + packet_id.to_bytes(2, "big"))  # PUBACK, §3.4

    def send_publish(self, topic: str, data: bytes, qos: int) -> bool:
        """Deliver one message to this client now, at ``qos`` (already min(pub, sub));
        False when it was dropped (QoS 0 to a subscriber that does not keep up)."""
        session, writer = self.session, self.writer
        if session is None or writer is None:
            return False
        buffered = _buffered(writer)
        if qos == QOS_0:
            if buffered > self.max_outgoing_buffer:
                if self.on_drop is not None:
                    self.on_drop()
                return False
            writer.write(encode_publish(topic, data, QOS_0, 0))
            return True
        if qos == QOS_2:
            task = asyncio.ensure_future(self.mqtt_publish(topic, data, qos, retain=False))
            _qos2_tasks.add(task)
            task.add_done_callback(_qos2_done)
        else:
            try:
                packet_id = session.next_packet_id
            except AMQTTError:
                log.warning("%s has 65,535 unacknowledged messages: dropped one", session.client_id)
                return False
            session.inflight_out[packet_id] = OutgoingApplicationMessage(
                packet_id, topic, qos, data, False
            )
            writer.write(encode_publish(topic, data, QOS_1, packet_id))
        if buffered > SLOW_CLOSE_FACTOR * self.max_outgoing_buffer:
            self._close_slow_consumer(buffered)
        return True

    def _close_slow_consumer(self, buffered: int) -> None:
        connection = getattr(self.writer, "connection", None)
        if connection is None or getattr(self, "_closing_slow", False):
            return
        self._closing_slow = True
        client = self.session.client_id if self.session is not None else "?"
        log.warning(
            "%s does not read: %d bytes waiting for it, over %d x max_outgoing_buffer: closing",
            client, buffered, SLOW_CLOSE_FACTOR,
        )  # fmt: skip
        connection.close()

    async def handle_puback(self, puback: PubackPacket) -> None:
        self.acknowledge(puback.packet_id)

    def acknowledge(self, packet_id: int) -> None:
        """A PUBACK (§3.4): ends amqtt's flow for a message it sent, or ours."""
        waiter = self._puback_waiters.get(packet_id)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(PubackPacket.build(packet_id))
        elif self.session is not None and self.session.inflight_out.pop(packet_id, None) is None:
            log.debug("PUBACK for unknown packet id %s from %s", packet_id, self.session.client_id)

    async def _retry_deliveries(self) -> None:
        """§4.4 / §3.3.1.1: a re-sent PUBLISH has DUP set, which amqtt's flow does only for
        a message it has a packet object for; ``send_publish`` keeps none, so add it here."""
        if self.session is not None:
            for message in self.session.inflight_out.values():
                if message.publish_packet is None:
                    message.publish_packet = message.build_publish_packet()
        await super()._retry_deliveries()


def _buffered(writer: Any) -> int:
    """What ``writer`` holds for its peer (0 for a writer that cannot tell)."""
    buffered = getattr(writer, "buffered", None)
    return int(buffered()) if buffered is not None else 0


_qos2_tasks: set["asyncio.Future[Any]"] = set()


def _qos2_done(task: "asyncio.Future[Any]") -> None:
    _qos2_tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.info("QoS 2 delivery failed: %r", task.exception())
