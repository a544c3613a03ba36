"""Raw HTTP/1.1 against the admin server, for the tests of its connection bounds
(``admin.http_guard``): a request head sent by hand, the smallest application answering it,
and what came back before the server answered or closed."""

import asyncio

from admin.server import Receive, Scope, Send

WAIT = 10.0  # bound on any one wait: the head timeout in these tests is a fraction of it
HEAD = b"GET / HTTP/1.1\r\nHost: nanoiot\r\n\r\n"
OK = b"HTTP/1.1 200 OK hello"  # ``answered`` for ``hello``'s response


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    await send({"type": "http.response.body", "body": b"hello"})


async def closed(reader: asyncio.StreamReader) -> bytes:
    """What came before the server closed the connection (fails after WAIT if it did not)."""
    try:
        return await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        return b""


async def answered(reader: asyncio.StreamReader) -> bytes:
    """The status line and the 5-byte body of the response."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    body = await asyncio.wait_for(reader.readexactly(5), WAIT)
    return head.split(b"\r\n", 1)[0] + b" " + body


BUSY_HEAD = b"GET /busy HTTP/1.1\r\nHost: nanoiot\r\n\r\n"


class Busy:
    """``hello``, but a request for ``/busy`` is answered only once ``release`` is set: its
    connection is busy with a request until then (not idle, so never closed for a new one)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/busy":
            self.started.put_nowait(None)
            await self.release.wait()
        await hello(scope, receive, send)

    async def busy(
        self, port: int, source: str = "127.0.0.1"
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection whose request the server is handling, until ``release``."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(BUSY_HEAD)
        await asyncio.wait_for(self.started.get(), WAIT)
        return reader, writer
