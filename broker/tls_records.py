"""Where TLS records end in the byte stream a client sends: pure, no I/O, no OpenSSL.

The transport (``broker.tls_protocol``) counts the records each socket read completes, so
that it calls SSL_read once per record instead of until OpenSSL reports WANT_READ (an
exception through pyOpenSSL on every read). Every record, before and after the handshake,
starts with a 5-byte header whose last two bytes are the length of what follows
(RFC 8446 §5.1, RFC 5246 §6.2.1).
"""

from typing import Final

HEADER: Final = 5
# RFC 5246 §6.2.3: no record is longer (TLS 1.3's limit, 2^14 + 256, is lower, RFC 8446 §5.2).
MAX_LENGTH: Final = 2**14 + 2048


def records_completed(head: bytes, left: int, data: bytes) -> tuple[int, bytes, int]:
    """The number of records that end within ``data``, and the state to pass with the next
    read: ``head``, the first bytes of a header the read cut (fewer than 5), and ``left``,
    the bytes of the current record still to come. Start a stream with ``b""`` and 0."""
    if head:
        data = head + data
    size, at, count = len(data), left, 0
    if at:
        if at > size:
            return 0, b"", at - size
        count = 1  # the record in progress ends in this read
    while at + HEADER <= size:
        length = (data[at + 3] << 8) | data[at + 4]
        if length > MAX_LENGTH:
            # OpenSSL refuses it from its header (record_overflow): read it now, not once
            # the client has sent up to 64 KiB more.
            return count + 1, b"", 0
        end = at + HEADER + length
        if end > size:
            return count, b"", end - size
        count += 1
        at = end
    return count, data[at:], 0
