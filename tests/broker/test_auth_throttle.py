"""Which refusals and failed handshakes count against a host, and how hosts are keyed (the
flood itself, over real TLS against a real broker: tests/e2e/test_auth_throttle.py)."""

import logging

import pytest

from auth.decision import Decision, Reason, deny, store_unavailable
from broker.auth_throttle import AuthThrottle, counts_decision, counts_handshake
from broker.failure_throttle import FailureThrottle, ThrottlePolicy
from broker.proxy_protocol import TrustedProxies
from broker.repeats import LogLimiter
from broker.tls_failures import TlsFailure, TlsFailureReason

HELLO = bytes([0x16, 0x03, 0x01])  # a TLS handshake record (RFC 8446 §5.1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _throttle(free: int = 2, clock: Clock | None = None) -> tuple[AuthThrottle, list[int]]:
    hits: list[int] = []
    lines = LogLimiter(logging.getLogger("test.auth_throttle"), interval=60.0, repeats=1)
    throttle = AuthThrottle(
        ThrottlePolicy(free_failures=free, max_block=8.0),
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


def test_a_host_is_shut_out_past_its_free_failures_and_each_drop_is_a_hit() -> None:
    throttle, hits = _throttle(free=2)
    unknown = deny(Reason.UNKNOWN_KEY, "")
    throttle.decided("10.0.0.1", unknown)
    throttle.handshake_failed(("10.0.0.1", 5), _failure(TlsFailureReason.CLIENT_KEY_PROOF), HELLO)
    assert not throttle.shut_out("10.0.0.1")
    throttle.abandoned("10.0.0.1")  # the third: 1 s
    assert throttle.shut_out("10.0.0.1")
    assert throttle.shut_out("10.0.0.1")
    assert not throttle.shut_out("10.0.0.2")
    assert hits == [1, 1]


def test_an_ipv6_host_is_its_64() -> None:
    """A host picks any address of its /64 (RFC 8981): one key for them all."""
    throttle, _ = _throttle(free=1)
    throttle.abandoned("2001:db8:1:2::1")
    throttle.abandoned("2001:db8:1:2:ffff::9")
    assert throttle.shut_out("2001:db8:1:2::77")
    assert not throttle.shut_out("2001:db8:1:3::1")
    throttle.admitted("2001:db8:1:2::5")  # a success from the host clears it
    assert not throttle.shut_out("2001:db8:1:2::77")


def test_a_trusted_balancer_s_own_connections_never_count() -> None:
    """Its health checks (PROXY LOCAL) come from its own address: never shut out."""
    throttle, _ = _throttle(free=1)
    throttle.balancers = TrustedProxies(["10.9.0.0/16"])
    for _ in range(5):
        throttle.abandoned("10.9.0.3")
        throttle.handshake_failed(
            ("10.9.0.3", 1), _failure(TlsFailureReason.NO_CLIENT_CERTIFICATE), HELLO
        )
    assert not throttle.shut_out("10.9.0.3")


def test_the_shutting_out_is_logged_once_per_host_and_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttle, _ = _throttle(free=1, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.auth_throttle"):
        for _ in range(6):
            throttle.abandoned("10.0.0.1")
    lines = [r.getMessage() for r in caplog.records if r.name == "test.auth_throttle"]
    assert lines == [
        "shutting out 10.0.0.1 for 1 s: 2 refused connects in a row (the last: ended "
        "before authentication; auth_failures_before_throttle)"
    ]


def test_a_long_run_of_failures_stays_at_the_maximum() -> None:
    """In-flight failures keep counting while a host is shut out: the doubling is capped
    before it could overflow a float."""
    throttle = FailureThrottle(ThrottlePolicy(free_failures=1, max_block=8.0), Clock())
    blocks = [throttle.failed("a") for _ in range(2000)]
    assert blocks[:5] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert blocks[-1] == 8.0
