"""Whole MQTT packets off a client's stream: bounded in size, checked, or the end of it.

``read_packet`` reads one packet (fixed header and body, MQTT 3.1.1 §2.2) and refuses one
larger than the broker's ``max_packet_size`` before reading its body, so a client cannot make
the broker buffer up to the 256 MB that §2.2.3 allows. ``PacketReader`` puts this under
amqtt's reader loop: amqtt reads from a buffer holding exactly one checked packet, and on a
violation it sees the end of the stream, so its loop ends and the connection is closed as
§4.8 requires (amqtt itself would discard the packet and read on). A will message is then
published, as for any close the client did not ask for (§3.1.2.5).
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from amqtt.adapters import ReaderAdapter

from broker.packet_rules import Malformed, body_problem, header_problem, packet_name

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "PacketReader",
    "Truncated",
    "read_first_packet",
    "read_packet",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_PACKET_SIZE: Final = 256 * 1024
_MAX_LENGTH_BYTES: Final = 4  # §2.2.3


class Truncated(Exception):
    """The stream ended inside a packet."""


async def read_packet(
    reader: ReaderAdapter, max_packet_size: int, *, connected: bool
) -> tuple[int, bytes, bytes] | None:
    """(first byte, encoded remaining length, body) of the next packet; None at end of stream.

    Raises ``Malformed`` for a packet this client may not send now, or one larger than
    ``max_packet_size`` bytes in all, and ``Truncated`` if the stream ends inside a packet.
    """
    first = await reader.read(1)
    if not first:
        return None
    problem = header_problem(first[0], connected=connected)
    if problem is not None:
        raise Malformed(problem)
    length_bytes = bytearray()
    length, multiplier = 0, 1
    while True:
        byte = await reader.read(1)
        if not byte:
            raise Truncated("in the remaining length")
        length_bytes += byte
        length += (byte[0] & 0x7F) * multiplier
        if not byte[0] & 0x80:
            break
        if len(length_bytes) == _MAX_LENGTH_BYTES:
            raise Malformed("remaining length longer than 4 bytes (§2.2.3)")
        multiplier *= 128
    size = 1 + len(length_bytes) + length
    if size > max_packet_size:
        raise Malformed(
            f"{packet_name(first[0])} of {size} bytes exceeds max_packet_size {max_packet_size}"
        )
    body = await reader.read(length) if length else b""
    if len(body) < length:
        raise Truncated(f"{len(body)} of {length} bytes of {packet_name(first[0])}")
    return first[0], bytes(length_bytes), body


class PacketReader(ReaderAdapter):  # type: ignore[misc]  # amqtt has no type hints
    """amqtt's reader for one connected client: checked packets, one at a time.

    ``read(n)`` is served from the current packet (``read(-1)``: the rest of it); when that is
    used up, the next packet is read whole and checked. After a violation, a truncated packet
    or ``feed_eof``, reads return ``b""`` (end of stream), which ends amqtt's reader loop.
    """

    def __init__(
        self,
        inner: ReaderAdapter,
        max_packet_size: int,
        label: str,
        on_violation: Callable[[], None] | None = None,
    ) -> None:
        self._inner = inner
        self._on_violation = on_violation
        self._max = max_packet_size
        self._label = label
        self._packet = b""
        self._at = 0
        self._ended = False
        self.violation: str | None = None

    async def read(self, n: int = -1) -> bytes:
        if self._at == len(self._packet) and not await self._next():
            return b""
        end = len(self._packet) if n < 0 else min(self._at + n, len(self._packet))
        data = self._packet[self._at : end]
        self._at = end
        return data

    async def _next(self) -> bool:
        if self._ended:
            return False
        self._ended = True  # until a whole packet is in: a cancelled read leaves a torn stream
        try:
            packet = await read_packet(self._inner, self._max, connected=True)
        except Malformed as exc:
            return self._violated(str(exc))
        except Truncated as exc:
            log.debug("%s closed its connection inside a packet (%s)", self._label, exc)
            return False
        if packet is None:
            return False
        first, length_bytes, body = packet
        problem = body_problem(first, body)
        if problem is not None:
            return self._violated(problem)
        self._packet = bytes([first]) + length_bytes + body
        self._at = 0
        self._ended = False
        return True

    def _violated(self, problem: str) -> bool:
        self.violation = problem
        log.info("protocol violation by %s: %s: closing (MQTT 3.1.1 §4.8)", self._label, problem)
        if self._on_violation is not None:
            self._on_violation()
        return False

    def feed_eof(self) -> None:
        """End the stream (keep-alive expiry): the reader loop sees end of stream."""
        self._ended = True
        self._packet, self._at = b"", 0
        feed_eof = getattr(self._inner, "feed_eof", None)
        if feed_eof is not None:
            feed_eof()

    def at_eof(self) -> bool:
        return self._ended and self._at == len(self._packet)


async def read_first_packet(reader: ReaderAdapter, max_packet_size: int, wait: float) -> bytes:
    """The body of the client's first packet, a CONNECT (§3.1.0), read within ``wait`` s.

    ``asyncio.timeout``, not ``wait_for``: on Python 3.11 ``wait_for`` runs the read in a task
    of its own, one more task per connect for nothing.
    """
    async with asyncio.timeout(wait):
        packet = await read_packet(reader, max_packet_size, connected=False)
    if packet is None:
        raise Truncated("before CONNECT")
    return packet[2]
