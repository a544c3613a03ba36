"""Failed TLS handshakes from real clients, as the operator sees them: one INFO line with the
peer's address and a plain reason, counted by reason; rate-limited per reason."""

import asyncio
import logging
import socket
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache

import pytest
from OpenSSL import SSL

from broker.proxy_protocol import ProxyHeaderError
from broker.tls_failures import FailureKind, TlsFailureLog, TlsFailureReason
from broker.transport import TlsServer
from nanoiot.settings import Settings
from tests.broker.tls_certs import ClientFiles, ServerPki
from tests.broker.transport_helpers import MQTT_CONNECT, echo, echoed, serving
from tests.certgen import issue

WAIT = 10.0
LOGGER = "broker.tls_failures"


@dataclass
class Watched:
    server: TlsServer
    failures: TlsFailureLog
    reported: "asyncio.Queue[tuple[str, int]]"

    async def next_report(self) -> tuple[str, int]:
        return await asyncio.wait_for(self.reported.get(), WAIT)


@asynccontextmanager
async def watched(settings: Settings, failures: TlsFailureLog) -> AsyncIterator[Watched]:
    reported: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

    def report(
        remote: tuple[str, int],
        kind: FailureKind,
        error: SSL.Error | ProxyHeaderError | None,
        first: bytes,
    ) -> None:
        failures.report(remote, kind, error, first)
        reported.put_nowait(remote)

    async with serving(settings, echo) as server:
        server.handshake_failed = report
        yield Watched(server, failures, reported)


async def tls_client(port: int, context: ssl.SSLContext) -> int:
    """Try a handshake with a blocking ``ssl`` socket, as device code does (asyncio's own TLS
    client drops the connection without sending its alert); the client's local port."""

    def attempt() -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
            local = int(raw.getsockname()[1])
            try:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.recv(1)  # TLS 1.3: the broker's refusal arrives here
            except (ssl.SSLError, ConnectionError):
                pass
            return local

    return await asyncio.to_thread(attempt)


async def raw_client(port: int, data: bytes, *, close: bool = False) -> int:
    """Send ``data`` in clear, then read to the end (or close at once)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    local = writer.get_extra_info("sockname")[1]
    writer.write(data)
    await writer.drain()
    if not close:
        await asyncio.wait_for(reader.read(), WAIT)
    writer.close()
    await writer.wait_closed()
    return int(local)


@cache
def _other_ca() -> str:
    return issue("Some Other CA", ca=True).cert_pem


def untrusting(pki: ServerPki, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client whose CA file holds another CA than ours: it refuses the broker's certificate."""
    context = ssl.create_default_context(cadata=_other_ca())
    context.maximum_version = version
    return context


def only_version(pki: ServerPki, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = pki.client_context(ciphers="DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point of this client
        context.minimum_version = version
        context.maximum_version = version
    return context


Attempt = Callable[[int, ServerPki], Awaitable[int]]
HELLO_START = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # a ClientHello's first bytes

CASES: list[tuple[str, dict[str, object], Attempt, TlsFailureReason, str]] = [
    (
        "wrong-ca-tls12", {},
        lambda port, pki: tls_client(port, untrusting(pki, ssl.TLSVersion.TLSv1_2)),
        TlsFailureReason.UNTRUSTED_SERVER_CERTIFICATE, "client does not trust our certificate",
    ),
    (
        "wrong-ca-tls13", {},
        lambda port, pki: tls_client(port, untrusting(pki, ssl.TLSVersion.TLSv1_3)),
        TlsFailureReason.UNTRUSTED_SERVER_CERTIFICATE, "client does not trust our certificate",
    ),
    (
        "plain-mqtt", {}, lambda port, pki: raw_client(port, MQTT_CONNECT),
        TlsFailureReason.PLAIN_MQTT, "plain MQTT on the TLS port",
    ),
    (
        "tls-1.0-only", {},
        lambda port, pki: tls_client(port, only_version(pki, ssl.TLSVersion.TLSv1)),
        TlsFailureReason.PROTOCOL_VERSION, "client offers only TLS 1.0",
    ),
    (
        "tls-1.1-only", {},
        lambda port, pki: tls_client(port, only_version(pki, ssl.TLSVersion.TLSv1_1)),
        TlsFailureReason.PROTOCOL_VERSION, "client offers only TLS 1.1",
    ),
    (
        "tls-1.2-against-1.3", {"mqtt_ssl_protocol": "TLSv1.3"},
        lambda port, pki: tls_client(port, only_version(pki, ssl.TLSVersion.TLSv1_2)),
        TlsFailureReason.PROTOCOL_VERSION, "client offers only TLS 1.2",
    ),
    (
        "no-client-certificate", {"require_client_certificate": True},
        lambda port, pki: tls_client(port, only_version(pki, ssl.TLSVersion.TLSv1_2)),
        TlsFailureReason.NO_CLIENT_CERTIFICATE, "client sent no certificate",
    ),
    (
        "http", {}, lambda port, pki: raw_client(port, b"GET / HTTP/1.1\r\n\r\n"),
        TlsFailureReason.HTTP, "HTTP on the MQTT TLS port",
    ),
    (
        "junk", {}, lambda port, pki: raw_client(port, b"\x00\x01\x02\x03" * 64),
        TlsFailureReason.NOT_TLS, "not TLS (first bytes 00010203)",
    ),
    (
        "timeout", {"tls_handshake_timeout": 0.2},
        lambda port, pki: raw_client(port, HELLO_START),
        TlsFailureReason.TIMEOUT, "timed out (tls_handshake_timeout)",
    ),
    (
        "closed", {}, lambda port, pki: raw_client(port, HELLO_START, close=True),
        TlsFailureReason.CLOSED, "the client closed the connection",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "attempt", "reason", "says"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_each_failure_is_one_info_line_with_the_peer_and_a_plain_reason(
    pki: ServerPki,
    tls_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, object],
    attempt: Attempt,
    reason: TlsFailureReason,
    says: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    async with watched(tls_settings(**overrides), TlsFailureLog()) as broker:
        port = await attempt(broker.server.port, pki)
        assert await broker.next_report() == ("127.0.0.1", port)
    assert broker.failures.counts == {reason: 1}
    [line] = [r for r in caplog.records if r.name == LOGGER]
    assert line.levelname == "INFO"
    assert line.getMessage().startswith(f"TLS handshake with 127.0.0.1:{port} failed: {says}")
    assert all(r.exc_info is None for r in caplog.records)


async def test_a_tcp_probe_is_counted_but_not_logged_at_info(
    tls_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    async with watched(tls_settings(), TlsFailureLog()) as broker:
        await raw_client(broker.server.port, b"", close=True)
        await broker.next_report()
    assert broker.failures.counts == {TlsFailureReason.CLOSED: 1}
    assert [r.levelname for r in caplog.records if r.name == LOGGER] == ["DEBUG"]


async def test_a_flood_is_rate_limited_per_reason_and_summarised(
    pki: ServerPki, tls_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """Ten plain-MQTT clients and one with the wrong CA, burst 3: three INFO lines for plain
    MQTT, the wrong CA still logged, and one summary of the seven held back."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    summary = asyncio.get_running_loop().create_future()

    class Summarised(TlsFailureLog):
        def flush(self) -> None:
            super().flush()
            if not summary.done() and any("not logged" in m for m in caplog.messages):
                summary.set_result(None)

    async with watched(tls_settings(), Summarised(burst=3, window=1.0)) as broker:
        for _ in range(10):
            await raw_client(broker.server.port, MQTT_CONNECT)
            await broker.next_report()
        await tls_client(broker.server.port, untrusting(pki, ssl.TLSVersion.TLSv1_3))
        await broker.next_report()
        await asyncio.wait_for(summary, WAIT)  # the window's timer wrote the summary
    info = [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO
    ]
    assert sum("plain MQTT" in line for line in info) == 3
    assert sum("does not trust our certificate" in line for line in info) == 1
    assert info[-1] == "7 more TLS handshake failures not logged in the last 1 s: 7 plain_mqtt"
    debug = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.DEBUG]
    assert len(debug) == 7  # nothing is lost at DEBUG
    assert broker.failures.counts[TlsFailureReason.PLAIN_MQTT] == 10


def test_windows_roll_over_without_a_timer() -> None:
    """A failure after the window has passed starts a new one (and summarises the old)."""
    now = [0.0]
    failures = TlsFailureLog(burst=1, window=10.0, clock=lambda: now[0])
    assert failures._allow(TlsFailureReason.HTTP)
    now[0] = 10.0
    assert failures._allow(TlsFailureReason.HTTP)


async def test_handshake_that_succeeds_reports_nothing(
    pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    async with watched(tls_settings(), TlsFailureLog()) as broker:
        await echoed(broker.server.port, pki.client_context(client_ec), b"hi")
    assert broker.failures.counts.total() == 0
    assert broker.reported.empty()
