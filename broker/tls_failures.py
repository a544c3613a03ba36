"""Failed TLS handshakes, said plainly: classified, logged at INFO (rate-limited), counted.

A device that cannot get through TLS never reaches CONNECT, so without this the broker would
say nothing an operator sees: a client with the wrong CA file, plain MQTT sent to 8883, a
client that only speaks TLS 1.0 (the product text's paho snippet). ``classify`` turns what
the transport saw (OpenSSL's error, the first bytes the client sent, a timeout or an early
close) into a ``TlsFailure``: a stable reason code for ``/metrics`` and a sentence for the log.
``TlsFailureLog`` logs the first ``burst`` failures of each reason per ``window`` at INFO with
the peer's address, the rest at DEBUG, and one INFO summary per window of what it held back,
so a scanner or a misconfigured fleet cannot flood the log.

Pure apart from logging and the summary timer; no sockets. ``broker.transport`` calls
``TlsFailureLog.report``, which hands each classified failure on to ``classified`` (the
broker's authentication throttle, ``broker.auth_throttle``).
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from OpenSSL import SSL
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.proxy_protocol import ProxyHeaderError, looks_like_proxy_header

__all__ = [
    "CHAIN_REFUSED",
    "FailureKind",
    "TlsFailure",
    "TlsFailureLog",
    "TlsFailureReason",
    "classify",
]

log = logging.getLogger(__name__)

# The error a completed handshake is failed with when the client sent certificates past the
# bounds that OpenSSL's verify callback enforces on the chain it built (broker.tls).
CHAIN_REFUSED: Final = "certificate verify failed (certificates sent past the chain bounds)"

BURST: Final = 5  # lines per reason and window at INFO
WINDOW: Final = 60.0  # seconds


class FailureKind(StrEnum):
    """How the handshake ended, as the transport saw it."""

    ERROR = "error"  # OpenSSL raised (an alert from the client, or bytes it cannot parse)
    TIMEOUT = "timeout"  # tls_handshake_timeout passed
    CLOSED = "closed"  # the client closed its side before the handshake completed


class TlsFailureReason(StrEnum):
    UNTRUSTED_SERVER_CERTIFICATE = "untrusted_server_certificate"
    PLAIN_MQTT = "plain_mqtt"
    PROTOCOL_VERSION = "protocol_version"
    NO_SHARED_CIPHER = "no_shared_cipher"
    NO_CLIENT_CERTIFICATE = "no_client_certificate"
    CLIENT_KEY_PROOF = "client_key_proof_failed"
    CLIENT_CHAIN_REFUSED = "client_chain_refused"  # too costly to verify (broker.tls)
    HTTP = "http"
    NOT_TLS = "not_tls"
    TIMEOUT = "timeout"
    CLOSED = "closed"
    PROXY_HEADER = "proxy_header"  # a trusted load balancer sent a bad or no PROXY header
    PROXY_UNTRUSTED = "proxy_untrusted"  # a PROXY header from an address not trusted for it
    OTHER = "other"


@dataclass(frozen=True)
class TlsFailure:
    reason: TlsFailureReason
    text: str  # one plain sentence for the log


# TLS record and handshake bytes (RFC 8446 §5.1, §4): a ClientHello record starts 16 03 0x,
# its handshake type 01 sits at offset 5 and its legacy_version (the client's highest version
# before TLS 1.3) at offsets 9-10.
_HANDSHAKE_RECORD, _CLIENT_HELLO = 0x16, 0x01
_VERSIONS: Final = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2"}
# MQTT 3.1.1 §3.1: CONNECT is packet type 1, its protocol name "MQTT" (3.1: "MQIsdp").
_MQTT_CONNECT = 0x10
_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ")
# Alerts a client sends when it does not accept our certificate (RFC 8446 §6.2).
_CERTIFICATE_ALERTS = (
    "alert bad certificate",
    "alert unsupported certificate",
    "alert certificate revoked",
    "alert certificate expired",
    "alert certificate unknown",
    "alert access denied",
)


def classify(
    kind: FailureKind, error: SSL.Error | ProxyHeaderError | None, first_bytes: bytes
) -> TlsFailure:
    """What went wrong, from OpenSSL's error (or the PROXY header's) and the first bytes the
    client sent."""
    if isinstance(error, ProxyHeaderError):
        return TlsFailure(TlsFailureReason.PROXY_HEADER, f"from a trusted load balancer: {error}")
    if looks_like_proxy_header(first_bytes):
        return TlsFailure(
            TlsFailureReason.PROXY_UNTRUSTED,
            "PROXY protocol header from an address not in proxy_protocol_trusted",
        )
    if first_bytes[:1] == bytes([_MQTT_CONNECT]) and (
        b"MQTT" in first_bytes[:16] or b"MQIsdp" in first_bytes[:16]
    ):
        return TlsFailure(TlsFailureReason.PLAIN_MQTT, "plain MQTT on the TLS port (use TLS)")
    if first_bytes.startswith(_HTTP_METHODS):
        return TlsFailure(TlsFailureReason.HTTP, "HTTP on the MQTT TLS port")
    if kind is FailureKind.TIMEOUT:
        return TlsFailure(TlsFailureReason.TIMEOUT, "timed out (tls_handshake_timeout)")
    if kind is FailureKind.CLOSED:
        return TlsFailure(TlsFailureReason.CLOSED, "the client closed the connection")
    return _from_openssl(openssl_reason(error) if error is not None else "", first_bytes)


def _from_openssl(reason: str, first_bytes: bytes) -> TlsFailure:
    if "alert unknown ca" in reason:
        return TlsFailure(
            TlsFailureReason.UNTRUSTED_SERVER_CERTIFICATE,
            "client does not trust our certificate (unknown CA: give the client the broker's "
            "certificate as its CA file)",
        )
    if any(alert in reason for alert in _CERTIFICATE_ALERTS):
        alert = reason.split("alert ", 1)[1]
        return TlsFailure(
            TlsFailureReason.UNTRUSTED_SERVER_CERTIFICATE,
            f"client does not accept our certificate ({alert}: check its CA file, and that the "
            "host name it dials is in the certificate)",
        )
    if "unsupported protocol" in reason or "version too low" in reason:
        offered = _VERSIONS.get(_client_hello_version(first_bytes), "an older TLS version")
        return TlsFailure(
            TlsFailureReason.PROTOCOL_VERSION,
            f"client offers only {offered} (below the broker's minimum TLS version)",
        )
    if "no shared cipher" in reason:
        return TlsFailure(TlsFailureReason.NO_SHARED_CIPHER, "no cipher suite in common")
    if "did not return a certificate" in reason:
        return TlsFailure(
            TlsFailureReason.NO_CLIENT_CERTIFICATE,
            "client sent no certificate (require_client_certificate is on)",
        )
    if "bad signature" in reason:
        return TlsFailure(
            TlsFailureReason.CLIENT_KEY_PROOF,
            "client could not prove it holds its certificate's private key",
        )
    if "certificate verify failed" in reason:
        # Our verify callback accepts every chain except one too costly to verify.
        return TlsFailure(
            TlsFailureReason.CLIENT_CHAIN_REFUSED,
            "client's certificate chain refused: more than max_client_chain_certificates or "
            "max_client_chain_bytes, or an RSA key with a public exponent of 2^32 or more",
        )
    if first_bytes and first_bytes[0] != _HANDSHAKE_RECORD:
        return TlsFailure(
            TlsFailureReason.NOT_TLS, f"not TLS (first bytes {first_bytes[:4].hex()})"
        )
    return TlsFailure(TlsFailureReason.OTHER, f"TLS error: {reason or 'unknown'}")


def _client_hello_version(first_bytes: bytes) -> int:
    if len(first_bytes) < 11 or first_bytes[0] != _HANDSHAKE_RECORD:
        return 0
    if first_bytes[5] != _CLIENT_HELLO:
        return 0
    return int.from_bytes(first_bytes[9:11], "big")


def openssl_reason(exc: SSL.Error) -> str:
    """OpenSSL's reasons from a pyOpenSSL error, e.g. 'wrong version number'."""
    errors = exc.args[0] if exc.args else None
    if isinstance(errors, list) and errors:
        return "; ".join(str(e[-1]) for e in errors if isinstance(e, tuple) and e)
    return str(exc) or type(exc).__name__


class TlsFailureLog(Collector):
    """Counts failed handshakes by reason (``/metrics``) and logs them, rate-limited."""

    def __init__(
        self,
        *,
        burst: int = BURST,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counts: Counter[TlsFailureReason] = Counter()
        self._burst = burst
        self._window = window
        self._clock = clock
        self._window_start = clock()
        self._logged: Counter[TlsFailureReason] = Counter()
        self._held: Counter[TlsFailureReason] = Counter()
        self._summary: asyncio.TimerHandle | None = None
        # Told of every failure once classified (the authentication throttle counts some).
        self.classified: Callable[[tuple[str, int], TlsFailure, bytes], None] | None = None

    def report(
        self,
        remote: tuple[str, int],
        kind: FailureKind,
        error: SSL.Error | ProxyHeaderError | None,
        first_bytes: bytes,
    ) -> None:
        failure = classify(kind, error, first_bytes)
        self.counts[failure.reason] += 1
        if self.classified is not None:
            self.classified(remote, failure, first_bytes)
        message = "TLS handshake with %s:%d failed: %s"
        if failure.reason is TlsFailureReason.CLOSED and not first_bytes:
            # A TCP probe (load balancer, port scan): counted, not worth a line at INFO.
            log.debug(message, *remote, failure.text)
            return
        if self._allow(failure.reason):
            log.info(message, *remote, failure.text)
        else:
            log.debug(message, *remote, failure.text)

    def _allow(self, reason: TlsFailureReason) -> bool:
        now = self._clock()
        if now - self._window_start >= self._window:
            self.flush()
            self._window_start = now
        if self._logged[reason] < self._burst:
            self._logged[reason] += 1
            return True
        self._held[reason] += 1
        if self._summary is None:
            delay = max(self._window_start + self._window - now, 0.0)
            self._summary = asyncio.get_running_loop().call_later(delay, self._flush_timer)
        return False

    def _flush_timer(self) -> None:
        self._summary = None
        self.flush()
        self._window_start = self._clock()

    def flush(self) -> None:
        """Log what was held back in this window (one line), and start counting afresh."""
        if self._held:
            held = ", ".join(f"{count} {reason.value}" for reason, count in self._held.items())
            log.info(
                "%d more TLS handshake failures not logged in the last %g s: %s",
                self._held.total(),
                self._window,
                held,
            )
        self._held.clear()
        self._logged.clear()

    def close(self) -> None:
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
        self.flush()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "nanoiot_tls_handshake_failures",
            "TLS handshakes that failed, by reason",
            labels=["reason"],
        )
        for reason in TlsFailureReason:
            family.add_metric([reason.value], self.counts[reason])
        yield family
