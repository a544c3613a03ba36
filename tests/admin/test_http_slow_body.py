"""A request's body must keep coming (``admin.http_guard``: ``BODY_GRACE``, then
``BODY_MIN_RATE``): the request-head deadline alone let a client without a token hold a
connection for ever by sending a declared body a byte every few seconds (the sign-in form
reads one without a token). Time the server spends not reading is not the client's."""

import asyncio
import time

import pytest

from admin import http_guard
from admin.server import App, HttpServer, Receive, Scope, Send
from tests.admin.raw_http import OK, WAIT, answered, hello

GRACE = 0.3


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_guard, "BODY_GRACE", GRACE)
    monkeypatch.setattr(http_guard, "BODY_MIN_RATE", 1000)


def post_head(length: int) -> bytes:
    return (
        b"POST /ui/login HTTP/1.1\r\nHost: nanoiot\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


async def read_then_hello(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, as a form route does, then answers."""
    while (await receive()).get("more_body"):
        pass
    await hello(scope, receive, send)


async def trickle(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> float:
    """A byte each GRACE/3 seconds until the server closes; how long it kept the connection."""
    started = time.monotonic()
    while time.monotonic() - started < WAIT:
        try:
            writer.write(b"a")
            await writer.drain()
            # The attacker's pace; an answer (a route that answered early) is read and skipped.
            if await asyncio.wait_for(reader.read(1024), GRACE / 3) == b"":
                break  # closed by the server
        except TimeoutError:
            continue
        except ConnectionError:
            break
    return time.monotonic() - started


@pytest.mark.parametrize("app", [read_then_hello, hello], ids=["route-reads", "route-answered"])
async def test_a_body_sent_a_byte_at_a_time_is_cut_off(app: App) -> None:
    server = await HttpServer.start(app, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post_head(1000))
        held = await trickle(writer, reader)
        # Before: still open after WAIT (and for ever); now: the grace and a few bytes' worth.
        assert held < 3 * GRACE + 1, held
        writer.close()
    finally:
        await asyncio.wait_for(server.stop(), WAIT)


async def test_a_body_at_a_fair_rate_and_a_server_that_reads_late_are_served() -> None:
    go = asyncio.Event()

    async def busy_then_read(scope: Scope, receive: Receive, send: Send) -> None:
        await go.wait()  # the route is busy: the server's buffer fills, reading pauses
        await read_then_hello(scope, receive, send)

    server = await HttpServer.start(busy_then_read, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        size = 1 << 20  # past uvicorn's 64 KiB high-water mark
        writer.write(post_head(size) + b"a" * size)
        await asyncio.sleep(3 * GRACE)  # past the grace while the server does not read
        go.set()
        assert await answered(reader) == OK
        writer.close()
    finally:
        await asyncio.wait_for(server.stop(), WAIT)
