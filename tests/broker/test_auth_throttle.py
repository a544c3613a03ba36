"""Which refusals and failed handshakes count against a host, how hosts are keyed, and how a
failing host is slowed (the flood itself, over real TLS against a real broker:
tests/e2e/test_auth_throttle.py)."""

import logging

import pytest

from auth.decision import Decision, Reason, deny, store_unavailable
from broker.auth_throttle import AuthThrottle, counts_decision, counts_handshake
from broker.proxy_protocol import TrustedProxies
from broker.repeats import LogLimiter
from broker.slowed_hosts import SlowedHosts, SlowingPolicy
from broker.tls_failures import TlsFailure, TlsFailureReason

HELLO = bytes([0x16, 0x03, 0x01])  # a TLS handshake record (RFC 8446 §5.1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _throttle(
    free: int = 2, clock: Clock | None = None, rate: float = 2.0
) -> tuple[AuthThrottle, list[int]]:
    hits: list[int] = []
    lines = LogLimiter(logging.getLogger("test.auth_throttle"), interval=60.0, repeats=1)
    throttle = AuthThrottle(
        SlowingPolicy(free_failures=free, rate=rate),
        lines,
        lambda: hits.append(1),
        clock or Clock(),
    )
    return throttle, hits


def _failure(reason: TlsFailureReason) -> TlsFailure:
    return TlsFailure(reason, "")


@pytest.mark.parametrize(
    "reason",
    [Reason.UNKNOWN_KEY, Reason.CREDENTIAL_REVOKED, Reason.DEVICE_DISABLED,
     Reason.CERTIFICATE_EXPIRED, Reason.REVOKED_BY_CA, Reason.UNTRUSTED_ISSUER,
     Reason.UNKNOWN_TOKEN, Reason.NO_CREDENTIALS],
)  # fmt: skip
def test_refusals_for_what_the_client_presented_count(reason: Reason) -> None:
    assert counts_decision(deny(reason, ""))


@pytest.mark.parametrize(
    "decision",
    [store_unavailable("down"), deny(Reason.BAD_USERNAME_OR_PASSWORD, ""),
     deny(Reason.PASSWORD_THROTTLED, ""), deny(Reason.PASSWORD_CHECKS_BUSY, ""),
     Decision(True, Reason.ALLOWED, "")],
)  # fmt: skip
def test_the_store_s_failures_passwords_and_admissions_do_not(decision: Decision) -> None:
    """The store's outage is not the client's doing; passwords have the password gate's."""
    assert not counts_decision(decision)


def test_handshakes_that_cost_the_broker_its_flight_count() -> None:
    for reason in (
        TlsFailureReason.NO_CLIENT_CERTIFICATE,
        TlsFailureReason.CLIENT_KEY_PROOF,
        TlsFailureReason.CLIENT_CHAIN_REFUSED,
        TlsFailureReason.UNTRUSTED_SERVER_CERTIFICATE,
    ):
        assert counts_handshake(_failure(reason), HELLO), reason
    for reason in (TlsFailureReason.CLOSED, TlsFailureReason.TIMEOUT, TlsFailureReason.OTHER):
        assert counts_handshake(_failure(reason), HELLO), reason
        assert not counts_handshake(_failure(reason), b""), reason  # a TCP probe
        assert not counts_handshake(_failure(reason), b"GET "), reason


def test_cheap_refusals_and_the_balancer_s_faults_do_not() -> None:
    for reason in (
        TlsFailureReason.PLAIN_MQTT,
        TlsFailureReason.HTTP,
        TlsFailureReason.NOT_TLS,
        TlsFailureReason.PROTOCOL_VERSION,
        TlsFailureReason.NO_SHARED_CIPHER,
        TlsFailureReason.PROXY_HEADER,
        TlsFailureReason.PROXY_UNTRUSTED,
    ):
        assert not counts_handshake(_failure(reason), HELLO), reason


def test_a_host_is_slowed_past_its_free_failures_and_each_drop_is_a_hit() -> None:
    """Past its free failures a host's connections go on at the rate, a burst of as many,
    and the others are dropped; never all of them for a while."""
    clock = Clock()
    throttle, hits = _throttle(free=3, clock=clock, rate=2.0)
    unknown = deny(Reason.UNKNOWN_KEY, "")
    throttle.decided("10.0.0.1", unknown)
    throttle.handshake_failed(("10.0.0.1", 5), _failure(TlsFailureReason.CLIENT_KEY_PROOF), HELLO)
    assert not throttle.drops("10.0.0.1")  # the host has failed twice: not slowed yet
    throttle.abandoned("10.0.0.1")  # the third: slowed, its bucket full (2)
    assert [throttle.drops("10.0.0.1") for _ in range(4)] == [False, False, True, True]
    assert not throttle.drops("10.0.0.2")  # per host
    assert hits == [1, 1]
    clock.now += 0.5  # one token back at 2 a second
    assert [throttle.drops("10.0.0.1") for _ in range(2)] == [False, True]
    clock.now += 10.0  # a quiet spell refills it to its burst, never beyond
    assert [throttle.drops("10.0.0.1") for _ in range(3)] == [False, False, True]
    assert hits == [1, 1, 1, 1]


def test_an_admitted_connect_ends_the_slowing_and_the_count_at_once() -> None:
    throttle, _ = _throttle(free=2, rate=1.0)
    for _ in range(5):
        throttle.abandoned("10.0.0.1")
    assert [throttle.drops("10.0.0.1") for _ in range(2)] == [False, True]
    throttle.admitted("10.0.0.1")  # the connection let through was a good device's
    assert not any(throttle.drops("10.0.0.1") for _ in range(10))
    throttle.abandoned("10.0.0.1")  # counting starts afresh
    assert not throttle.drops("10.0.0.1")


def test_a_slow_rate_still_lets_one_connection_through() -> None:
    """Below one a second the burst is one: a connection every 1/rate seconds."""
    clock = Clock()
    throttle, _ = _throttle(free=1, clock=clock, rate=0.5)
    throttle.abandoned("10.0.0.1")
    assert [throttle.drops("10.0.0.1") for _ in range(2)] == [False, True]
    clock.now += 1.0
    assert throttle.drops("10.0.0.1")
    clock.now += 1.0
    assert not throttle.drops("10.0.0.1")


def test_a_minute_without_failure_forgets_the_count() -> None:
    clock = Clock()
    hosts = SlowedHosts(SlowingPolicy(free_failures=2), clock)
    hosts.failed("a")
    clock.now += 60.5
    assert not hosts.failed("a")  # counted as the first again
    assert hosts.failures("a") == 1
    assert hosts.failed("a")  # the second: slowed


def test_the_remembered_hosts_are_bounded() -> None:
    hosts = SlowedHosts(SlowingPolicy(tracked=3), Clock())
    for n in range(10):
        hosts.failed(f"10.0.0.{n}")
    assert len(hosts) == 3
    assert hosts.failures("10.0.0.9") == 1
    assert hosts.failures("10.0.0.0") == 0  # the longest quiet went first


def test_an_ipv6_host_is_its_64() -> None:
    """A host picks any address of its /64 (RFC 8981): one key for them all."""
    throttle, _ = _throttle(free=1, rate=1.0)
    throttle.abandoned("2001:db8:1:2::1")
    assert not throttle.drops("2001:db8:1:2:ffff::9")  # the bucket's one token
    assert throttle.drops("2001:db8:1:2::77")
    assert not throttle.drops("2001:db8:1:3::1")
    throttle.admitted("2001:db8:1:2::5")  # a success from the host clears it
    assert not throttle.drops("2001:db8:1:2::77")
    assert not throttle.drops("2001:db8:1:2::77")


def test_a_trusted_balancer_s_own_connections_never_count() -> None:
    """Its health checks (PROXY LOCAL) come from its own address: never slowed."""
    throttle, _ = _throttle(free=1)
    throttle.balancers = TrustedProxies(["10.9.0.0/16"])
    for _ in range(5):
        throttle.abandoned("10.9.0.3")
        throttle.handshake_failed(
            ("10.9.0.3", 1), _failure(TlsFailureReason.NO_CLIENT_CERTIFICATE), HELLO
        )
    assert not any(throttle.drops("10.9.0.3") for _ in range(10))


def test_the_slowing_is_logged_once_per_host_and_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttle, _ = _throttle(free=2, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.auth_throttle"):
        for _ in range(6):
            throttle.abandoned("10.0.0.1")
        throttle.admitted("10.0.0.1")
        for _ in range(2):  # slowed again within the interval: not logged again
            throttle.abandoned("10.0.0.1")
    lines = [r.getMessage() for r in caplog.records if r.name == "test.auth_throttle"]
    assert lines == [
        "slowing 10.0.0.1 to 2 connects a second: 2 refused connects in a row (the last: "
        "ended before authentication; auth_failures_before_throttle)"
    ]
