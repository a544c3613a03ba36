"""The admin server's own bounds on what a client without a token can hold: a connection that
does not send a whole request head in time is closed, and so is one past the maximum."""

import asyncio
import logging

import pytest

from admin import http_guard
from admin.server import HttpServer, Receive, Scope, Send

WAIT = 10.0  # bound on any one wait: the head timeout here is a fraction of it
HEAD = b"GET / HTTP/1.1\r\nHost: nanoiot\r\n\r\n"


async def _hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_guard, "HEAD_TIMEOUT", 0.3)
    monkeypatch.setattr(http_guard, "MAX_CONNECTIONS", 3)


async def _open(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _closed(reader: asyncio.StreamReader) -> bytes:
    """What came before the server closed the connection (fails after WAIT if it did not)."""
    try:
        return await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        return b""


async def _answered(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    body = await asyncio.wait_for(reader.readexactly(5), WAIT)
    return head.split(b"\r\n", 1)[0] + b" " + body


@pytest.mark.usefixtures("quick")
async def test_a_connection_without_a_whole_request_head_in_time_is_closed() -> None:
    server = await HttpServer.start(_hello, "127.0.0.1", 0)
    try:
        idle, idle_writer = await _open(server)
        slow, slow_writer = await _open(server)
        slow_writer.write(b"GET / HTTP/1.1\r\nHost: nano")  # the rest never comes
        assert await _closed(idle) == b""
        assert await _closed(slow) == b""
        # Between requests too: the second request's head must come in time.
        reader, writer = await _open(server)
        writer.write(HEAD)
        assert await _answered(reader) == b"HTTP/1.1 200 OK hello"
        writer.write(HEAD)
        assert await _answered(reader) == b"HTTP/1.1 200 OK hello"
        writer.write(b"GET / HTT")
        assert await _closed(reader) == b""
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
    monkeypatch.setattr(http_guard, "_loopback", lambda _transport: False)
    server = await HttpServer.start(_hello, "127.0.0.1", 0)
    held = []
    try:
        for _ in range(3):  # answered: the server has taken each connection in
            reader, writer = await _open(server)
            writer.write(HEAD)
            assert await _answered(reader) == b"HTTP/1.1 200 OK hello"
            held.append(writer)
        extra, extra_writer = await _open(server)
        extra_writer.write(HEAD)
        assert await _closed(extra) == b""  # no answer: closed before its request was read
        assert "admin HTTP: 3 connections open: 1 new one(s) closed at once" in caplog.text
        extra_writer.close()
    finally:
        for writer in held:
            writer.close()
        await asyncio.wait_for(server.stop(), WAIT)


@pytest.mark.usefixtures("quick")
async def test_the_loopback_address_is_never_turned_away() -> None:
    # The container's health check asks /healthz from 127.0.0.1 while others hold every place.
    server = await HttpServer.start(_hello, "127.0.0.1", 0)
    held = []
    try:
        for _ in range(4):
            reader, writer = await _open(server)
            writer.write(HEAD)
            assert await _answered(reader) == b"HTTP/1.1 200 OK hello"
            held.append(writer)
    finally:
        for writer in held:
            writer.close()
        await asyncio.wait_for(server.stop(), WAIT)


@pytest.mark.usefixtures("quick")
async def test_ipv4_loopback_through_a_dual_stack_listener_is_never_turned_away() -> None:
    # On "::" the health check's 127.0.0.1 arrives as ::ffff:127.0.0.1: still loopback.
    server = await HttpServer.start(_hello, "::", 0)
    held = []
    try:
        for _ in range(4):
            reader, writer = await _open(server)
            writer.write(HEAD)
            assert await _answered(reader) == b"HTTP/1.1 200 OK hello"
            held.append(writer)
    finally:
        for writer in held:
            writer.close()
        await asyncio.wait_for(server.stop(), WAIT)
