"""Fixed-size PUBLISH streams for the lean load generator (``bench.lean_worker``): encoded
before the timed phase and checked on receipt a chunk at a time, so that no Python runs per
message while the broker is measured (its CPU per message must not decide the result).

Every packet of a stream has one length ``size``: a fixed topic, 64 B payloads (publisher
index and sequence number, then zeros), a one-byte remaining length. What a subscriber of a
1 -> 1 pair receives is the publisher's stream itself (MQTT 3.1.1 §3.3.1.3: the retain flag
is 0 on a message sent to an established subscription; the topic and payload are the
publisher's), but for the packet identifier at QoS 1, which is the broker's own (§2.3.1):
``StreamCheck`` copies the expected identifiers over the received ones, column by column
with slice assignment, then compares whole chunks with the expected bytes (count, order,
loss and corruption at C speed); it answers every PUBLISH with a PUBACK built the same way.
A shared subscription's member takes many publishers' messages interleaved, in no order the
broker promises across publishers: ``FleetCheck`` checks each packet's fixed header and
counts, and sums the publisher and sequence numbers of what it took, which the benchmark
compares with what was sent (a lost, repeated or damaged message changes the count or the
sum).
"""

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

PAYLOAD: Final = struct.Struct(">II56x")  # publisher index, sequence number: 64 bytes
PUBACK: Final = b"\x40\x02\x00\x00"


@dataclass(frozen=True)
class Layout:
    """Where things are in every packet of a stream to a topic of ``topic_size`` bytes at
    ``qos``: plain attributes, as the checks read them for every chunk."""

    topic_size: int
    qos: int
    id_at: int = field(init=False)  # the packet identifier (QoS 1): after the topic
    payload_at: int = field(init=False)
    size: int = field(init=False)
    header: bytes = field(init=False)  # §3.3.1: no DUP, no retain; §2.2.3: one length byte

    def __post_init__(self) -> None:
        id_at = 4 + self.topic_size
        payload_at = id_at + (2 if self.qos else 0)
        size = payload_at + PAYLOAD.size
        for name, value in (("id_at", id_at), ("payload_at", payload_at), ("size", size)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "header", bytes([0x30 | self.qos << 1, size - 2]))


def layout(topic: bytes, qos: int) -> Layout:
    found = Layout(len(topic), qos)
    if found.size - 2 > 127:
        raise ValueError(f"topic {topic!r} too long for a one-byte remaining length")
    return found


def stream(topic: bytes, qos: int, publisher: int, count: int) -> bytes:
    """``count`` PUBLISH packets to ``topic``, sequence numbers 0 to count - 1; at QoS 1 the
    packet identifiers run 1 to 65535 and over again (a window far below 65535 messages
    keeps any in flight distinct, §2.3.1)."""
    shape = layout(topic, qos)
    head = shape.header + len(topic).to_bytes(2, "big") + topic
    out = bytearray(shape.size * count)
    for seq in range(count):
        at = seq * shape.size
        out[at : at + len(head)] = head
        if qos:
            out[at + shape.id_at : at + shape.id_at + 2] = (seq % 65535 + 1).to_bytes(2, "big")
        PAYLOAD.pack_into(out, at + shape.payload_at, publisher, seq)
    return bytes(out)


def checksum(publishers: Sequence[int], count: int) -> int:
    """``FleetCheck.total`` for ``count`` messages of each of ``publishers``."""
    return sum((p << 32) * count + count * (count - 1) // 2 for p in publishers)


@dataclass
class Aligned:
    """Whole packets of ``size`` bytes out of a byte stream cut anywhere."""

    size: int
    _carry: bytes = b""

    def whole(self, data: bytes) -> bytearray:
        buffer = self._carry + data if self._carry else data
        end = len(buffer) - len(buffer) % self.size
        self._carry = bytes(buffer[end:])
        return bytearray(buffer[:end])

    @property
    def pending(self) -> int:
        return len(self._carry)


def pubacks(chunk: bytearray, id_at: int, size: int) -> bytes:
    """A PUBACK (§3.4) for each packet of ``chunk``, its identifier copied column-wise."""
    acks = bytearray(PUBACK * (len(chunk) // size))
    acks[2::4] = chunk[id_at::size]
    acks[3::4] = chunk[id_at + 1 :: size]
    return bytes(acks)


@dataclass
class StreamCheck:
    """What a pair's subscriber receives against the publisher's ``expected`` stream."""

    expected: bytes
    shape: Layout
    position: int = 0  # bytes of the stream received and compared
    received: int = 0  # messages
    first_bad: int = -1  # the first message of a chunk that differed from the stream
    aligned: Aligned = field(init=False)

    def __post_init__(self) -> None:
        self.aligned = Aligned(self.shape.size)

    def feed(self, data: bytes) -> bytes:
        """Check what came; the PUBACKs to send for it (QoS 1), else b""."""
        chunk = self.aligned.whole(data)
        if not chunk:
            return b""
        start, end, size = self.position, self.position + len(chunk), self.shape.size
        acks = b""
        if self.shape.qos:
            at = self.shape.id_at
            acks = pubacks(chunk, at, size)
            expected = self.expected[start:end]
            if len(expected) == len(chunk):  # else more came than was sent: a difference
                chunk[at::size] = expected[at::size]
                chunk[at + 1 :: size] = expected[at + 1 :: size]
        if chunk != self.expected[start:end] and self.first_bad < 0:
            self.first_bad = start // size
        self.position = end
        self.received = end // size
        return acks


@dataclass
class FleetCheck:
    """What one member of a shared subscription receives: packets of ``shape`` from many
    publishers interleaved; counted, headers checked, publisher and sequence numbers summed."""

    shape: Layout
    received: int = 0
    total: int = 0  # sum of (publisher << 32) + sequence over the messages received
    bad_headers: int = 0  # chunks with a packet that is not a PUBLISH of this shape
    aligned: Aligned = field(init=False)

    def __post_init__(self) -> None:
        self.aligned = Aligned(self.shape.size)

    def feed(self, data: bytes) -> bytes:
        chunk = self.aligned.whole(data)
        if not chunk:
            return b""
        size, n = self.shape.size, len(chunk) // self.shape.size
        first, length = self.shape.header
        if chunk[0::size] != bytes([first]) * n or chunk[1::size] != bytes([length]) * n:
            self.bad_headers += 1
        at = self.shape.payload_at
        for column in range(8):  # big-endian: the first byte weighs 256 ** 7
            self.total += sum(chunk[at + column :: size]) << (8 * (7 - column))
        self.received += n
        return pubacks(chunk, self.shape.id_at, size) if self.shape.qos else b""


@dataclass
class AckCount:
    """The PUBACKs a QoS 1 publisher gets: counted by bytes, their first two bytes checked."""

    count: int = 0
    bad: int = 0
    aligned: Aligned = field(default_factory=lambda: Aligned(len(PUBACK)))

    def feed(self, data: bytes) -> None:
        chunk = self.aligned.whole(data)
        n = len(chunk) // 4
        if chunk[0::4] != PUBACK[:1] * n or chunk[1::4] != PUBACK[1:2] * n:
            self.bad += 1
        self.count += n


@dataclass
class Slices:
    """Latency samples: when each slice was written (its end as a message count) and when
    the messages received passed that end: the time from writing a slice to the delivery
    of its last message, waits in the window and in the broker's queues included."""

    written: list[tuple[int, int]] = field(default_factory=list)  # (end, ns)
    samples_ns: list[int] = field(default_factory=list)
    _next: int = 0

    def wrote(self, end: int, now_ns: int) -> None:
        self.written.append((end, now_ns))

    def passed(self, received: int, now_ns: int) -> None:
        written = self.written
        while self._next < len(written) and written[self._next][0] <= received:
            self.samples_ns.append(now_ns - written[self._next][1])
            self._next += 1

    def percentiles(self) -> dict[str, float]:
        ordered = sorted(self.samples_ns)
        if not ordered:
            return {}

        def at(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

        return {"p50": at(0.5), "p99": at(0.99), "samples": float(len(ordered))}
