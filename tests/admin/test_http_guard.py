"""The admin server's own bounds on what a client without a token can hold: a connection that
does not send a whole request head in time is closed; past the maximum a new one takes the
place of the longest idle, or with every connection busy is closed."""

import asyncio
import logging

import pytest

from admin import http_guard
from admin.limits import HttpLimits
from admin.server import HttpServer
from tests.admin.raw_http import HEAD, OK, WAIT, Busy, answered, closed, hello

# http_max_connections, configured small.
FEW = HttpLimits(max_connections=3)


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_guard, "HEAD_TIMEOUT", 0.3)


async def _open(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


@pytest.mark.usefixtures("quick")
async def test_a_connection_without_a_whole_request_head_in_time_is_closed() -> None:
    server = await HttpServer.start(hello, "127.0.0.1", 0, limits=FEW)
    try:
        idle, idle_writer = await _open(server)
        slow, slow_writer = await _open(server)
        slow_writer.write(b"GET / HTTP/1.1\r\nHost: nano")  # the rest never comes
        assert await closed(idle) == b""
        assert await closed(slow) == b""
        # Between requests too: the second request's head must come in time.
        reader, writer = await _open(server)
        writer.write(HEAD)
        assert await answered(reader) == OK
        writer.write(HEAD)
        assert await answered(reader) == OK
        writer.write(b"GET / HTT")
        assert await closed(reader) == b""
        for each in (idle_writer, slow_writer, writer):
            each.close()
    finally:
        await asyncio.wait_for(server.stop(), WAIT)


async def test_connections_past_the_maximum_are_closed_at_once_when_all_are_busy(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="admin.http_guard")
    # Tests reach the server on 127.0.0.1 only: taken here for a client from elsewhere.
    monkeypatch.setattr(http_guard, "_loopback", lambda _peer, _ip: False)
    app = Busy()
    server = await HttpServer.start(app, "127.0.0.1", 0, limits=FEW)
    held = []
    try:
        for _ in range(3):  # each request being handled: no connection is idle
            held.append(await app.busy(server.port))
        extra, extra_writer = await _open(server)
        extra_writer.write(HEAD)
        assert await closed(extra) == b""  # no answer: closed before its request was read
        assert "admin HTTP: 3 connections open: 1 new one(s) closed at once" in caplog.text
        extra_writer.close()
        app.release.set()
        for reader, _ in held:
            assert await answered(reader) == OK  # the busy ones were never closed
    finally:
        app.release.set()
        for _, writer in held:
            writer.close()
        await asyncio.wait_for(server.stop(), WAIT)


async def test_a_new_connection_past_the_maximum_takes_the_longest_idle_s_place(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8 addresses of 16 idle connections held all 128 places: operators were kept out.
    caplog.set_level(logging.WARNING, logger="admin.http_guard")
    monkeypatch.setattr(http_guard, "_loopback", lambda _peer, _ip: False)
    app = Busy()
    server = await HttpServer.start(app, "127.0.0.1", 0, limits=FEW)
    opened = []
    try:
        waiting = await _open(server)  # never sends a head: the longest idle
        kept_alive = await _open(server)
        kept_alive[1].write(HEAD)
        assert await answered(kept_alive[0]) == OK  # idle between requests since
        busy = await app.busy(server.port)
        opened = [waiting, kept_alive, busy]
        for expected in (waiting, kept_alive):  # each newcomer closes the longest idle
            newcomer = await _open(server)
            opened.append(newcomer)
            newcomer[1].write(HEAD)
            assert await answered(newcomer[0]) == OK
            assert await closed(expected[0]) == b""
        assert (
            "admin HTTP: 3 connections open: 1 new one(s) took the place of the longest idle"
            in caplog.text
        )
        app.release.set()
        assert await answered(busy[0]) == OK  # busy with a request: never closed for another
    finally:
        app.release.set()
        for _, writer in opened:
            writer.close()
        await asyncio.wait_for(server.stop(), WAIT)


@pytest.mark.usefixtures("quick")
@pytest.mark.parametrize("bound", ["127.0.0.1", "::"], ids=["ipv4", "dual-stack"])
async def test_the_loopback_address_is_never_turned_away(bound: str) -> None:
    # The container's health check asks /healthz from 127.0.0.1 while others hold every place;
    # on "::" it arrives as ::ffff:127.0.0.1, loopback still.
    server = await HttpServer.start(hello, bound, 0, limits=FEW)
    held = []
    try:
        for _ in range(4):
            reader, writer = await _open(server)
            writer.write(HEAD)
            assert await answered(reader) == OK
            held.append(writer)
    finally:
        for writer in held:
            writer.close()
        await asyncio.wait_for(server.stop(), WAIT)
