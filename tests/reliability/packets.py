"""MQTT 3.1.1 packets made by hand, well formed or broken on purpose, and Hypothesis strategies.

``violations`` draws packets that break a MUST of MQTT 3.1.1 in a way the server can see
once it has the packet (or its header): the broker has to close the connection (§4.8).
``noise`` draws anything (random bytes, truncated or bit-flipped packets): the broker may
close, answer or wait for more, but must survive and clean up. Shared by
``tests/reliability/test_fuzz_packets.py`` and ``bench/soak/fuzz.py``.
"""

from hypothesis import strategies as st

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
FIXED_FLAGS = {CONNECT: 0, PUBACK: 0, PUBREC: 0, PUBREL: 2, PUBCOMP: 0, SUBSCRIBE: 2,
               UNSUBSCRIBE: 2, PINGREQ: 0, DISCONNECT: 0}  # fmt: skip
CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
PINGREQ_PACKET = b"\xc0\x00"
PINGRESP_PACKET = b"\xd0\x00"


def remaining_length(value: int) -> bytes:
    """§2.2.3: 7 bits per byte, continuation bit 0x80."""
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + remaining_length(len(body)) + body


def field(data: bytes) -> bytes:
    """§1.5.3 / §3.1.3: two length bytes, then the data."""
    return len(data).to_bytes(2, "big") + data


def connect(
    client_id: str = "",
    *,
    username: str | None = None,
    password: bytes | None = None,
    clean_session: bool = True,
    keep_alive: int = 60,
    name: bytes = b"MQTT",
    level: int = 4,
    will: tuple[str, bytes] | None = None,
    extra: bytes = b"",
) -> bytes:
    """§3.1: a CONNECT; ``name``/``level`` b"MQIsdp"/3 for MQTT 3.1, level 5 for MQTT 5."""
    flags = (0x02 if clean_session else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    flags |= 0x04 if will is not None else 0
    head = field(name) + bytes([level, flags]) + keep_alive.to_bytes(2, "big")
    if level == 5:
        head += b"\x00"  # MQTT 5 §3.1.2.11: property length 0
    body = head + field(client_id.encode())
    if will is not None:
        body += field(will[0].encode()) + field(will[1])
    if username is not None:
        body += field(username.encode())
    if password is not None:
        body += field(password)
    return packet(CONNECT << 4, body + extra)


def publish(
    topic: bytes | str, payload: bytes = b"", *, qos: int = 0, packet_id: int = 1, flags: int = 0
) -> bytes:
    """§3.3: a PUBLISH; ``flags`` adds DUP (0x08) or RETAIN (0x01) bits, or anything."""
    raw = topic.encode() if isinstance(topic, str) else topic
    head = field(raw) + (packet_id.to_bytes(2, "big") if qos else b"")
    return packet((PUBLISH << 4) | (qos << 1) | flags, head + payload)


def subscribe(*filters: tuple[bytes | str, int], packet_id: int = 1, flags: int = 2) -> bytes:
    """§3.8: a SUBSCRIBE with (filter, requested QoS byte) pairs."""
    body = packet_id.to_bytes(2, "big")
    for topic_filter, qos in filters:
        raw = topic_filter.encode() if isinstance(topic_filter, str) else topic_filter
        body += field(raw) + bytes([qos])
    return packet((SUBSCRIBE << 4) | flags, body)


def unsubscribe(*filters: bytes | str, packet_id: int = 1) -> bytes:
    body = packet_id.to_bytes(2, "big")
    for topic_filter in filters:
        body += field(topic_filter.encode() if isinstance(topic_filter, str) else topic_filter)
    return packet((UNSUBSCRIBE << 4) | 2, body)


# --- Hypothesis strategies ---------------------------------------------------------------

_TOPIC_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="+#\x00"), max_size=30)
_TOPICS = _TOPIC_TEXT.filter(bool).map(str.encode)
_PACKET_IDS = st.integers(1, 0xFFFF)
# Not UTF-8 (§1.5.3): a lone continuation byte, 0xFF, an encoded surrogate, an overlong '/'.
_BAD_UTF8 = st.sampled_from([b"\x80", b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82"])


@st.composite
def _invalid_utf8(draw: st.DrawFn) -> bytes:
    prefix, suffix = draw(_TOPICS), draw(_TOPICS)
    return prefix + draw(_BAD_UTF8) + suffix


@st.composite
def _wildcard_topic(draw: st.DrawFn) -> bytes:
    text = draw(_TOPIC_TEXT)
    at = draw(st.integers(0, len(text)))
    return (text[:at] + draw(st.sampled_from("+#")) + text[at:]).encode()


def _any_body() -> st.SearchStrategy[bytes]:
    return st.binary(max_size=40)


@st.composite
def _reserved_or_server_only(draw: st.DrawFn) -> bytes:
    """§2.2.1: types 0 and 15 are reserved; CONNACK, SUBACK, UNSUBACK and PINGRESP only
    flow from server to client."""
    kind = draw(st.sampled_from([0, 15, CONNACK, SUBACK, UNSUBACK, PINGRESP]))
    return packet((kind << 4) | draw(st.integers(0, 15)), draw(_any_body()))


@st.composite
def _bad_flags(draw: st.DrawFn) -> bytes:
    """§2.2.2: fixed-header flags other than the ones the packet type requires."""
    kind = draw(st.sampled_from(sorted(FIXED_FLAGS)))
    flags = draw(st.integers(0, 15).filter(lambda f: f != FIXED_FLAGS[kind]))
    return packet((kind << 4) | flags, draw(_any_body()))


@st.composite
def _bad_publish(draw: st.DrawFn) -> bytes:
    qos = draw(st.integers(0, 2))
    payload = draw(st.binary(max_size=20))
    pid = draw(_PACKET_IDS)
    problem = draw(st.sampled_from(["qos3", "dup0", "utf8", "nul", "wild", "empty", "pid0"]))
    if problem == "qos3":  # §3.3.1.2
        return publish(draw(_TOPICS), payload, qos=3, packet_id=pid, flags=draw(st.integers(0, 1)))
    if problem == "dup0":  # §3.3.1.1: DUP must be 0 at QoS 0
        return publish(draw(_TOPICS), payload, flags=0x08)
    if problem == "utf8":  # §1.5.3
        topic = draw(_invalid_utf8())
    elif problem == "nul":
        topic = draw(_TOPICS) + b"\x00"
    elif problem == "wild":  # §3.3.2.1
        topic = draw(_wildcard_topic())
    elif problem == "empty":  # §4.7.3
        topic = b""
    else:  # §2.3.1: packet id 0
        return publish(draw(_TOPICS), payload, qos=qos or 1, packet_id=0)
    return publish(topic, payload, qos=qos, packet_id=pid)


@st.composite
def _short_remaining_length(draw: st.DrawFn) -> bytes:
    """A PUBLISH whose remaining length ends inside its topic or packet id (§2.2.3)."""
    topic, qos = draw(_TOPICS), draw(st.integers(0, 2))
    body = field(topic) + (draw(_PACKET_IDS).to_bytes(2, "big") if qos else b"")
    cut = draw(st.integers(0, len(body) - 1))
    return bytes([(PUBLISH << 4) | (qos << 1)]) + remaining_length(cut) + body


@st.composite
def _bad_subscription(draw: st.DrawFn) -> bytes:
    problem = draw(st.sampled_from(["pid0", "none", "qos", "utf8", "empty", "unsub0", "unsub"]))
    topic = draw(_TOPICS)
    if problem == "pid0":  # §2.3.1
        return subscribe((topic, 0), packet_id=0)
    if problem == "none":  # §3.8.3: at least one filter
        return subscribe(packet_id=draw(_PACKET_IDS))
    if problem == "qos":  # §3.8.3.1: reserved bits and QoS 3
        return subscribe((topic, draw(st.integers(3, 255))))
    if problem == "utf8":
        return subscribe((draw(_invalid_utf8()), 1))
    if problem == "empty":
        return subscribe((b"", 1))
    if problem == "unsub0":
        return unsubscribe(topic, packet_id=0)
    return unsubscribe(packet_id=draw(_PACKET_IDS))


@st.composite
def _bad_lengths(draw: st.DrawFn) -> bytes:
    """Acks must be 2 bytes long (§3.4-§3.7), PINGREQ and DISCONNECT empty (§3.12, §3.14)."""
    kind = draw(st.sampled_from([PUBACK, PUBREC, PUBREL, PUBCOMP, PINGREQ, DISCONNECT]))
    size = draw(st.integers(0, 6).filter(lambda n: n != (2 if kind < PINGREQ else 0)))
    return packet((kind << 4) | FIXED_FLAGS[kind], draw(st.binary(min_size=size, max_size=size)))


def _oversize_or_overlong() -> st.SearchStrategy[bytes]:
    """A remaining length past max_packet_size (the body is never sent: the broker must not
    wait for it), or one encoded in 5 bytes (§2.2.3 allows 4)."""
    return st.one_of(
        st.integers(300 * 1024, 268_435_455).map(lambda n: b"\x30" + remaining_length(n)),
        st.just(b"\x30\xff\xff\xff\xff\x7f"),
    )


def violations() -> st.SearchStrategy[bytes]:
    """Packets a connected client must never send: each has to close its connection."""
    return st.one_of(
        _reserved_or_server_only(),
        _bad_flags(),
        _bad_publish(),
        _short_remaining_length(),
        _bad_subscription(),
        _bad_lengths(),
        _oversize_or_overlong(),
        st.builds(lambda cid: connect(cid), _TOPIC_TEXT),  # a second CONNECT (§3.1.0)
    )


@st.composite
def _malformed_connect(draw: st.DrawFn) -> bytes:
    problem = draw(st.sampled_from(["name", "reserved", "willqos", "utf8", "extra", "will"]))
    if problem == "name":  # §3.1.2.1
        return connect(name=draw(st.binary(max_size=8).filter(lambda n: n != b"MQTT")))
    if problem == "utf8":
        body = field(b"MQTT") + b"\x04\x02\x00\x3c" + field(draw(_invalid_utf8()))
        return packet(CONNECT << 4, body)
    if problem == "extra":  # bytes past the payload
        return connect("x", extra=draw(st.binary(min_size=1, max_size=8)))
    flags = {"reserved": 0x03, "willqos": 0x1E, "will": 0x06}[problem]
    return packet(CONNECT << 4, field(b"MQTT") + bytes([4, flags]) + b"\x00\x3c" + field(b"c"))


def first_packet_violations() -> st.SearchStrategy[bytes]:
    """What a client may not send as its first packet: anything but a well-formed CONNECT."""
    return st.one_of(violations().filter(lambda p: p[0] >> 4 != CONNECT), _malformed_connect())


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    base = draw(
        st.one_of(
            st.builds(publish, _TOPICS, st.binary(max_size=30), qos=st.integers(0, 2)),
            st.builds(lambda t: subscribe((t, 1)), _TOPICS),
            st.just(PINGREQ_PACKET),
            st.builds(lambda cid: connect(cid, username="x"), _TOPIC_TEXT),
        )
    )
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data)))
    return bytes(data[:cut])


def noise() -> st.SearchStrategy[bytes]:
    """Anything: random bytes, and valid packets with bytes changed and cut short."""
    return st.one_of(st.binary(min_size=1, max_size=200), _mutated())
