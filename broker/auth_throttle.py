"""Refused connects per client host, and a failing host slowed before its TLS handshake.

A refused unknown certificate cost the broker 5.2 ms of CPU, mostly its side of the TLS
handshake (its key exchange and signature, the client's signature checked), and nothing
bounded how many a second one host could make: ``max_connecting_per_address`` bounds how
many wait at once, not the rate. One address with a few cores kept the broker's CPU busy with
distinct self-signed certificates, or one unknown, revoked or expired certificate in a loop,
and slowed every real device's connect.

So each connect refused for what the client presented counts as a failure of its host
(``broker.connection_limit.host_of``: an IPv6 /64 is one host), in ``SlowedHosts``: after
``auth_failures_before_throttle`` failures in a row the host is slowed, never shut out: its
new connections go on to their TLS handshake at most ``auth_throttled_connects_per_second``
a second (a token bucket, a burst of as many), and the listener drops the others before any
TLS work (``drops``; ``nanoiot_limit_hits_total{limit="auth_failures_before_throttle"}``
counts them). A host shares its rate among whatever is behind it (a NAT, a gateway): one
broken device in a reconnect loop, or a scanner, leaves its neighbours' connects a chance in
proportion to how often they try, and once the failures stop the bucket is full again within
a second. A connect admitted from the host clears its count and its slowing at once: behind
a NAT the fleet's good devices keep clearing what one broken device adds. Open connections
are never touched. Behind a trusted load balancer the host is the client's, from its PROXY
header, never the balancer's.

MQTT basic passwords are counted by the password gate's own, stricter throttle
(``broker.password_gate``), which shuts a host out at the listener for a while.
"""

import time
from collections.abc import Callable
from typing import Final

from auth.decision import Decision, Reason
from broker.connection_limit import host_of
from broker.proxy_protocol import TrustedProxies
from broker.repeats import LogLimiter
from broker.slowed_hosts import SlowedHosts, SlowingPolicy
from broker.tls_failures import TlsFailure, TlsFailureReason

__all__ = ["LIMIT", "AuthThrottle", "counts_decision", "counts_handshake"]

LIMIT: Final = "auth_failures_before_throttle"  # the label of its limit hits
_SLOWED: Final = "hosts slowed after refused connects"

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
        policy: SlowingPolicy,
        lines: LogLimiter,
        hit: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.hosts = SlowedHosts(policy, clock)
        self._lines = lines
        self._hit = hit
        # Load balancers sending PROXY headers (``proxy_protocol_trusted``): a connection
        # still from their own address is theirs (a health check, LOCAL), never counted.
        self.balancers = TrustedProxies(())

    def drops(self, address: str) -> bool:
        """Whether the listener drops this new connection from ``address`` before its
        handshake: its host is slowed and over its rate. Else a slowed host's connection
        takes one of its slots."""
        if not self.hosts:  # no failures remembered: every connect's usual case
            return False
        if self.hosts.let_through(host_of(address)):
            return False
        self._hit()
        return True

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
        """A client from ``address`` was admitted: its host starts counting afresh, and is
        no longer slowed."""
        self.hosts.succeeded(host_of(address))

    def _failed(self, address: str, reason: str) -> None:
        if self.balancers.trusts(address):
            return
        host = host_of(address)
        if self.hosts.failed(host):
            self._lines.warning(
                host, _SLOWED,
                "slowing %s to %g connects a second: %d refused connects in a row (the "
                "last: %s; auth_failures_before_throttle)",
                host, self.policy.rate, self.hosts.failures(host), reason,
            )  # fmt: skip
