"""A TLS 1.2 client that presents someone else's certificate: it cannot sign for it.

OpenSSL will not load a certificate with a key that does not match it, so the impostor runs
a normal handshake with its own certificate and key, and swaps its Certificate message for
one carrying the victim's certificate on the way out (TLS 1.2 sends it in clear, RFC 5246
§7.4.6). The server must then find that CertificateVerify (§7.4.8) was not signed by the key
of the certificate it received, and fail the handshake: proof of possession is what makes
pinning a public key safe (``broker.tls``).
"""

from dataclasses import dataclass, field

_HANDSHAKE = 22  # RFC 5246 §6.2.1 ContentType
_CERTIFICATE = 11  # RFC 5246 §7.4 HandshakeType


def _u24(value: int) -> bytes:
    return value.to_bytes(3, "big")


@dataclass
class CertificateSwap:
    """``rewrite`` for ``wire.tls_attempt``: the first Certificate message gets ``victim_der``."""

    victim_der: bytes
    swapped: bool = False
    _pending: bytes = field(default=b"", repr=False)

    def __call__(self, data: bytes) -> bytes:
        data, self._pending = self._pending + data, b""
        if self.swapped:
            return data
        out = bytearray()
        while len(data) >= 5:
            length = int.from_bytes(data[3:5], "big")
            if len(data) < 5 + length:
                break
            header, body, data = data[:5], data[5 : 5 + length], data[5 + length :]
            if header[0] == _HANDSHAKE and not self.swapped:
                body = self._swap_in(body)
                header = header[:3] + len(body).to_bytes(2, "big")
            out += header + body
        self._pending = data
        return bytes(out)

    def _swap_in(self, records: bytes) -> bytes:
        """Handshake messages of one record, with a Certificate message replaced."""
        out = bytearray()
        while records:
            kind, length = records[0], int.from_bytes(records[1:4], "big")
            message, records = records[: 4 + length], records[4 + length :]
            if kind == _CERTIFICATE:
                chain = _u24(len(self.victim_der)) + self.victim_der
                body = _u24(len(chain)) + chain
                message = bytes([_CERTIFICATE]) + _u24(len(body)) + body
                self.swapped = True
            out += message
        return bytes(out)
