"""Refused connects per client host, and the host shut out for them before its TLS handshake.

A refused unknown certificate cost the broker 5.2 ms of CPU, mostly its side of the TLS
handshake (its key exchange and signature, the client's signature checked), and nothing
bounded how many a second one host could make: ``max_connecting_per_address`` bounds how
many wait at once, not the rate. One address with a few cores kept the broker's CPU busy with
distinct self-signed certificates, or one unknown, revoked or expired certificate in a loop,
and slowed every real device's connect.

So each connect refused for what the client presented counts as a failure of its host
(``broker.connection_limit.host_of``: an IPv6 /64 is one host), in a ``FailureThrottle``:
after ``auth_failures_before_throttle`` failures in a row the host is shut out for 1 s,
doubling up to ``auth_throttle_max_seconds``, and the listener drops its new connections
before any TLS work (``shut_out``; ``nanoiot_limit_hits_total{limit=
"auth_failures_before_throttle"}`` counts them). A connect admitted from the host clears its
count: behind a NAT the fleet's good devices keep clearing what one broken device adds, and a
shut-out host only loses new connections for the block, never those open. Behind a trusted
load balancer the host is the client's, from its PROXY header, never the balancer's.

MQTT basic passwords are counted by the password gate's own, stricter throttle
(``broker.password_gate``); both shut a host out at the listener.
"""

import time
from collections.abc import Callable
from typing import Final

from auth.decision import Decision, Reason
from broker.connection_limit import host_of
from broker.failure_throttle import FailureThrottle, ThrottlePolicy
from broker.proxy_protocol import TrustedProxies
from broker.repeats import LogLimiter
from broker.tls_failures import TlsFailure, TlsFailureReason

__all__ = ["LIMIT", "AuthThrottle", "counts_decision", "counts_handshake"]

LIMIT: Final = "auth_failures_before_throttle"  # the label of its limit hits
_SHUT_OUT: Final = "hosts shut out after refused connects"

# Refusals that are not the client's doing (the store did not answer) or that the password
# gate counts already.
_NOT_COUNTED: Final = frozenset(
    {
        Reason.STORE_UNAVAILABLE,
        Reason.BAD_USERNAME_OR_PASSWORD,
        Reason.PASSWORD_THROTTLED,
        Reason.PASSWORD_CHECKS_BUSY,
    }
)
# Failed handshakes that are attacker work: the broker answered a ClientHello with its whole
# flight (key exchange, certificate, signature: most of a refused connect's cost) and the
# client's certificate failed TLS itself: none when one is required, a signature that does
# not prove its key, a chain too costly to verify (broker.tls). A client that rejects our
# certificate (alert) or leaves after its ClientHello without one (closed, timed out) made
# the broker do the same work for nothing; a real device does that only when misconfigured
# (wrong CA file) or on a broken link, and a success from its host clears the count.
_HANDSHAKES_COUNTED: Final = frozenset(
    {
        TlsFailureReason.NO_CLIENT_CERTIFICATE,
        TlsFailureReason.CLIENT_KEY_PROOF,
        TlsFailureReason.CLIENT_CHAIN_REFUSED,
        TlsFailureReason.UNTRUSTED_SERVER_CERTIFICATE,
    }
)
# Counted only after a ClientHello (a TLS handshake record, RFC 8446 §5.1): a TCP probe of a
# load balancer or a scanner closes without one and cost no TLS work.
_AFTER_HELLO: Final = frozenset(
    {TlsFailureReason.CLOSED, TlsFailureReason.TIMEOUT, TlsFailureReason.OTHER}
)
_HANDSHAKE_RECORD: Final = 0x16
# Not counted: plain MQTT, HTTP or other bytes that are not TLS, and a version or cipher
# refused (OpenSSL refuses those at the ClientHello, before any key work); a bad or untrusted
# PROXY header (the balancer's doing, and its address, not a client's).


def counts_decision(decision: Decision) -> bool:
    """Whether this authentication decision is a failure of the client's host."""
    return not decision.allowed and decision.reason not in _NOT_COUNTED


def counts_handshake(failure: TlsFailure, first_bytes: bytes) -> bool:
    """Whether this failed handshake is a failure of the client's host."""
    if failure.reason in _HANDSHAKES_COUNTED:
        return True
    return failure.reason in _AFTER_HELLO and first_bytes[:1] == bytes([_HANDSHAKE_RECORD])


class AuthThrottle:
    """Failed connects per host (see the module's docstring); ``hit`` counts a dropped one."""

    def __init__(
        self,
        policy: ThrottlePolicy,
        lines: LogLimiter,
        hit: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.throttle = FailureThrottle(policy, clock)
        self._lines = lines
        self._hit = hit
        # Load balancers sending PROXY headers (``proxy_protocol_trusted``): a connection
        # still from their own address is theirs (a health check, LOCAL), never counted.
        self.balancers = TrustedProxies(())

    def shut_out(self, address: str) -> bool:
        """True while ``address``'s host is shut out: the listener drops its connection."""
        if not self.throttle:  # no failures remembered: every connect's usual case
            return False
        if self.throttle.blocked_for(host_of(address)) > 0:
            self._hit()
            return True
        return False

    def decided(self, address: str, decision: Decision) -> None:
        """Count an authentication refusal of a client at ``address``."""
        if counts_decision(decision):
            self._failed(address, decision.reason.value)

    def abandoned(self, address: str) -> None:
        """Count a connection that completed its handshake and ended without a decision:
        closed before its CONNECT was decided, none in time, one the protocol refused, or a
        protocol violation. Else a client would present any certificate, or none, and leave
        (or send a CONNECT of protocol level 9) at the cost of a refused one, uncounted."""
        self._failed(address, "ended before authentication")

    def handshake_failed(self, remote: tuple[str, int], failure: TlsFailure, hello: bytes) -> None:
        """Count a failed TLS handshake (``TlsFailureLog.report`` classified it)."""
        if counts_handshake(failure, hello):
            self._failed(remote[0], failure.reason.value)

    def admitted(self, address: str) -> None:
        """A client from ``address`` was admitted: its host starts counting afresh."""
        self.throttle.succeeded(host_of(address))

    def _failed(self, address: str, reason: str) -> None:
        if self.balancers.trusts(address):
            return
        host = host_of(address)
        block = self.throttle.failed(host)
        if block:
            self._lines.warning(
                host, _SHUT_OUT,
                "shutting out %s for %g s: %d refused connects in a row (the last: %s; "
                "auth_failures_before_throttle)",
                host, block, self.throttle.failures(host), reason,
            )  # fmt: skip
