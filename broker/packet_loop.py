"""amqtt's per-connection reader loop, without a task per packet: a mixin for ``DeviceHandler``.

amqtt 0.12.1 reads each packet inside ``asyncio.wait_for`` (a task and a timer per packet, for
keep-alive), decodes it a few bytes at a time through its codec, and runs its handler in a
task of its own. Here each packet comes whole from ``broker.framing.PacketReader`` (already
checked against MQTT 3.1.1, §4.8), and:

- PUBLISH at QoS 0 or 1 is decoded from its bytes and routed at once (``receive_publish``),
  in arrival order (§4.6); PUBACK releases its message (``acknowledge``). Neither makes a task.
- every other packet (SUBSCRIBE, PINGREQ, DISCONNECT, QoS 2 flows, ...) is decoded by amqtt
  and handled in a task by amqtt's handler, exactly as amqtt's loop does.
- keep-alive (§3.1.2.10) is one timer per connection, pushed back lazily: when it fires it
  looks at the time of the last packet, and only if that is older than the timeout does it
  call ``handle_read_timeout``, as amqtt's loop does on a read timeout.

Without a ``PacketReader`` under it (or without a route) the handler runs amqtt's own loop.
"""

import asyncio
import collections
import logging
from typing import Any

from amqtt.adapters import BufferReader
from amqtt.errors import MQTTError, NoDataError
from amqtt.events import MQTTEvents
from amqtt.mqtt import packet_class
from amqtt.mqtt.packet import CONNECT, MQTTFixedHeader
from amqtt.mqtt.protocol.handler import ProtocolHandler

from broker.delivery import DirectDelivery
from broker.framing import PacketReader

log = logging.getLogger(__name__)

_PUBLISH, _PUBACK = 3, 4
_HANDLERS = {
    2: "handle_connack", 8: "handle_subscribe", 10: "handle_unsubscribe", 9: "handle_suback",
    11: "handle_unsuback", 4: "handle_puback", 5: "handle_pubrec", 6: "handle_pubrel",
    7: "handle_pubcomp", 12: "handle_pingreq", 13: "handle_pingresp", 3: "handle_publish",
    14: "handle_disconnect",
}  # fmt: skip


def split_publish(first: int, body: bytes) -> tuple[str, bytes, int, int | None, bool]:
    """(topic, payload, QoS, packet id, retain) of a PUBLISH whose body the packet reader has
    already checked (§3.3.2: topic length and UTF-8 topic, packet id only for QoS > 0)."""
    qos = (first >> 1) & 0x03
    end = 2 + ((body[0] << 8) | body[1])
    topic = body[2:end].decode()
    if qos:
        return topic, body[end + 2 :], qos, (body[end] << 8) | body[end + 1], bool(first & 1)
    return topic, body[end:], qos, None, bool(first & 1)


def _body(rest: bytes) -> bytes:
    """The packet body after the remaining-length bytes (§2.2.3: the last has bit 7 clear)."""
    index = 0
    while rest[index] & 0x80:
        index += 1
    return rest[index + 1 :]


class PacketLoop(DirectDelivery):
    """Mixed into ``DeviceHandler`` before ``DirectDelivery``."""

    _last_packet = 0.0
    _keep_alive_timer: asyncio.TimerHandle | None = None
    _disconnect_waiter: "asyncio.Future[Any] | None"

    async def start(self) -> None:
        """amqtt's ``BrokerProtocolHandler.start``, with the disconnect waiter made before
        the reader loop starts instead of after: a connection already closed (revoked right
        after CONNACK) ends the loop at once, and amqtt's order replaced the resolved waiter
        with a fresh one that nothing would ever resolve."""
        if self._disconnect_waiter is None or self._disconnect_waiter.done():
            self._disconnect_waiter = asyncio.get_running_loop().create_future()
        await ProtocolHandler.start(self)

    async def _reader_loop(self) -> None:
        reader = self.reader
        if not isinstance(reader, PacketReader) or self.route is None or self.session is None:
            await super()._reader_loop()
            return
        client = self.session.client_id
        running: collections.deque[asyncio.Task[None]] = collections.deque()
        self._reader_ready.set()
        self._watch_keep_alive()
        try:
            while True:
                first = await reader.read(1)
                if not first:
                    break  # end of stream, or a violation PacketReader has logged
                rest = await reader.read(-1)
                self._last_packet = self._loop_time()
                while running and running[0].done():
                    running.popleft()
                await self._packet(first[0], rest, running)
        except asyncio.CancelledError:
            log.debug("reader loop of %s cancelled", client)
        except Exception as exc:  # amqtt's loop ends on any error, and so does ours
            log.warning("%s: reader loop stopped: %r", client, exc)
        finally:
            if self._keep_alive_timer is not None:
                self._keep_alive_timer.cancel()
        while running:
            running.popleft().cancel()
        await self.handle_connection_closed()
        self._reader_stopped.set()
        await self.stop()

    async def _packet(
        self, first: int, rest: bytes, running: "collections.deque[asyncio.Task[None]]"
    ) -> None:
        kind = first >> 4
        if kind == _PUBLISH and (first >> 1) & 0x03 < 2:
            self.receive_publish(*split_publish(first, _body(rest)))
        elif kind == _PUBACK:
            body = _body(rest)
            self.acknowledge((body[0] << 8) | body[1])
        else:
            await self._amqtt_packet(bytes((first,)) + rest, running)

    async def _amqtt_packet(
        self, data: bytes, running: "collections.deque[asyncio.Task[None]]"
    ) -> None:
        """Decode with amqtt and hand to amqtt's handler, as amqtt's reader loop does."""
        stream = BufferReader(data)
        try:
            fixed_header = await MQTTFixedHeader.from_stream(stream)
            packet: Any = await packet_class(fixed_header).from_stream(
                stream, fixed_header=fixed_header
            )
        except (MQTTError, NoDataError) as exc:
            log.debug("packet discarded: %r", exc)  # as amqtt's loop does
            return
        await self.plugins_manager.fire_event(
            MQTTEvents.PACKET_RECEIVED, packet=packet, session=self.session
        )
        kind = fixed_header.packet_type
        if kind == CONNECT:
            await self.handle_connect(packet)
        elif kind in _HANDLERS:
            running.append(asyncio.create_task(getattr(self, _HANDLERS[kind])(packet)))

    # --- keep-alive -----------------------------------------------------------------------

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def _watch_keep_alive(self) -> None:
        timeout = self.session.keep_alive if self.session is not None else 0
        if timeout and timeout > 0:
            self._last_packet = self._loop_time()
            self._keep_alive_timer = asyncio.get_running_loop().call_later(
                timeout, self._keep_alive_due, timeout
            )

    def _keep_alive_due(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_packet
        if idle >= timeout:
            self._keep_alive_timer = None
            self.handle_read_timeout()
        else:
            self._keep_alive_timer = loop.call_later(timeout - idle, self._keep_alive_due, timeout)
