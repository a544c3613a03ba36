"""Frames between nodes: the common record (no groups, no properties, not for one session)
takes a path of its own, in both directions; every kind of record keeps its place in a frame
around it, and each common record costs no helper call of its own."""

import struct
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from broker.cluster.frames import DIRECT, Routed, decode, encode, encode_barrier, read
from broker.mqtt.properties import Properties, Property
from broker.router import Message
from nanoiot.errors import ClusterError

NOW = 1000.0


def test_every_kind_of_record_keeps_its_place_among_plain_ones() -> None:
    plain = [Message(f"t/{i}", bytes([i]) * i, i % 3, retain=i == 4, id=i) for i in range(6)]
    expiring = Message("e", b"p", 1, expires_at=NOW + 30, id=90)
    with_properties = Message(
        "p", b"", 1, properties=Properties([(Property.CONTENT_TYPE, "text/plain")]), id=91
    )
    many = [(f"g{i}", "t/#" + "/x" * 400) for i in range(200)]  # more groups than one record
    grouped = Message("t/g", b"payload", 1, id=92)
    frame = bytearray()
    encode(plain[0], frame, NOW)
    encode(expiring, frame, NOW)
    encode(plain[1], frame, NOW, plain=False, groups=[("w", "t/+")])
    encode(plain[2], frame, NOW)
    encode(grouped, frame, NOW, plain=True, groups=many)
    encode(plain[3], frame, NOW)
    encode_barrier("member-a", ("d", "c"), frame)
    encode(plain[4], frame, NOW, plain=False, session=("d", "c"))
    encode(with_properties, frame, NOW)
    encode(plain[5], frame, NOW)
    routed = list(decode(bytes(frame), NOW))
    assert [r.message.topic for r in routed] == [
        "t/0", "e", "t/1", "t/2", "t/g", "t/3", "member-a", "t/4", "p", "t/5",
    ]  # fmt: skip
    assert routed[0] == Routed(plain[0], True, ())
    assert routed[1].message.expires_at == pytest.approx(NOW + 30, abs=0.001)
    assert routed[2] == Routed(plain[1], False, (("w", "t/+"),))
    assert routed[4] == Routed(grouped, True, tuple(many))
    assert routed[6].barrier == DIRECT
    assert routed[6].session == ("d", "c")
    assert routed[7] == Routed(plain[4], False, (), ("d", "c"))
    assert routed[8].message.properties.wire == with_properties.properties.wire
    assert routed[9] == Routed(plain[5], True, ())


def test_a_frame_given_as_a_buffer_reads_as_its_bytes() -> None:
    message = Message("t", b"p", 1)
    frame = bytearray()
    encode(message, frame, NOW)
    assert list(decode(frame, NOW)) == list(decode(memoryview(frame), NOW))  # type: ignore[arg-type]
    assert list(decode(bytes(frame), NOW)) == [Routed(message, True, ())]


def _more_groups(named: bytes) -> bytes:
    """A record of more groups (flag bit 7) naming ``named``, as ``encode`` writes one."""
    return struct.pack(">BHIHIIQQ", 0x80, 0, 0, len(named), 0, 0xFFFFFFFF, 0, 0) + named


def test_more_groups_join_a_plain_record_and_no_barrier() -> None:
    frame = bytearray()
    encode(Message("t", b"p", 1), frame, NOW)
    joined = list(decode(bytes(frame) + _more_groups(b"g/t"), NOW))
    assert joined == [Routed(Message("t", b"p", 1), True, (("g", "t"),))]
    barrier = bytearray()
    encode_barrier("m", ("d", "c"), barrier)
    with pytest.raises(ClusterError, match="groups of no message"):
        list(decode(bytes(barrier) + _more_groups(b"g/t"), NOW))
    with pytest.raises(ClusterError, match="groups of no message"):
        list(decode(_more_groups(b"g/t"), NOW))


def calls_per(count: int, run: Callable[[], Any]) -> float:
    """Python function calls ``run`` makes, per record or message (a profile hook)."""
    calls = 0

    def hook(_frame: FrameType, event: str, _arg: object) -> None:
        nonlocal calls
        calls += event == "call"

    sys.setprofile(hook)
    try:
        run()
    finally:
        sys.setprofile(None)
    return calls / count


def test_a_plain_record_costs_no_helper_call_either_way() -> None:
    """Hundreds cross in each frame: each helper call per record is paid per message."""
    message = Message("devices/d1/telemetry", b"x" * 64, 1, id=7, routed_at=3)
    frame = bytearray()
    records = 100

    def write() -> None:
        for _ in range(records):
            encode(message, frame, NOW)

    assert calls_per(records, write) < 1.5  # encode itself: none for the properties
    data = bytes(frame)
    # the generator's turn and Message's __init__: nothing else (a receiving member's reading)
    assert calls_per(records, lambda: list(read(data, NOW))) < 2.5
    # and as ``decode`` gives it: its own generator's turn, and Routed's __init__
    assert calls_per(records, lambda: list(decode(data, NOW))) < 4.5
    assert list(read(data, NOW)) == [routed.message for routed in decode(data, NOW)]


def test_read_gives_a_plain_record_as_its_message_and_the_others_as_decode_does() -> None:
    plain = Message("t/a", b"1", 0, id=1)
    for_nobody = Message("t/b", b"2", 0, id=2)  # not plain, no groups: as decode gives it
    grouped = Message("t/c", b"3", 1, id=3)
    joined = Message("t/d", b"4", 1, id=4)  # a plain record that more groups follow
    frame = bytearray()
    encode(plain, frame, NOW)
    encode(for_nobody, frame, NOW, plain=False)
    encode(grouped, frame, NOW, plain=False, groups=[("w", "t/+")])
    encode_barrier("member-a", ("d", "c"), frame)
    encode(joined, frame, NOW)
    data = bytes(frame) + _more_groups(b"g/t/#")
    assert list(read(data, NOW)) == [
        plain,
        Routed(for_nobody, False, ()),
        Routed(grouped, False, (("w", "t/+"),)),
        Routed(Message("member-a", b"", 0), False, (), ("d", "c"), DIRECT),
        Routed(joined, True, (("g", "t/#"),)),
    ]
    assert next(decode(data, NOW)) == Routed(plain, True, ())
