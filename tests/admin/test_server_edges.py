"""The admin server's answers that the application does not make, and its odd requests, on a
real server over raw sockets (tests/admin/raw_http.py).

Every answer carries the security headers (admin.headers): uvicorn's own 400 for a request h11
cannot parse had none (a text/plain "Invalid HTTP request received."), nor had Starlette's 500,
which was sent outside every middleware the application adds. A failure is answered with a
problem body, no traceback, and logged once with the request it failed.
"""

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from admin.app import create_app
from admin.context import AdminContext
from admin.headers import DEFAULTS
from admin.server import HttpServer, Receive, Scope, Send
from tests.admin.conftest import TOKEN
from tests.admin.raw_http import WAIT, closed

AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()


@pytest.fixture
async def server(context: AdminContext) -> AsyncIterator[HttpServer]:
    started = await HttpServer.start(create_app(context), "127.0.0.1", 0)
    try:
        yield started
    finally:
        await asyncio.wait_for(started.stop(), WAIT)


async def exchange(server: HttpServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` (ending with Connection: close, or one the server closes after) and
    return the status, the header fields (names in lower case) and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request)
    answer = await closed(reader)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for field in fields:
        name, _, value = field.partition(":")
        assert name.lower() not in headers, f"{name} twice"
        headers[name.lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body


def assert_secured(headers: dict[str, str]) -> None:
    for name, value in DEFAULTS:  # a page keeps its own policies (admin.headers)
        if name not in (b"content-security-policy", b"referrer-policy"):
            assert headers.get(name.decode()) == value.decode(), (name, headers)
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["referrer-policy"] in ("no-referrer", "same-origin")
    assert "date" in headers


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /healthz HTTP/1.1\r\n\r\n",  # RFC 9112 §3.2: Host is required
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # ... and only once
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ],
)
async def test_a_request_h11_cannot_parse_gets_a_secured_problem(
    server: HttpServer, request_head: bytes
) -> None:
    status, headers, body = await exchange(server, request_head)
    assert status == 400
    assert_secured(headers)
    assert headers["content-type"] == "application/json"
    assert body == b'{"status": 400, "message": "Invalid HTTP request received.", "errorCode": 31}'


async def test_malformed_requests_are_logged_once_a_minute(
    server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: uvicorn warned "Invalid HTTP request received." for each: a line per request.
    caplog.set_level(logging.INFO)
    for _ in range(5):
        status, _, _ = await exchange(server, b"GARBAGE\r\n\r\n")
        assert status == 400
    # ... and two for each Upgrade request, advising to install a WebSocket library.
    upgrade = b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, close\r\n"
    for _ in range(5):
        status, headers, _ = await exchange(server, upgrade + b"Upgrade: websocket\r\n\r\n")
        assert status == 200  # as plain HTTP: no route speaks WebSocket
        assert_secured(headers)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == [
        "admin HTTP: a request that is not valid HTTP/1.1, answered 400: "
        "1 new one(s) closed at once",
        "admin HTTP: an Upgrade request (no route speaks WebSocket): "
        "1 new one(s) answered as plain HTTP",
    ]


async def test_a_failure_is_a_secured_500_logged_once_with_its_request(
    server: HttpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    create = b'{"name": "meter-1"}'
    status, _, _ = await exchange(
        server,
        b"POST /api/device HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + AUTH
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(create) + create,
    )  # fmt: skip
    assert status == 200
    # A real fault of a dependency: a row another program wrote, which the store cannot read.
    with sqlite3.connect(tmp_path / "admin.db") as database:
        database.execute("UPDATE devices SET created_at = 'not a time'")
    caplog.clear()

    status, headers, body = await exchange(
        server,
        b"GET /api/tenant/devices?x=%0Aforged HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
        + AUTH + b"\r\n",
    )  # fmt: skip

    assert status == 500
    assert_secured(headers)
    assert body == (
        b'{"status":500,"message":"Internal error: the server\'s log has the details.",'
        b'"errorCode":2}'
    )
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert failures[0].getMessage() == "admin HTTP: GET /api/tenant/devices failed"
    assert failures[0].exc_info is not None  # the traceback is in the log, not the answer
    assert b"Traceback" not in body


async def _failing(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("a bug")


async def test_a_failure_logged_keeps_to_one_line(caplog: pytest.LogCaptureFixture) -> None:
    # The path is the client's: a %0A in it must not start a line of the client's choosing.
    server = await HttpServer.start(_failing, "127.0.0.1", 0)
    try:
        request = b"GET /x%0AINFO%20forged HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        status, headers, body = await exchange(server, request)
    finally:
        await asyncio.wait_for(server.stop(), WAIT)
    assert status == 500
    assert_secured(headers)
    assert b"a bug" not in body
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in failures] == ["admin HTTP: GET /x\\nINFO forged failed"]


async def test_a_trailing_slash_is_no_redirect_to_the_hosts_host(server: HttpServer) -> None:
    # Before: 307 to http://evil.example/ui/devices: Starlette built the Location from Host.
    for path in (b"/ui/devices/", b"/api/tenant/devices/", b"/healthz/"):
        request = b"GET %s HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n" % path
        status, headers, _ = await exchange(server, request + AUTH + b"\r\n")
        assert status == 404, path
        assert "location" not in headers
        assert_secured(headers)


@pytest.mark.parametrize(
    "query", [b"page=0&page=1", b"page=0&pag%65=1", b"pageSize=1&page=0&pageSize=1000"]
)
async def test_a_query_parameter_given_twice_is_refused(server: HttpServer, query: bytes) -> None:
    # Before: 200, the last one counted (Starlette's choice; a proxy's check may read the first).
    request = b"GET /api/tenant/devices?%s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" % query
    status, headers, body = await exchange(server, request + AUTH + b"\r\n")
    assert status == 400
    assert b"is given twice" in body
    assert_secured(headers)
    status, _, _ = await exchange(server, request + b"\r\n")
    assert status == 401  # the token first, as for every other refusal


@pytest.mark.parametrize(
    ("request_head", "expected"),
    [
        (b"TRACE /healthz HTTP/1.1\r\nHost: a\r\n", 405),  # no echo of the request
        (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n", 404),
        (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n", 404),
        (b"GET http://evil.example/healthz HTTP/1.1\r\nHost: a\r\n", 404),
        (b"GET /api/..%2fhealthz HTTP/1.1\r\nHost: a\r\n", 401),  # under /api/: the token first
        (b"GET /ui/static/..%2f..%2fapp.py HTTP/1.1\r\nHost: a\r\n", 404),
        (b"GET /ui/static/%00 HTTP/1.1\r\nHost: a\r\n", 404),
        (b"GET /healthz HTTP/1.1\r\nHost: " + b"h" * 20_000 + b"\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 6000, 431),
        (b"GET /ui/devices HTTP/1.1\r\nHost: a\r\nCookie: " + b"a=b; " * 4000 + b"\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + b"Cookie: a=b\r\n" * 100, 200),
    ],
)
async def test_odd_requests_get_plain_answers(
    server: HttpServer, request_head: bytes, expected: int
) -> None:
    status, headers, _ = await exchange(server, request_head + b"Connection: close\r\n\r\n")
    assert status == expected
    assert_secured(headers)


async def test_no_100_continue_before_the_token(server: HttpServer) -> None:
    # The client waits for 100 Continue before it sends the body: a refusal comes instead.
    request = (
        b"POST /api/device HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request)
    answer = await closed(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"100 Continue" not in answer
