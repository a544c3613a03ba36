"""The four OpenSSL calls of the transport's hot path, on pyOpenSSL's own cffi binding.

pyOpenSSL's ``Connection.bio_write``, ``recv``, ``send`` and ``bio_read`` wrap each call in
Python: type checks and conversions, its callbacks' stored problems, ``SSL_get_error`` even
after a success. For a small record that is about 1.2 µs of a 3 µs read and of a 3 µs
write, paid on every socket read and every flush (``broker.tls_protocol``). Here a call that
succeeds goes straight to OpenSSL through the same binding (``OpenSSL._util``, the
``cryptography`` one), and a call that fails is handed to pyOpenSSL's own error handling, so
the exceptions are pyOpenSSL's (``WantReadError``, ``ZeroReturnError``, ``SSL.Error``).

It relies on private attributes of a pyOpenSSL ``Connection`` (``_ssl``, ``_into_ssl``,
``_from_ssl``, ``_raise_ssl_error``, ``_handle_bio_errors``). ``DIRECT`` says whether this
pyOpenSSL has them; without them every call goes through the public methods.

Used after the handshake only; the handshake keeps pyOpenSSL's methods.
"""

from typing import Any

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from OpenSSL._util import no_zero_allocator as _new

__all__ = ["DIRECT", "feed", "read_record", "take_output", "write_plain"]


def _has_private_api() -> bool:
    try:
        probe = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    except SSL.Error:
        return False
    names = ("_ssl", "_into_ssl", "_from_ssl", "_raise_ssl_error", "_handle_bio_errors")
    return all(hasattr(probe, name) for name in names)


DIRECT = _has_private_api()


def _direct_feed(tls: SSL.Connection, data: bytes) -> None:
    """Bytes from the socket into the connection's read BIO."""
    into: Any = tls._into_ssl
    result = _lib.BIO_write(into, _ffi.from_buffer(data), len(data))
    if result <= 0:
        tls._handle_bio_errors(into, result)


def _direct_read_record(tls: SSL.Connection, size: int) -> bytes:
    """One SSL_read: the plaintext of one record (at most ``size`` bytes)."""
    ssl: Any = tls._ssl
    buffer = _new("char[]", size)
    result = _lib.SSL_read(ssl, buffer, size)
    if result > 0:
        return _ffi.buffer(buffer, result)[:]  # type: ignore[no-any-return]
    tls._raise_ssl_error(ssl, result)
    return b""


def _direct_write_plain(tls: SSL.Connection, data: bytes | memoryview) -> int:
    """One SSL_write into the connection's write BIO; the bytes it took."""
    ssl: Any = tls._ssl
    result: int = _lib.SSL_write(ssl, _ffi.from_buffer(data), len(data))
    if result <= 0:
        tls._raise_ssl_error(ssl, result)
    return result


def _direct_take_output(tls: SSL.Connection, size: int) -> bytes:
    """Up to ``size`` bytes OpenSSL wrote for the socket; b"" if there are none."""
    out: Any = tls._from_ssl
    buffer = _new("char[]", size)
    result = _lib.BIO_read(out, buffer, size)
    if result > 0:
        return _ffi.buffer(buffer, result)[:]  # type: ignore[no-any-return]
    if _lib.BIO_should_retry(out):
        return b""  # nothing written yet
    tls._handle_bio_errors(out, result)  # raises
    return b""


def _public_feed(tls: SSL.Connection, data: bytes) -> None:
    tls.bio_write(data)


def _public_read_record(tls: SSL.Connection, size: int) -> bytes:
    return tls.recv(size)


def _public_write_plain(tls: SSL.Connection, data: bytes | memoryview) -> int:
    return tls.send(data)


def _public_take_output(tls: SSL.Connection, size: int) -> bytes:
    try:
        return tls.bio_read(size)
    except SSL.WantReadError:
        return b""


feed = _direct_feed if DIRECT else _public_feed
read_record = _direct_read_record if DIRECT else _public_read_record
write_plain = _direct_write_plain if DIRECT else _public_write_plain
take_output = _direct_take_output if DIRECT else _public_take_output
