"""The embedded HTTP server: the application is built by the first request (once, however
many arrive together), every response carries a Date (RFC 9110 §6.6.1), and stop() ends it."""

import asyncio
import time
from email.utils import parsedate_to_datetime

import httpx

from admin.server import App, HttpServer, LazyApp, Receive, Scope, Send


async def _hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def test_the_app_is_built_once_by_the_first_requests() -> None:
    builds: list[float] = []

    def build() -> App:
        builds.append(time.monotonic())
        return _hello

    server = await HttpServer.start(LazyApp(build), "127.0.0.1", 0)
    try:
        assert builds == []  # nothing built at start
        url = f"http://127.0.0.1:{server.port}/"
        async with httpx.AsyncClient() as client:
            answers = await asyncio.gather(*(client.get(url) for _ in range(5)))
            assert [a.text for a in answers] == ["hello"] * 5
            assert (await client.get(url)).headers["x-app"] == "1"
        assert len(builds) == 1
    finally:
        await server.stop()


async def test_every_response_has_a_current_date() -> None:
    server = await HttpServer.start(_hello, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{server.port}/")
        assert len(answer.headers.get_list("date")) == 1
        sent = parsedate_to_datetime(answer.headers["date"]).timestamp()
        assert abs(sent - time.time()) < 5
    finally:
        await asyncio.wait_for(server.stop(), 10)


async def _client_address(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["client"][0].encode()})


async def test_the_ipv6_wildcard_serves_both_families_and_shows_ipv4_peers_plainly() -> None:
    # http_bind_address "::": one socket for IPv6 and IPv4 clients. The application (sign-in
    # rate limit, trusted proxies) sees an IPv4 client as a.b.c.d, not ::ffff:a.b.c.d.
    server = await HttpServer.start(_client_address, "::", 0)
    try:
        assert server.address[0] == "::"
        async with httpx.AsyncClient() as client:
            ipv6 = await client.get(f"http://[::1]:{server.port}/")
            ipv4 = await client.get(f"http://127.0.0.1:{server.port}/")
        assert (ipv6.text, ipv4.text) == ("::1", "127.0.0.1")
    finally:
        await asyncio.wait_for(server.stop(), 10)
