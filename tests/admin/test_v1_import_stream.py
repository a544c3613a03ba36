"""The streamed import over a real HTTP server: results come back while the upload goes on.

httpx sends a whole request body before it reads the answer (and its ASGI transport buffers
the answer), so neither can show that a row's result arrives before the rest of the upload is
sent. These tests speak HTTP/1.1 themselves over a socket to uvicorn on a free port: the body
goes out in chunks (RFC 9112 §7.1), and the next part is only sent once the results of the
previous one have been read. A server that held the upload before answering would never
answer the first part, and the wait for it would time out.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from admin.app import create_app
from admin.context import AdminContext
from admin.server import HttpServer
from storage.sql import SqlCredentialStore
from tests.admin.conftest import TOKEN, FakeBroker
from tests.certgen import issue

ANSWER_TIMEOUT = 30.0  # seconds for one part's results: generous for a busy 2-core machine


@pytest.fixture
async def server(context: AdminContext) -> AsyncIterator[HttpServer]:
    started = await HttpServer.start(create_app(context), "127.0.0.1", 0)
    try:
        yield started
    finally:
        await started.stop()


@dataclass
class ChunkedImport:
    """One POST /api/v1/devices/import whose body is sent part by part."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int = 0
    _pending: bytes = field(default=b"", repr=False)

    @classmethod
    async def open(cls, port: int) -> "ChunkedImport":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /api/v1/devices/import HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Type: application/x-ndjson\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def finish(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    async def next_result(self) -> dict[str, Any]:
        """The next JSON line of the answer, reading the status and headers first."""
        if not self.status:
            await self._read_head()
        while b"\n" not in self._pending:
            self._pending += await self._read_chunk()
        line, self._pending = self._pending.split(b"\n", 1)
        result: dict[str, Any] = json.loads(line)
        return result

    async def _read_head(self) -> None:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *headers = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        assert "transfer-encoding: chunked" in [h.lower() for h in headers]

    async def _read_chunk(self) -> bytes:
        size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
        data = await self.reader.readexactly(size + 2)  # the chunk and its CRLF
        assert size, "the answer ended before the expected result"
        return data[:-2]


def row_line(number: int) -> bytes:
    # One row in ten carries a certificate, the others a token: both paths, at a test's pace.
    if number % 10 == 0:
        row = {"name": f"dev-{number:04}", "pem": issue(f"dev-{number:04}").cert_pem}
    else:
        row = {"name": f"dev-{number:04}", "token": f"tok-{number:04}"}
    return json.dumps(row).encode() + b"\n"


@pytest.mark.parametrize(
    ("rows", "part"),
    [
        (30, 10),
        # About 30 ms a row on SQLite here (a committed transaction each): half a minute.
        pytest.param(1000, 100, marks=pytest.mark.slow),
    ],
    ids=["30-rows", "1000-rows"],
)
async def test_results_arrive_while_the_upload_goes_on(
    server: HttpServer, store: SqlCredentialStore, fake_broker: FakeBroker, rows: int, part: int
) -> None:
    upload = await ChunkedImport.open(server.port)
    try:
        for start in range(1, rows + 1, part):
            await upload.send(b"".join(row_line(n) for n in range(start, start + part)))
            # The rest of the upload is not sent until this part's results have come back.
            for number in range(start, start + part):
                result = await asyncio.wait_for(upload.next_result(), ANSWER_TIMEOUT)
                assert (result["line"], result["ok"]) == (number, True), result
        await upload.finish()
        summary = await asyncio.wait_for(upload.next_result(), ANSWER_TIMEOUT)
    finally:
        await upload.close()
    assert upload.status == 200
    assert summary == {
        "summary": True,
        "imported": rows,
        "failed": 0,
        "conflicts": 0,
        "complete": True,
    }
    assert (await store.list_devices(page_size=1)).total == rows
    # At least once per part: each part's rows were a batch of their own, or several.
    assert rows // part <= fake_broker.changes <= rows


async def test_a_client_that_goes_away_stops_the_import(
    server: HttpServer, store: SqlCredentialStore, caplog: pytest.LogCaptureFixture
) -> None:
    upload = await ChunkedImport.open(server.port)
    try:
        await upload.send(row_line(1) + row_line(2) + b'{"name": "dev-half",')
        for number in (1, 2):
            result = await asyncio.wait_for(upload.next_result(), ANSWER_TIMEOUT)
            assert (result["line"], result["ok"]) == (number, True)
    finally:
        await upload.close()
    with caplog.at_level(logging.ERROR):
        await server.stop()  # waits for the request in flight to end
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    listed = await store.list_devices()
    assert [d.name for d in listed.items] == ["dev-0001", "dev-0002"]


@pytest.mark.slow
async def test_a_client_that_reads_only_after_sending_everything_gets_every_result(
    server: HttpServer,
) -> None:
    """What httpx and requests do: the whole body first, then the answer. The answer is far
    larger than the sockets' buffers, so a server that stopped importing until the client
    read would never finish reading the upload."""
    rows = 200_000  # refused rows (not PEM): quick to import, ~25 MB of answer
    body = b"".join(b'{"name": "x%d", "pem": "not a pem"}\n' % n for n in range(rows))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            b"POST /api/v1/devices/import HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Type: application/x-ndjson\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        )
        for start in range(0, len(body), 1 << 16):
            writer.write(body[start : start + (1 << 16)])
            await asyncio.wait_for(writer.drain(), ANSWER_TIMEOUT)
        answer = await asyncio.wait_for(reader.read(), ANSWER_TIMEOUT)
    finally:
        writer.transport.abort()  # close() would wait to send what the server does not read
    # The answer is chunked (RFC 9112 §7.1); its last JSON line is the summary.
    summary = json.loads(answer.rstrip(b"\r\n0").rsplit(b"\n", 2)[-1] or b"{}")
    assert summary == {"summary": True, "imported": 0, "failed": rows, "conflicts": 0,
                       "complete": True}  # fmt: skip
