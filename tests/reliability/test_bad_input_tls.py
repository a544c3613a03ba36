"""Bad clients at the TLS layer, each against a real broker while a canary device keeps working.

Every case is refused, its reason is asserted where the broker records it (the auth counts
and the 'refused' log line once the handshake is done, the plain reason logged when the
handshake itself fails), and the canary still round-trips a message afterwards.
"""

import datetime as dt
import random
import resource
import selectors
import socket
import ssl
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.broker.tls_handshakes import chain_of, long_exponent_key
from tests.broker.transport_helpers import MQTT_CONNECT
from tests.certgen import Issued, issue
from tests.e2e.harness import WAIT, BrokerThread, mqtt_client, write_pem
from tests.reliability.canary import Baseline, Canary
from tests.reliability.conftest import HANDSHAKE_TIMEOUT, FleetPki, logged, start_broker
from tests.reliability.impostor import CertificateSwap
from tests.reliability.wire import HOST, client_context, tls_attempt

UTC = dt.UTC
_PAST = dt.datetime(2020, 1, 1, tzinfo=UTC)
_FUTURE = dt.datetime.now(UTC) + dt.timedelta(days=365)
# A timer may fire a little early by the monotonic clock of another thread.
_TIMER_SLACK = 0.05


def _handshake_failed(port: int) -> str:
    return f"TLS handshake with {HOST}:{port} failed"


# --- certificates that complete the handshake and are refused at CONNECT -------------------

CertificateCase = Callable[[BrokerThread, FleetPki, str], Issued]


def _unknown(broker: BrokerThread, fleet: FleetPki, name: str) -> Issued:
    return issue(name)  # self-signed, never provisioned


def _expired(broker: BrokerThread, fleet: FleetPki, name: str) -> Issued:
    cert = issue(name, not_before=_PAST, not_after=_PAST + dt.timedelta(days=1))
    return broker.provision(name, cert)[1]


def _not_yet_valid(broker: BrokerThread, fleet: FleetPki, name: str) -> Issued:
    cert = issue(name, not_before=_FUTURE, not_after=_FUTURE + dt.timedelta(days=30))
    return broker.provision(name, cert)[1]


def _untrusted_ca(broker: BrokerThread, fleet: FleetPki, name: str) -> Issued:
    return issue(f"device-{name}", issuer=issue("Stranger CA", ca=True))


def _in_crl(broker: BrokerThread, fleet: FleetPki, name: str) -> Issued:
    return fleet.revoked  # issued by the trusted CA, listed in its CRL


def _server_auth_only(broker: BrokerThread, fleet: FleetPki, name: str) -> Issued:
    cert = issue(name, eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    return broker.provision(name, cert)[1]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_unknown, "untrusted_issuer"),
        (_expired, "certificate_expired"),
        (_not_yet_valid, "certificate_not_yet_valid"),
        (_untrusted_ca, "untrusted_issuer"),
        (_in_crl, "revoked_by_ca"),
        (_server_auth_only, "not_for_client_auth"),
    ],
    ids=["unknown-self-signed", "expired", "not-yet-valid", "untrusted-ca", "in-crl", "eku-server"],
)
def test_refused_certificate(
    rbroker: BrokerThread,
    fleet: FleetPki,
    canary: Canary,
    certs_dir: Path,
    logs: pytest.LogCaptureFixture,
    make: CertificateCase,
    reason: str,
    request: pytest.FixtureRequest,
) -> None:
    name = f"bad-{request.node.callspec.id}"
    cert = make(rbroker, fleet, name)
    before = rbroker.running.auth_log.counts[reason]
    with canary.busy():
        client = mqtt_client(rbroker.port, rbroker.server_cert, write_pem(certs_dir, cert, name))
        try:
            assert client.wait_connack() == 5  # MQTT 3.1.1 §3.2.2.3: not authorized
            assert client.disconnected.wait(WAIT)  # and closed by the broker
        finally:
            client.close()
    assert rbroker.running.auth_log.counts[reason] == before + 1
    assert logged(logs, "refused", f"[{reason}, CONNACK 5]")


# --- handshakes that must fail ---------------------------------------------------------


@pytest.fixture(scope="module")
def strict_broker(
    tmp_path_factory: pytest.TempPathFactory, fleet: FleetPki
) -> Iterator[tuple[BrokerThread, Canary]]:
    """A broker with require_client_certificate=True, and its own canary."""
    data = tmp_path_factory.mktemp("strict")
    broker = start_broker(data / "data", fleet, require_client_certificate=True)
    try:
        bird = Canary(broker, data, "strict-canary")
        yield broker, bird
        bird.close()
    finally:
        broker.stop()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_no_certificate_when_one_is_required(
    strict_broker: tuple[BrokerThread, Canary],
    logs: pytest.LogCaptureFixture,
    version: ssl.TLSVersion,
) -> None:
    broker, canary = strict_broker
    context = client_context(broker.server_cert)
    context.maximum_version = version
    with canary.busy():
        attempt = tls_attempt(broker.port, context, MQTT_CONNECT)
    # RFC 8446 §4.4.2.4: a TLS 1.3 client has finished its part when the refusal comes.
    assert attempt.error is not None
    assert attempt.closed_by_server
    assert logged(logs, _handshake_failed(attempt.local_port), "client sent no certificate")
    assert broker.running.auth_log.counts.total() == 1  # the canary's own connect only


def test_certificate_without_its_private_key(
    rbroker: BrokerThread, canary: Canary, certs_dir: Path, logs: pytest.LogCaptureFixture
) -> None:
    """A client sends the canary's certificate but can only sign with its own key."""
    impostor = issue("impostor")
    context = client_context(rbroker.server_cert, write_pem(certs_dir, impostor, "impostor"))
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # the Certificate message is in clear
    swap = CertificateSwap(canary.issued.cert.public_bytes(Encoding.DER))
    counts = rbroker.running.auth_log.counts.copy()
    with canary.busy():
        attempt = tls_attempt(rbroker.port, context, MQTT_CONNECT, rewrite=swap)
    assert swap.swapped
    assert attempt.version is None
    assert attempt.closed_by_server
    assert logged(logs, _handshake_failed(attempt.local_port), "could not prove it holds")
    assert rbroker.running.auth_log.counts == counts  # never reached authentication


def _linked(bound: int) -> list[Issued]:
    return chain_of(bound + 1)  # each certificate issued by the next


def _unlinked(bound: int) -> list[Issued]:
    # Certificates that issued nothing in the chain: OpenSSL leaves them out of the chain it
    # verifies, but authentication would look for the leaf's issuer among them.
    return [issue("device"), *(issue(f"stranger-{n}", ca=True) for n in range(bound))]


def _unlinked_long_exponent(bound: int) -> list[Issued]:
    return [issue("device"), issue("stranger", key=long_exponent_key(), ca=True)]


@pytest.mark.parametrize("sent", [_linked, _unlinked, _unlinked_long_exponent])
def test_certificate_chain_past_the_bounds(
    rbroker: BrokerThread,
    canary: Canary,
    certs_dir: Path,
    logs: pytest.LogCaptureFixture,
    sent: Callable[[int], list[Issued]],
) -> None:
    """Certificates past max_client_chain_certificates, or an RSA key with a long public
    exponent among them, are refused with the handshake, before the broker spends its event
    loop's time checking signatures with them."""
    chain = sent(rbroker.settings.max_client_chain_certificates)
    pem = certs_dir / "long-chain.pem"
    pem.write_text(chain[0].key_pem + "".join(issued.cert_pem for issued in chain))
    counts = rbroker.running.auth_log.counts.copy()
    with canary.busy():
        attempt = tls_attempt(rbroker.port, client_context(rbroker.server_cert, pem), MQTT_CONNECT)
    assert attempt.closed_by_server
    assert logged(logs, _handshake_failed(attempt.local_port), "certificate chain refused")
    assert rbroker.running.auth_log.counts == counts  # never reached authentication


def _legacy_context(server_cert: Path, certfile: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that can only speak ``version`` (OpenSSL 3 needs security level 0 for it)."""
    context = client_context(server_cert, certfile, ciphers="DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point of this client
        context.minimum_version = version
        context.maximum_version = version
    return context


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_legacy_tls_versions(
    rbroker: BrokerThread,
    canary: Canary,
    certs_dir: Path,
    logs: pytest.LogCaptureFixture,
    version: ssl.TLSVersion,
) -> None:
    """RFC 8996: TLS 1.0 and 1.1 are refused unless tls_allow_legacy_protocols is set."""
    certfile = write_pem(certs_dir, canary.issued, "legacy")
    with canary.busy():
        attempt = tls_attempt(rbroker.port, _legacy_context(rbroker.server_cert, certfile, version))
    assert attempt.version is None
    assert attempt.closed_by_server
    offered = "TLS 1.0" if version is ssl.TLSVersion.TLSv1 else "TLS 1.1"
    assert logged(logs, _handshake_failed(attempt.local_port), f"client offers only {offered}")


@pytest.mark.parametrize(
    "junk",
    [
        MQTT_CONNECT,
        b"\x16\x03\x01\x01\xfd" + random.Random(1).randbytes(509),  # one whole record
        random.Random(2).randbytes(512),
        b"GET / HTTP/1.1\r\n\r\n",
    ],
    ids=["plaintext-mqtt", "random-handshake-record", "random-bytes", "http"],
)
def test_not_tls_at_all(
    rbroker: BrokerThread, canary: Canary, logs: pytest.LogCaptureFixture, junk: bytes
) -> None:
    with canary.busy(), socket.create_connection((HOST, rbroker.port), timeout=WAIT) as raw:
        port = raw.getsockname()[1]
        raw.sendall(junk)
        answer = _read_until_closed(raw)
    assert answer == b"" or answer[0] == 0x15  # nothing, or a TLS alert record
    assert logged(logs, _handshake_failed(port))


def _read_until_closed(raw: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := raw.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


# --- slow and half-open clients --------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"])
def test_client_that_never_finishes_the_handshake(
    rbroker: BrokerThread, canary: Canary, logs: pytest.LogCaptureFixture, sent: bytes
) -> None:
    with canary.busy(), socket.create_connection((HOST, rbroker.port), timeout=WAIT) as raw:
        port, started = raw.getsockname()[1], time.monotonic()
        raw.sendall(sent)  # nothing, or the start of a ClientHello
        assert _read_until_closed(raw) == b""
        waited = time.monotonic() - started
    assert waited >= HANDSHAKE_TIMEOUT - _TIMER_SLACK
    assert logged(logs, _handshake_failed(port), "timed out")


def test_client_that_never_sends_connect(
    rbroker: BrokerThread, canary: Canary, logs: pytest.LogCaptureFixture
) -> None:
    """The same timeout bounds the wait for CONNECT after the handshake (§3.1 / §4.8)."""
    context = client_context(rbroker.server_cert)
    started = time.monotonic()
    with canary.busy():
        attempt = tls_attempt(rbroker.port, context)
    assert attempt.version is not None
    assert attempt.closed_by_server
    assert time.monotonic() - started >= HANDSHAKE_TIMEOUT - _TIMER_SLACK
    assert logged(logs, f"refused {HOST}:{attempt.local_port}: no CONNECT within")


HALF_OPEN = 1000


def test_1000_half_open_connections_are_all_freed(rbroker: BrokerThread, canary: Canary) -> None:
    _enough_file_descriptors(2 * HALF_OPEN + 256)  # our sockets and the broker's
    baseline = Baseline(rbroker)
    selector = selectors.DefaultSelector()
    opened: dict[socket.socket, float] = {}
    lifetimes: list[float] = []
    try:
        with canary.busy():
            for _ in range(HALF_OPEN):
                raw = socket.create_connection((HOST, rbroker.port), timeout=WAIT)
                raw.setblocking(False)
                opened[raw] = time.monotonic()
                selector.register(raw, selectors.EVENT_READ)
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT + WAIT
        while opened and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=deadline - time.monotonic()):
                closed = key.fileobj
                assert isinstance(closed, socket.socket)
                assert _recv_nothing(closed)  # the server closed without a word
                lifetimes.append(time.monotonic() - opened.pop(closed))
                selector.unregister(closed)
                closed.close()
    finally:
        for raw in opened:
            raw.close()
        selector.close()
    assert not opened, f"{len(opened)} connections still open"
    assert min(lifetimes) >= HANDSHAKE_TIMEOUT - _TIMER_SLACK
    assert baseline.leaks() == []
    canary.check()


def _recv_nothing(raw: socket.socket) -> bool:
    try:
        return raw.recv(1) == b""
    except ConnectionResetError:
        return True


def _enough_file_descriptors(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
