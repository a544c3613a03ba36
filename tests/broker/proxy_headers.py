"""PROXY protocol v2 headers built byte by byte, as HAProxy's send-proxy-v2 writes them
(proxy-protocol.txt §2.2), for the parser's tests and those that put a header before TLS."""

import ipaddress
import struct

from broker.proxy_protocol import SIGNATURE


def v2_header(
    command: int = 0x1,
    family: int = 0x11,
    source: tuple[str, int] = ("203.0.113.7", 40001),
    destination: tuple[str, int] = ("192.0.2.1", 8883),
    tlvs: bytes = b"",
    version: int = 0x2,
    body: bytes | None = None,
) -> bytes:
    """A header as HAProxy's send-proxy-v2 writes it (proxy-protocol.txt §2.2)."""
    if body is None:
        addresses = (
            ipaddress.ip_address(source[0]).packed + ipaddress.ip_address(destination[0]).packed
        )
        body = addresses + struct.pack("!HH", source[1], destination[1]) + tlvs
    return SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", len(body)) + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value
