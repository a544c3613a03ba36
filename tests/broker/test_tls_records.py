"""Counting the TLS records a read completes (``broker.tls_records``), on real TLS 1.3
ciphertext, cut everywhere; and a client whose records reach the broker cut and joined in
awkward places still gets every byte echoed."""

import asyncio
import itertools
import random
import socket
import ssl
from collections.abc import Callable

from broker.tls import build_server_context
from broker.tls_connection import TlsConnection
from broker.tls_records import MAX_LENGTH, records_completed
from broker.transport import start_tls_server
from nanoiot.settings import Settings
from tests.broker.tls_certs import ClientFiles, ServerPki


def _boundaries(records: list[bytes]) -> list[int]:
    ends, at = [], 0
    for record in records:
        at += len(record)
        ends.append(at)
    return ends


def _fake_records(sizes: list[int]) -> list[bytes]:
    """Records as they travel: type 23, version 0x0303, length, then opaque bytes."""
    return [bytes((23, 3, 3, size >> 8, size & 0xFF)) + bytes(size) for size in sizes]


def _count_in_chunks(stream: bytes, cuts: list[int]) -> list[int]:
    head, left, counts, start = b"", 0, [], 0
    for end in [*cuts, len(stream)]:
        count, head, left = records_completed(head, left, stream[start:end])
        counts.append(count)
        start = end
    assert (head, left) == (b"", 0)  # the stream ends on a record boundary
    return counts


def _expected(ends: list[int], cuts: list[int], size: int) -> list[int]:
    edges = [0, *cuts, size]
    return [sum(1 for e in ends if a < e <= b) for a, b in itertools.pairwise(edges)]


def test_every_cut_of_a_stream_counts_each_record_in_the_read_that_ends_it() -> None:
    sizes = [0, 1, 17, 64, 255, 256, 300, 16384 + 256, 5, 1000]
    records = _fake_records(sizes)
    stream = b"".join(records)
    ends = _boundaries(records)
    for step in (1, 2, 3, 4, 5, 6, 7, 64, 1000):
        cuts = list(range(step, len(stream), step))
        assert _count_in_chunks(stream, cuts) == _expected(ends, cuts, len(stream))
    rng = random.Random(17)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 12)))
        assert _count_in_chunks(stream, cuts) == _expected(ends, cuts, len(stream))


def test_a_header_longer_than_any_record_counts_at_once_for_openssl_to_refuse() -> None:
    oversized = bytes((23, 3, 3)) + (MAX_LENGTH + 1).to_bytes(2, "big")
    assert records_completed(b"", 0, oversized)[0] == 1
    # The longest legal record is only counted once it is all there.
    legal = bytes((23, 3, 3)) + MAX_LENGTH.to_bytes(2, "big")
    assert records_completed(b"", 0, legal) == (0, b"", MAX_LENGTH)


class _Echo:
    def __init__(self, connection: TlsConnection) -> None:
        self.connection = connection

    def data_received(self, data: bytes) -> None:
        self.connection.write(data)

    def connection_lost(self) -> None:
        pass


async def test_records_cut_and_joined_anywhere_are_all_read(
    pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    """The client's Finished and its first records leave in one write, then records go out
    cut in two, three at a time, and cut inside their header: the broker reads them all
    (a miscount would leave a record unread in OpenSSL's buffer, and this would time out)."""
    settings = tls_settings()
    server = await start_tls_server(
        build_server_context(settings), "127.0.0.1", 0, handshake_timeout=5.0,
        on_open=_Echo,
    )  # fmt: skip
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            await _send_cut_records(pki, client_ec, reader, writer)
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def _send_cut_records(
    pki: ServerPki,
    client_ec: ClientFiles,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Handshake, then records cut and joined in awkward places; all must come back."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = pki.client_context(client_ec).wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            writer.write(outgoing.read())
            incoming.write(await asyncio.wait_for(reader.read(65536), 5))
    tls.write(b"first")  # behind the client's Finished, in the same write
    writer.write(outgoing.read())
    sent = [b"first"]
    rng = random.Random(5)
    for round_ in range(60):
        batch = b""
        for number in range(rng.randint(1, 3)):
            message = f"m{round_}.{number}".encode() * rng.randint(1, 40)
            tls.write(message)
            sent.append(message)
            batch += outgoing.read()
        for piece in _pieces(batch, rng):
            writer.write(piece)
            await writer.drain()
            # One turn of the loop: the server reads this piece before the next is sent.
            await asyncio.sleep(0)
    expected = b"".join(sent)
    received = b""
    while len(received) < len(expected):
        try:
            received += tls.read(65536)
        except ssl.SSLWantReadError:
            incoming.write(await asyncio.wait_for(reader.read(65536), 5))
    assert received == expected


def _pieces(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut at a few places, one of them inside the first record's header."""
    cuts = sorted({rng.randint(1, 4), *rng.sample(range(1, len(data)), min(3, len(data) - 1))})
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if a < b]
