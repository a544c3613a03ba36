"""PROXY protocol version 2 in front of the TLS handshake, from trusted load balancers only.

A TCP load balancer (HAProxy ``send-proxy-v2``, cloud network load balancers) that passes TLS
through to the broker opens its own connection to us, so the socket's peer is the balancer.
PROXY protocol v2 (HAProxy's ``proxy-protocol.txt``, section 2.2) makes it send one binary
header first, before the client's TLS bytes, naming the client's address: with it, the broker
logs, records in auth events and rate-limits the device's own address.

Rules taken from the specification:

- The header is accepted only from the addresses listed in ``proxy_protocol_trusted``; from a
  listed address it is mandatory (a receiver must not guess whether a header is present), and
  from any other address it is a handshake failure, so that nobody else can claim an address.
- The 16-byte fixed part is the 12-byte signature, version 2 with command LOCAL (0) or PROXY
  (1), the address family and transport, and the length of what follows.
- LOCAL (health checks, connections the balancer makes for itself) keeps the socket's own
  addresses. PROXY must carry TCP over IPv4 (``0x11``) or IPv6 (``0x21``); anything else
  (UDP, UNIX sockets, an unspecified family) is refused: the broker only speaks MQTT over TCP.
- Type-length-value fields after the addresses (ALPN, authority, CRC32C, unique id, ...) are
  walked to check their framing, then skipped: the broker needs none of them.
- Version 1 (the text form ``PROXY TCP4 ...``) is refused with a hint to use version 2.

Limits: at most ``MAX_HEADER_BYTES`` bytes in all (the specification's own minimum buffer is
232 bytes; cloud balancers' TLVs stay well under 1 KiB), and the whole header must arrive
within ``HEADER_TIMEOUT`` seconds of the connection (bounded by ``tls_handshake_timeout`` too):
a balancer sends it at once, before any client byte.

Pure: no sockets, no clock, no asyncio. ``broker.transport`` feeds it the first bytes of a
connection from a trusted address.
"""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "HEADER_TIMEOUT",
    "MAX_HEADER_BYTES",
    "SIGNATURE",
    "Command",
    "HeaderReader",
    "ProxyHeader",
    "ProxyHeaderError",
    "TrustedProxies",
    "looks_like_proxy_header",
    "parse_header",
]

# proxy-protocol.txt §2.2: the signature is chosen to be invalid as the start of TLS, HTTP,
# SSH, MQTT and the text form of version 1.
SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX: Final = b"PROXY "
_FIXED: Final = 16  # signature (12), version and command (1), family (1), length (2)
MAX_HEADER_BYTES: Final = _FIXED + 2048
HEADER_TIMEOUT: Final = 5.0

_VERSION_2: Final = 0x2
_TCP_OVER_IPV4: Final = 0x11
_TCP_OVER_IPV6: Final = 0x21
_ADDRESS_BYTES: Final = {_TCP_OVER_IPV4: 12, _TCP_OVER_IPV6: 36}  # two addresses, two ports


class ProxyHeaderError(Exception):
    """The bytes are not an acceptable PROXY v2 header; ``str()`` says why, in one line.

    A network peer's mistake, not a NanoIoT error: the transport reports it as a failed
    handshake (``broker.tls_failures``) and closes that connection.
    """


class Command(IntEnum):
    LOCAL = 0x0  # the balancer's own connection (health check): keep the socket's addresses
    PROXY = 0x1  # relayed for a client: the addresses below are the client's and ours


@dataclass(frozen=True)
class ProxyHeader:
    command: Command
    source: tuple[str, int] | None  # the client (None for LOCAL)
    destination: tuple[str, int] | None  # the address the client dialled (None for LOCAL)
    size: int  # bytes the header took, signature included


def looks_like_proxy_header(first_bytes: bytes) -> bool:
    """True if a connection starts like a PROXY header (version 2, or the text form)."""
    return bool(first_bytes) and (
        SIGNATURE.startswith(first_bytes[: len(SIGNATURE)])
        or _V1_PREFIX.startswith(first_bytes[: len(_V1_PREFIX)])
    )


def parse_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``, or None if more bytes are needed.

    Raises ``ProxyHeaderError`` as soon as the bytes cannot become a valid header.
    """
    if not SIGNATURE.startswith(data[: len(SIGNATURE)]):
        if _V1_PREFIX.startswith(data[: len(_V1_PREFIX)]):
            if len(data) < len(_V1_PREFIX):
                return None
            raise ProxyHeaderError("PROXY protocol version 1 (text) header: send version 2")
        raise ProxyHeaderError(f"no PROXY protocol v2 header (first bytes {data[:4].hex()})")
    if len(data) < _FIXED:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != _VERSION_2:
        raise ProxyHeaderError(f"PROXY protocol version {version}: only version 2 is accepted")
    if command not in (Command.LOCAL, Command.PROXY):
        raise ProxyHeaderError(f"PROXY protocol command {command:#x} is not LOCAL or PROXY")
    size = _FIXED + int.from_bytes(data[14:16], "big")
    if size > MAX_HEADER_BYTES:
        raise ProxyHeaderError(
            f"PROXY protocol header of {size} bytes is over the limit of {MAX_HEADER_BYTES}"
        )
    if len(data) < size:
        return None
    return _decode(Command(command), data[13], data[_FIXED:size], size)


def _decode(command: Command, family: int, body: bytes, size: int) -> ProxyHeader:
    if command is Command.LOCAL:
        # §2.2: for LOCAL the receiver must ignore the address block, whatever its family.
        return ProxyHeader(command, None, None, size)
    need = _ADDRESS_BYTES.get(family)
    if need is None:
        raise ProxyHeaderError(
            f"PROXY protocol family/transport {family:#04x}: only TCP over IPv4 (0x11) or "
            "IPv6 (0x21) is accepted"
        )
    if len(body) < need:
        raise ProxyHeaderError(
            f"PROXY protocol address block of {len(body)} bytes is shorter than {need}"
        )
    half = (need - 4) // 2
    source_ip = ipaddress.ip_address(body[:half])
    destination_ip = ipaddress.ip_address(body[half : 2 * half])
    source_port = int.from_bytes(body[2 * half : 2 * half + 2], "big")
    destination_port = int.from_bytes(body[2 * half + 2 : need], "big")
    _check_tlvs(body[need:])
    return ProxyHeader(
        command, (str(source_ip), source_port), (str(destination_ip), destination_port), size
    )


def _check_tlvs(tlvs: bytes) -> None:
    """§2.2.7: each TLV is a type byte and a 16-bit length; they must fill the rest exactly."""
    offset = 0
    while offset < len(tlvs):
        if len(tlvs) - offset < 3:
            raise ProxyHeaderError("PROXY protocol TLV cut short (fewer than 3 bytes left)")
        length = int.from_bytes(tlvs[offset + 1 : offset + 3], "big")
        offset += 3 + length
    if offset != len(tlvs):
        raise ProxyHeaderError("PROXY protocol TLV longer than the header")


class HeaderReader:
    """Collects a connection's first bytes until its PROXY header is complete."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        """The header and the bytes after it (the client's first TLS bytes) once complete,
        else None. Raises ``ProxyHeaderError`` for bytes that cannot become a valid header."""
        self._buffer += data
        header = parse_header(self._buffer)
        if header is None:
            return None
        rest = self._buffer[header.size :]
        self._buffer = b""
        return header, rest

    def timed_out(self) -> ProxyHeaderError:
        got = len(self._buffer)
        return ProxyHeaderError(
            f"no complete PROXY protocol header within {HEADER_TIMEOUT:g} s ({got} bytes came)"
        )


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(entry: str) -> Network:
    """An address or CIDR network; ValueError with the entry named when it is neither."""
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        raise ValueError(f"'{entry}' is not an IP address or CIDR network") from None


class TrustedProxies:
    """The load balancers whose PROXY headers are believed (``proxy_protocol_trusted``)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = tuple(parse_network(entry) for entry in entries)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False  # the usual case, asked on every connect: no address parsing
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # a UNIX socket peer or no peer name: not a listed balancer
        # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)
