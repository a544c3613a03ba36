"""Each ``http_*`` bound on what a client can make the admin server hold, configured small and
tried past through a real server on a free port: the configured value, not a constant, is
what holds. (The connection bounds: test_http_guard and test_http_per_address; the body and
head bounds: test_http_bounds.)"""

import asyncio
import dataclasses
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from admin.app import create_app
from admin.context import AdminContext
from admin.limits import HttpLimits
from admin.server import HttpServer
from admin.web.session import SESSION_COOKIE
from auth.certificate import parse_credential
from nanoiot.settings import Settings
from storage.records import TrustedCA
from storage.sql import SqlCredentialStore
from tests.admin.conftest import TOKEN
from tests.admin.web.conftest import csrf_of, sign_in
from tests.certgen import Issued, issue, revocation_list
from tests.logwatch import attached

Client = Callable[..., Coroutine[Any, Any, httpx.AsyncClient]]
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}
WAIT = 60.0  # seconds for what the server does next: generous for a busy 2-core machine


@pytest.fixture
async def client(context: AdminContext) -> AsyncIterator[Client]:
    """``client(**bounds)``: a client of a real server whose limits are the defaults but for
    ``bounds``, over the test's store; each call starts another server."""
    servers: list[HttpServer] = []
    clients: list[httpx.AsyncClient] = []

    async def make(trusted_proxies: tuple[str, ...] = (), **bounds: int) -> httpx.AsyncClient:
        limits = HttpLimits(**bounds)
        configured = dataclasses.replace(context, limits=limits)
        server = await HttpServer.start(
            create_app(configured), "127.0.0.1", 0, trusted_proxies=trusted_proxies,
            limits=limits,
        )  # fmt: skip
        servers.append(server)
        made = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30.0)
        clients.append(made)
        return made

    yield make
    for each in clients:
        await each.aclose()
    for server in servers:
        await server.stop()


@pytest.fixture
def authority() -> Issued:
    return issue("Plant Device CA", ca=True)


@pytest.fixture
async def trusted(store: SqlCredentialStore, authority: Issued) -> TrustedCA:
    return await store.add_trusted_ca("plant", parse_credential(authority.cert_pem))


def test_the_defaults_are_the_settings_defaults() -> None:
    assert HttpLimits.of(Settings()) == HttpLimits()
    assert HttpLimits() == HttpLimits(
        max_body_bytes=1024 * 1024, max_crl_bytes=16 * 1024 * 1024,
        max_form_field_bytes=64 * 1024, max_head_bytes=16 * 1024, max_connections=128,
        max_connections_per_address=16, max_failure_addresses=100_000, max_web_sessions=1000,
        import_max_row_bytes=256 * 1024, import_max_unsent_bytes=64 * 1024 * 1024,
    )  # fmt: skip


async def test_a_crl_past_http_max_crl_bytes_is_refused_over_the_api(
    client: Client, trusted: TrustedCA, authority: Issued
) -> None:
    api = await client(max_crl_bytes=2048)
    url = f"/api/v1/trusted-cas/{trusted.id}/crl"
    small = revocation_list(authority, 7).public_bytes(Encoding.PEM)
    assert len(small) < 2048
    text = {"content-type": "text/plain", **AUTHORIZED}
    assert (await api.put(url, content=small, headers=text)).status_code == 200
    large = revocation_list(authority, *range(1, 200)).public_bytes(Encoding.PEM)
    assert 2048 < len(large) < 16 * 1024 * 1024  # a CRL the default takes
    refused = await api.put(url, content=large, headers=text)
    assert refused.status_code == 400
    assert refused.json()["message"] == "the CRL is larger than 2,048 bytes"
    # Past the bound and the room for a form around it, the body is not read at all.
    too_large = await api.put(url, content=b"x" * (2048 + 64 * 1024 + 1), headers=text)
    assert too_large.status_code == 413
    assert "(67,584 bytes)" in too_large.json()["message"]


async def test_a_crl_past_http_max_crl_bytes_is_refused_in_the_web_ui(
    client: Client, trusted: TrustedCA, authority: Issued, store: SqlCredentialStore
) -> None:
    browser = await client(max_crl_bytes=2048)
    assert (await sign_in(browser)).status_code == 303
    large = revocation_list(authority, *range(1, 200)).public_bytes(Encoding.DER)
    assert len(large) > 2048
    page = await browser.get("/ui/cas")
    refused = await browser.post(
        f"/ui/cas/{trusted.id}/crl",
        data={"csrf_token": csrf_of(page.text)},
        files={"crl_file": ("plant.crl", large, "application/pkix-crl")},
    )
    assert refused.status_code == 400
    assert "The CRL is larger than 2,048 bytes." in refused.text
    [ca] = await store.list_trusted_cas()
    assert ca.crl_pem is None


async def test_a_certificate_file_past_http_max_form_field_bytes_is_refused(
    client: Client, authority: Issued, store: SqlCredentialStore
) -> None:
    browser = await client(max_form_field_bytes=1024)
    assert (await sign_in(browser)).status_code == 303
    padded = authority.cert_pem.encode() + b"\n" * 2048  # a CA certificate the default takes
    page = await browser.get("/ui/cas")
    refused = await browser.post(
        "/ui/cas",
        data={"csrf_token": csrf_of(page.text), "name": "plant"},
        files={"pem_file": ("ca.pem", padded, "application/x-pem-file")},
    )
    assert refused.status_code == 400
    assert "This file is too large to be a CA certificate." in refused.text
    assert await store.list_trusted_cas() == []


async def test_sign_ins_past_http_max_web_sessions_sign_the_oldest_out(client: Client) -> None:
    first = await client(max_web_sessions=2)
    base = str(first.base_url)
    async with (
        httpx.AsyncClient(base_url=base) as second,
        httpx.AsyncClient(base_url=base) as third,
    ):
        for browser in (first, second):
            assert (await sign_in(browser)).status_code == 303
        assert (await first.get("/ui/devices")).status_code == 200
        assert (await sign_in(third)).status_code == 303  # one more than the bound
        signed_out = await first.get("/ui/devices")
        assert signed_out.status_code == 303
        assert signed_out.headers["location"].startswith("/ui/login")
        assert first.cookies.get(SESSION_COOKIE, path="/ui") is not None  # the cookie is kept
        for browser in (second, third):
            assert (await browser.get("/ui/devices")).status_code == 200


async def test_addresses_past_http_max_failure_addresses_share_one_count(client: Client) -> None:
    """Through a trusted proxy, so that each request can come from another client address."""
    api = await client(trusted_proxies=("127.0.0.1",), max_failure_addresses=2)

    async def guess(address: str) -> int:
        headers = {"Authorization": "Bearer guess", "X-Forwarded-For": address}
        return (await api.get("/api/tenant/devices", headers=headers)).status_code

    assert [await guess(address) for address in ("192.0.2.1", "192.0.2.2")] == [401, 401]
    # The table is full: a third address counts with every other one that does not fit ...
    statuses = [await guess("192.0.2.3") for _ in range(10)]
    assert statuses == [401] * 10
    # ... so a fourth, which never failed, is refused with their count (the default, 100,000
    # addresses apart, would let it guess).
    assert await guess("192.0.2.4") == 429
    assert await guess("192.0.2.1") == 401  # an address counted apart keeps its own count


async def test_an_import_row_past_http_import_max_row_bytes_ends_the_import(
    client: Client, store: SqlCredentialStore
) -> None:
    api = await client(import_max_row_bytes=1024)
    for long_row in (
        b'{"name": "meter-1", "token": "' + b"t" * 2000 + b'"}\n',  # arrives whole
        b'{"name": "meter-1", "token": "' + b"t" * 2000,  # a line that never ends
    ):
        refused = await api.post(
            "/api/v1/devices/import",
            content=long_row,
            headers={"content-type": "application/x-ndjson", **AUTHORIZED},
        )
        assert refused.status_code == 400
        assert refused.json()["message"] == "line 1 is longer than 1024 bytes"
    # Short lines in a quoted field that is never closed: one record past the bound.
    quoted = b'name,token\n"meter-2,' + b"t" * 100 + b"\n" + (b"t" * 100 + b"\n") * 20
    refused = await api.post(
        "/api/v1/devices/import", content=quoted, headers={"content-type": "text/csv", **AUTHORIZED}
    )
    assert refused.status_code == 400
    message = refused.json()["message"]
    assert message == "line 2: a quoted field is not closed within 1024 characters"
    assert (await store.list_devices()).items == ()


def _row(n: int) -> bytes:
    """A refused row (not PEM) with a long device name, which its result repeats: some 250
    bytes of answer each."""
    return b'{"name": "%d-%s", "pem": "no"}\n' % (n, b"n" * 110)


class _Said(logging.Handler):
    """Sets ``event`` when a line with ``fragment`` is logged (in this thread, the server's)."""

    def __init__(self, fragment: str) -> None:
        super().__init__(logging.DEBUG)
        self.fragment = fragment
        self.event = asyncio.Event()
        self.line = ""

    def emit(self, record: logging.LogRecord) -> None:
        if self.fragment in record.getMessage():
            self.line = record.getMessage()
            self.event.set()


@pytest.mark.slow
async def test_an_import_whose_answer_is_not_read_waits_at_http_import_max_unsent_bytes(
    context: AdminContext,
) -> None:
    """A client that sends rows and reads nothing: the import stops once the configured bytes
    of answer wait for it (the default, 64 MiB, would hold some 500,000 rows' results), and
    goes on to the end once the client reads."""
    limits = HttpLimits(import_max_unsent_bytes=64 * 1024)
    server = await HttpServer.start(
        create_app(dataclasses.replace(context, limits=limits)), "127.0.0.1", 0, limits=limits
    )
    said = _Said("bytes of answer unread")
    rows = 0
    with attached(said, "admin.v1_import", level=logging.DEBUG):
        # A small receive buffer (no autotuning): the kernel's buffers, which would hold
        # megabytes of answer on loopback, hold little beside the server's own bound.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(
                b"POST /api/v1/devices/import HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                b"Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n"
            )
            told = asyncio.create_task(said.event.wait())
            sent: asyncio.Future[Any] = told
            while not said.event.is_set():
                assert rows < 400_000, "the import never waited for the client"
                part = b"".join(_row(n) for n in range(rows, rows + 1000))
                rows += 1000
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                sent = asyncio.ensure_future(writer.drain())
                await asyncio.wait({sent, told}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
                assert sent.done() or told.done(), "neither sent nor waited for the client"
            unread = int(said.line.split()[2])
            assert 64 * 1024 <= unread < 64 * 1024 + 1000 * 300  # the bound, and one batch more
            writer.write(b"0\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), WAIT)  # reading lets the import go on
        finally:
            sent.cancel()  # a drain still waiting when the import waited
            writer.transport.abort()
            await server.stop()
    summary = json.loads(answer.rstrip(b"\r\n0").rsplit(b"\n", 2)[-1] or b"{}")
    assert summary == {"summary": True, "imported": 0, "failed": rows, "conflicts": 0,
                       "complete": True}  # fmt: skip
