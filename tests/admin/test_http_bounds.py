"""The admin HTTP server against attacks on its bodies and its idea of the client's address.

A real uvicorn on a free port; bodies are sent over a socket by hand where a client library
would send (or buffer) the whole body before reading the answer:

- without the token, an API request is answered 401 after its headers: the body is never
  read (before, a 300 MiB body was read and parsed first);
- with the token, a body over its route's bound is answered 413, declared or chunked;
- ``X-Forwarded-For`` counts only from a configured proxy: otherwise a client could pick the
  address the sign-in rate limit counts, guess without limit, and lock the operator out;
- a request framed both by Content-Length and Transfer-Encoding (request smuggling through a
  proxy that frames by the other) is 400 and its connection closed, so the request hidden in
  its body is never served (RFC 9112 §6.1); a target or header fields past
  ``http_max_head_bytes`` are 414 or 431.
"""

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest

from admin.app import create_app
from admin.context import AdminContext
from admin.limits import HttpLimits
from admin.server import HttpServer
from tests.admin.conftest import TOKEN

WAIT = 10.0
HUGE = 300 * 1024 * 1024  # declared, never sent


ServerFactory = Callable[..., Coroutine[Any, Any, HttpServer]]


@pytest.fixture
async def start(context: AdminContext) -> AsyncIterator[ServerFactory]:
    started: list[HttpServer] = []

    async def make(trusted_proxies: tuple[str, ...] = (), **bounds: int) -> HttpServer:
        """A server with the default limits but for ``bounds`` (a 64 KiB body unless
        given)."""
        limits = HttpLimits(**{"max_body_bytes": 64 * 1024, **bounds})
        server = await HttpServer.start(
            create_app(dataclasses.replace(context, limits=limits)), "127.0.0.1", 0,
            trusted_proxies=trusted_proxies, limits=limits,
        )  # fmt: skip
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


async def _answer_after_headers(
    port: int, head: bytes, first_part: bytes = b""
) -> tuple[int, dict[str, Any]]:
    """Send the request's head and at most the first part of its body; the status and JSON
    body of the answer, which must come without the rest of the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + first_part)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), WAIT)
        headers: dict[str, str] = {}
        while (line := await asyncio.wait_for(reader.readline(), WAIT)) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), WAIT)
        return int(status_line.split()[1]), json.loads(body)
    finally:
        writer.close()


def _post(
    path: str, *, token: str | None, length: int | None, content_type: str = "application/json"
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("path", ["/api/v1/trusted-cas", "/api/device", "/api/v1/devices/import"])
async def test_without_the_token_the_body_is_never_read(start: ServerFactory, path: str) -> None:
    server = await start()
    status, body = await _answer_after_headers(
        server.port, _post(path, token=None, length=HUGE), b'{"name": "'
    )
    assert status == 401
    assert body["errorCode"] == 10
    status, _ = await _answer_after_headers(
        server.port, _post(path, token="wrong-token-0123456789", length=HUGE), b"{"
    )
    assert status == 401


async def test_a_declared_body_over_the_bound_is_refused_before_it_is_read(
    start: ServerFactory,
) -> None:
    server = await start(max_body_bytes=64 * 1024)
    status, body = await _answer_after_headers(
        server.port, _post("/api/device", token=TOKEN, length=HUGE), b'{"name": "'
    )
    assert status == 413
    assert "65,536 bytes" in body["message"]


async def test_a_chunked_body_is_cut_off_at_the_bound(start: ServerFactory) -> None:
    server = await start(max_body_bytes=64 * 1024)
    chunk = b"x" * 16 * 1024
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    status, _ = await _answer_after_headers(
        server.port, _post("/api/device", token=TOKEN, length=None), framed * 5
    )
    assert status == 413


async def test_bodies_within_the_bound_and_the_streamed_import_still_work(
    start: ServerFactory,
) -> None:
    server = await start(max_body_bytes=4 * 1024)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.port}", headers=headers, timeout=60.0
    ) as api:
        created = await api.post("/api/device", json={"name": "pump", "type": "default"})
        assert created.status_code == 200, created.text
        rows = "".join(
            json.dumps({"name": f"imported-{n:04d}", "token": f"token-{n:04d}-0123456789"}) + "\n"
            for n in range(200)
        )
        assert len(rows) > 2 * 4096  # far past the bound of other routes
        imported = await api.post(
            "/api/v1/devices/import", content=rows,
            headers={"Content-Type": "application/x-ndjson"},
        )  # fmt: skip
        assert imported.status_code == 200
        summary = json.loads(imported.text.splitlines()[-1])
        assert summary["imported"] == 200


async def _failed_sign_ins(port: int, forwarded_for: str, count: int) -> list[int]:
    statuses = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(count):
            answer = await client.get(
                "/api/v1/devices",
                headers={"Authorization": "Bearer wrong-token-0123456789",
                         "X-Forwarded-For": forwarded_for},
            )  # fmt: skip
            statuses.append(answer.status_code)
    return statuses


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(start: ServerFactory) -> None:
    server = await start()
    # Before: each guess under a new forwarded address, so the limit never applied.
    statuses = [(await _failed_sign_ins(server.port, f"203.0.113.{n}", 1))[0] for n in range(12)]
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429, 429]  # counted against 127.0.0.1, the real peer


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(start: ServerFactory) -> None:
    server = await start(trusted_proxies=("127.0.0.0/8",))
    assert await _failed_sign_ins(server.port, "203.0.113.7", 11) == [401] * 10 + [429]
    # Another client behind the same proxy is not locked out by the first one's failures.
    assert await _failed_sign_ins(server.port, "203.0.113.8", 1) == [401]


async def test_a_new_ipv6_address_for_each_guess_gets_no_new_guesses(start: ServerFactory) -> None:
    server = await start(trusted_proxies=("127.0.0.0/8",))
    # Before: each address of one /64 was counted alone, and a host picks any of its /64's
    # 2**64 addresses (RFC 8981), so its guesses were never limited.
    statuses = [
        (await _failed_sign_ins(server.port, f"2001:db8:1:2::{n:x}", 1))[0] for n in range(12)
    ]
    assert statuses == [401] * 10 + [429, 429]
    # Another /64 is another host, not locked out by the first one's failures.
    assert await _failed_sign_ins(server.port, "2001:db8:1:3::1", 1) == [401]


# --- framing and head size ---------------------------------------------------------------

SMUGGLED = b"GET /api/tenant/devices?pageSize=1 HTTP/1.1\r\nHost: x\r\n\r\n"


async def _exchange(port: int, data: bytes) -> bytes:
    """Everything the server sends until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()


async def test_content_length_with_transfer_encoding_is_400_and_closed(
    start: ServerFactory,
) -> None:
    server = await start()
    head = (
        "POST /api/device HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    answer = await _exchange(server.port, head + b"0\r\n\r\n" + SMUGGLED)
    # Before: the chunked body was taken as empty, then SMUGGLED answered as a second request.
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"both Content-Length and Transfer-Encoding" in answer
    assert answer.count(b"HTTP/1.1 ") == 1


async def test_a_head_past_the_bound_is_414_or_431_and_closed(start: ServerFactory) -> None:
    server = await start(max_head_bytes=4096)  # http_max_head_bytes, configured small
    fields = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"v" * 60) for n in range(100))  # ~7 KB
    answer = await _exchange(
        server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]  # the default, 16 KiB: 200
    assert b"larger than 4,096 bytes" in answer
    one_big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 100_000 + b"\r\n\r\n"
    assert (await _exchange(server.port, one_big)).startswith(b"HTTP/1.1 4")  # 431 or h11's 400
    long_target = b"GET /healthz?" + b"q" * 8_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = await _exchange(server.port, long_target)
    assert answer.startswith(b"HTTP/1.1 414 "), answer[:100]  # before: 200
    normal = await _exchange(
        server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert normal.startswith(b"HTTP/1.1 200 ")
