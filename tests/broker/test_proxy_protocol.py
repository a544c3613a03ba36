"""The PROXY protocol v2 parser and the trusted-address list: pure, no sockets."""

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.proxy_protocol import (
    MAX_HEADER_BYTES,
    SIGNATURE,
    Command,
    HeaderReader,
    ProxyHeaderError,
    TrustedProxies,
    looks_like_proxy_header,
    parse_header,
)
from broker.tls_failures import FailureKind, TlsFailureReason, classify
from nanoiot.errors import ConfigError
from nanoiot.settings import load_settings
from tests.broker.proxy_headers import tlv, v2_header

CLIENT_HELLO_START = bytes.fromhex("160301020001")


def test_tcp_over_ipv4_gives_the_client_and_the_rest() -> None:
    header = v2_header()
    reader = HeaderReader()
    done = reader.feed(header + CLIENT_HELLO_START)
    assert done is not None
    parsed, rest = done
    assert parsed.command is Command.PROXY
    assert parsed.source == ("203.0.113.7", 40001)
    assert parsed.destination == ("192.0.2.1", 8883)
    assert parsed.size == len(header) == 16 + 12
    assert rest == CLIENT_HELLO_START


def test_tcp_over_ipv6() -> None:
    header = v2_header(family=0x21, source=("2001:db8::7", 5), destination=("2001:db8::1", 8883))
    parsed = parse_header(header)
    assert parsed is not None
    assert parsed.source == ("2001:db8::7", 5)
    assert parsed.destination == ("2001:db8::1", 8883)
    assert parsed.size == 16 + 36


def test_local_keeps_the_socket_address_and_ignores_the_block() -> None:
    """§2.2: LOCAL is the balancer's own connection (health checks); its block is skipped."""
    parsed = parse_header(v2_header(command=0x0, family=0x00, body=b"anything"))
    assert parsed is not None
    assert (parsed.command, parsed.source, parsed.destination) == (Command.LOCAL, None, None)
    assert parsed.size == 16 + len(b"anything")


def test_tlvs_are_skipped() -> None:
    tlvs = tlv(0x01, b"mqtt") + tlv(0x03, b"\x00\x00\x00\x00") + tlv(0x05, b"u" * 64)
    header = v2_header(tlvs=tlvs)
    parsed = parse_header(header + b"\x16")
    assert parsed is not None
    assert parsed.source == ("203.0.113.7", 40001)
    assert parsed.size == len(header)


def test_header_arriving_byte_by_byte() -> None:
    header = v2_header(tlvs=tlv(0x02, b"broker.example"))
    reader = HeaderReader()
    for byte in header[:-1]:
        assert reader.feed(bytes([byte])) is None
    done = reader.feed(header[-1:])
    assert done is not None
    assert done[0].source == ("203.0.113.7", 40001)
    assert done[1] == b""


REFUSED = {
    "version-1-text": (b"PROXY TCP4 203.0.113.7 192.0.2.1 40001 8883\r\n", "version 1"),
    "version-1": (v2_header(version=0x1), "only version 2"),
    "command-2": (v2_header(command=0x2), "not LOCAL or PROXY"),
    "udp": (v2_header(family=0x12), "0x12"),
    "unix-stream": (v2_header(family=0x31, body=bytes(216)), "0x31"),
    "unspecified-with-proxy": (v2_header(family=0x00, body=b""), "0x00"),
    "short-ipv4-block": (v2_header(body=bytes(11)), "shorter than 12"),
    "short-ipv6-block": (v2_header(family=0x21, body=bytes(35)), "shorter than 36"),
    "tlv-cut-short": (v2_header(tlvs=b"\x01\x00"), "cut short"),
    "tlv-overlong": (v2_header(tlvs=b"\x01\x00\x09abc"), "longer than the header"),
    "tls-instead": (CLIENT_HELLO_START, "no PROXY protocol v2 header (first bytes 16030102)"),
    "plain-mqtt": (b"\x10\x10\x00\x04MQTT", "no PROXY protocol v2 header"),
}


@pytest.mark.parametrize(("data", "why"), list(REFUSED.values()), ids=list(REFUSED))
def test_refused_with_the_reason(data: bytes, why: str) -> None:
    with pytest.raises(ProxyHeaderError, match="PROXY") as refused:
        HeaderReader().feed(data)
    assert why in str(refused.value)
    assert "\n" not in str(refused.value)


def test_an_oversized_header_is_refused_from_its_fixed_part_alone() -> None:
    """No waiting for (or buffering) a body over the limit: the length field decides."""
    fixed = SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", MAX_HEADER_BYTES)
    with pytest.raises(ProxyHeaderError, match=f"over the limit of {MAX_HEADER_BYTES}"):
        parse_header(fixed)
    # The largest allowed one is accepted.
    padding = tlv(0x04, bytes(MAX_HEADER_BYTES - 16 - 12 - 3))
    parsed = parse_header(v2_header(tlvs=padding))
    assert parsed is not None
    assert parsed.size == MAX_HEADER_BYTES


def test_timeout_message_says_how_much_came() -> None:
    reader = HeaderReader()
    assert reader.feed(SIGNATURE[:5]) is None
    assert "within 5 s (5 bytes came)" in str(reader.timed_out())


@given(st.binary(max_size=80))
def test_any_bytes_after_the_signature_are_a_header_more_needed_or_refused(tail: bytes) -> None:
    try:
        parsed = parse_header(SIGNATURE + tail)
    except ProxyHeaderError:
        return
    assert parsed is None or parsed.size <= len(SIGNATURE) + len(tail)


def test_looks_like_proxy_header() -> None:
    assert looks_like_proxy_header(v2_header())
    assert looks_like_proxy_header(SIGNATURE[:4])
    assert looks_like_proxy_header(b"PROXY TCP4 ")
    for other in (b"", CLIENT_HELLO_START, b"\x10\x10\x00\x04MQTT", b"POST /", b"PROPFIND /"):
        assert not looks_like_proxy_header(other), other


def test_trusted_addresses_and_networks() -> None:
    trusted = TrustedProxies(["10.0.5.7", "10.0.6.0/24", "fd00::/64"])
    assert trusted
    assert trusted.trusts("10.0.5.7")
    assert trusted.trusts("10.0.6.200")
    assert trusted.trusts("::ffff:10.0.6.1")  # an IPv4 peer on a dual-stack listener
    assert trusted.trusts("fd00::1")
    for other in ("10.0.5.8", "10.0.7.1", "fd01::1", "", "not-an-address"):
        assert not trusted.trusts(other), other
    assert not TrustedProxies([])
    assert not TrustedProxies([]).trusts("127.0.0.1")


def test_setting_takes_addresses_and_networks_from_the_environment(tmp_path: Path) -> None:
    env = {"NANOIOT_PROXY_PROTOCOL_TRUSTED": '["10.0.5.7", "10.0.6.0/24", "::1"]'}
    settings = load_settings(environ=env, cwd=tmp_path)
    assert settings.proxy_protocol_trusted == ["10.0.5.7", "10.0.6.0/24", "::1"]
    assert load_settings(environ={}, cwd=tmp_path).proxy_protocol_trusted == []


def test_setting_refuses_a_bad_entry_in_one_line(tmp_path: Path) -> None:
    env = {"NANOIOT_PROXY_PROTOCOL_TRUSTED": '["10.0.5.7", "haproxy.local"]'}
    with pytest.raises(ConfigError) as refused:
        load_settings(environ=env, cwd=tmp_path)
    message = str(refused.value)
    assert "proxy_protocol_trusted" in message
    assert "'haproxy.local' is not an IP address or CIDR network" in message
    assert "\n" not in message


def test_failures_are_classified() -> None:
    bad = classify(FailureKind.ERROR, ProxyHeaderError("PROXY protocol command 0x2"), b"")
    assert bad.reason is TlsFailureReason.PROXY_HEADER
    assert bad.text == "from a trusted load balancer: PROXY protocol command 0x2"
    untrusted = classify(FailureKind.ERROR, None, v2_header()[:16])
    assert untrusted.reason is TlsFailureReason.PROXY_UNTRUSTED
    assert "not in proxy_protocol_trusted" in untrusted.text
