"""The admin server's own bounds on what a client without a token can hold: a connection that
does not send a whole request head in time is closed, and so is one past the maximum."""

import asyncio
import logging

import pytest

from admin import http_guard
from admin.limits import HttpLimits
from admin.server import HttpServer
from tests.admin.raw_http import HEAD, OK, WAIT, answered, closed, hello

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


@pytest.mark.usefixtures("quick")
async def test_connections_past_the_maximum_are_closed_at_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="admin.http_guard")
    # Tests reach the server on 127.0.0.1 only: taken here for a client from elsewhere.
    monkeypatch.setattr(http_guard, "_loopback", lambda _peer, _ip: False)
    server = await HttpServer.start(hello, "127.0.0.1", 0, limits=FEW)
    held = []
    try:
        for _ in range(3):  # answered: the server has taken each connection in
            reader, writer = await _open(server)
            writer.write(HEAD)
            assert await answered(reader) == OK
            held.append(writer)
        extra, extra_writer = await _open(server)
        extra_writer.write(HEAD)
        assert await closed(extra) == b""  # no answer: closed before its request was read
        assert "admin HTTP: 3 connections open: 1 new one(s) closed at once" in caplog.text
        extra_writer.close()
    finally:
        for writer in held:
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
