"""The lean load generator's pure parts: streams, chunk checks, PUBACKs, latency samples."""

import pytest

from bench.lean_stream import (
    PAYLOAD,
    AckCount,
    FleetCheck,
    Slices,
    StreamCheck,
    checksum,
    layout,
    stream,
)
from bench.mqtt_wire import publish_packet

TOPIC = b"bench/pair0"


def as_broker_sends(data: bytes, qos: int, first_id: int = 40_000) -> bytes:
    """``data``'s packets with the broker's own packet identifiers (QoS 1)."""
    shape = layout(TOPIC, qos)
    out = bytearray(data)
    if qos:
        for n in range(len(data) // shape.size):
            at = n * shape.size + shape.id_at
            out[at : at + 2] = ((first_id + n) % 65535 + 1).to_bytes(2, "big")
    return bytes(out)


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in chunks of ``sizes`` in turn (never on a packet boundary by design)."""
    chunks, at, turn = [], 0, 0
    while at < len(data):
        chunks.append(data[at : at + sizes[turn % len(sizes)]])
        at += sizes[turn % len(sizes)]
        turn += 1
    return chunks


@pytest.mark.parametrize("qos", [0, 1])
def test_a_stream_is_the_packets_the_plain_encoder_makes(qos: int) -> None:
    made = stream(TOPIC, qos, 3, 70_000)
    shape = layout(TOPIC, qos)
    assert len(made) == 70_000 * shape.size
    for seq in (0, 1, 65_535, 69_999):
        packet = publish_packet(TOPIC, PAYLOAD.pack(3, seq), qos, seq % 65535 + 1)
        assert made[seq * shape.size : (seq + 1) * shape.size] == packet


@pytest.mark.parametrize("qos", [0, 1])
def test_misaligned_chunks_are_checked_and_acknowledged_in_full(qos: int) -> None:
    sent = stream(TOPIC, qos, 0, 500)
    check = StreamCheck(sent, layout(TOPIC, qos))
    acks = b"".join(check.feed(chunk) for chunk in cut(as_broker_sends(sent, qos), [1, 7, 300]))
    assert check.received == 500
    assert check.first_bad == -1
    if qos:
        ids = [int.from_bytes(acks[n + 2 : n + 4], "big") for n in range(0, len(acks), 4)]
        assert acks[0::4] == b"\x40" * 500
        assert acks[1::4] == b"\x02" * 500
        assert ids == [(40_000 + n) % 65535 + 1 for n in range(500)]
    else:
        assert acks == b""


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("damage", ["lost", "corrupt", "reordered", "dup flag"])
def test_a_lost_damaged_or_reordered_message_is_found(qos: int, damage: str) -> None:
    shape = layout(TOPIC, qos)
    sent = stream(TOPIC, qos, 0, 300)
    got = bytearray(as_broker_sends(sent, qos))
    at = 123 * shape.size
    if damage == "lost":
        del got[at : at + shape.size]
    elif damage == "corrupt":
        got[at + shape.payload_at + 20] ^= 1
    elif damage == "reordered":
        first, second = got[at : at + shape.size], got[at + shape.size : at + 2 * shape.size]
        got[at : at + 2 * shape.size] = second + first
    else:
        got[at] |= 0x08
    check = StreamCheck(sent, shape)
    for chunk in cut(bytes(got), [4096, 13]):
        check.feed(chunk)
    assert check.first_bad >= 0
    assert check.first_bad <= 123 < check.first_bad + 4096 // shape.size + 1


@pytest.mark.parametrize("qos", [0, 1])
def test_the_fleet_check_counts_sums_and_sees_a_loss_or_a_repeat(qos: int) -> None:
    shape = layout(b"bench/telemetry/00007", qos)
    streams = [stream(f"bench/telemetry/{p:05d}".encode(), qos, p, 50) for p in (7, 8, 9)]
    mixed = b"".join(
        s[n * shape.size : (n + 1) * shape.size] for n in range(50) for s in streams
    )  # interleaved, as a shared subscription's member takes them
    check = FleetCheck(shape)
    acks = b"".join(check.feed(chunk) for chunk in cut(mixed, [5, 333]))
    assert (check.received, check.total, check.bad_headers) == (150, checksum([7, 8, 9], 50), 0)
    assert len(acks) == (150 * 4 if qos else 0)
    repeated = FleetCheck(shape)
    repeated.feed(mixed[: -shape.size] + mixed[: shape.size])  # last lost, first repeated
    assert repeated.received == 150
    assert repeated.total != checksum([7, 8, 9], 50)
    shifted = FleetCheck(shape)
    shifted.feed(mixed[1:])
    assert shifted.bad_headers == 1


def test_pubacks_are_counted_across_chunk_boundaries_and_garbage_is_seen() -> None:
    count = AckCount()
    for chunk in cut(b"\x40\x02\x00\x01" * 1000, [3, 5, 999]):
        count.feed(chunk)
    assert (count.count, count.bad) == (1000, 0)
    count.feed(b"\x30\x02\x00\x01")
    assert count.bad == 1


def test_latency_is_taken_when_the_received_count_passes_each_slice_end() -> None:
    slices = Slices()
    slices.wrote(100, 1_000_000)
    slices.wrote(200, 2_000_000)
    slices.passed(99, 5_000_000)
    assert slices.samples_ns == []
    slices.passed(250, 6_000_000)
    assert slices.samples_ns == [5_000_000, 4_000_000]
    assert slices.percentiles()["p50"] == 5.0
