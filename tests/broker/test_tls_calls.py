"""The transport's four hot-path OpenSSL calls (``broker.tls_calls``): straight through
pyOpenSSL's binding, or through its public methods, they behave alike, errors included."""

import contextlib
import ssl
from collections.abc import Callable

import pytest
from OpenSSL import SSL

from broker import tls_calls
from broker.tls import build_server_context
from nanoiot.settings import Settings
from tests.broker.tls_certs import ClientFiles, ServerPki

WAYS = {
    "direct": (
        tls_calls._direct_feed, tls_calls._direct_read_record, tls_calls._direct_write_plain,
        tls_calls._direct_take_output,
    ),
    "public": (
        tls_calls._public_feed, tls_calls._public_read_record, tls_calls._public_write_plain,
        tls_calls._public_take_output,
    ),
}  # fmt: skip


def test_this_pyopenssl_takes_the_direct_way() -> None:
    # If a pyOpenSSL release renames what the direct calls use, the transport still works
    # (the public methods), but 2-3 µs slower per read and per write: this says so.
    assert tls_calls.DIRECT
    assert tls_calls.feed is tls_calls._direct_feed


def _connected(
    pki: ServerPki, client: ClientFiles, settings: Settings
) -> tuple[SSL.Connection, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    server = SSL.Connection(build_server_context(settings), None)
    server.set_accept_state()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = pki.client_context(client).wrap_bio(incoming, outgoing, server_hostname="localhost")
    for _ in range(10):
        done = 0
        try:
            tls.do_handshake()
            done += 1
        except ssl.SSLWantReadError:
            pass
        if outgoing.pending:
            server.bio_write(outgoing.read())
        try:
            server.do_handshake()
            done += 1
        except SSL.WantReadError:
            pass
        with contextlib.suppress(SSL.WantReadError):
            incoming.write(server.bio_read(65536))
        if done == 2:
            return server, tls, incoming, outgoing
    raise AssertionError("no handshake")


@pytest.mark.parametrize("way", sorted(WAYS))
def test_read_write_and_their_errors(
    way: str, pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    feed, read_record, write_plain, take_output = WAYS[way]
    server, client, incoming, outgoing = _connected(pki, client_ec, tls_settings())
    while take_output(server, 65536):
        pass  # the session tickets
    assert take_output(server, 65536) == b""  # nothing to send is no error

    client.write(b"hello")
    client.write(b"again")
    feed(server, outgoing.read())
    assert read_record(server, 16384) == b"hello"  # one record per read
    assert read_record(server, 16384) == b"again"
    with pytest.raises(SSL.WantReadError):
        read_record(server, 16384)

    assert write_plain(server, b"world") == 5
    assert write_plain(server, memoryview(b"..and more")[2:]) == 8
    incoming.write(take_output(server, 65536))
    assert client.read(100) + client.read(100) == b"world" + b"and more"

    with contextlib.suppress(ssl.SSLWantReadError):
        client.unwrap()
    feed(server, outgoing.read())
    with pytest.raises(SSL.ZeroReturnError):  # close_notify, RFC 8446 §6.1
        read_record(server, 16384)


@pytest.mark.parametrize("way", sorted(WAYS))
def test_a_corrupt_record_is_an_ssl_error(
    way: str, pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    feed, read_record, _, _ = WAYS[way]
    server, client, _, outgoing = _connected(pki, client_ec, tls_settings())
    client.write(b"hello")
    record = bytearray(outgoing.read())
    record[-1] ^= 1  # its authentication tag no longer matches (RFC 8446 §5.2)
    feed(server, bytes(record))
    with pytest.raises(SSL.Error):
        read_record(server, 16384)
