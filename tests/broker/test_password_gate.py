"""The password gate's bounds, each tried past its limit (the flood itself, with real clients
and a real broker, is tests/reliability/test_password_flood.py)."""

import asyncio

from auth.connack import ConnackCode
from auth.decision import Decision, Reason
from broker.failure_throttle import FailureThrottle
from broker.password_gate import PasswordGate, PasswordPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_shut_out_after_its_free_failures_for_doubling_times() -> None:
    clock = Clock()
    throttle = FailureThrottle(PasswordPolicy(free_failures=3, max_block=4.0), clock)
    assert [throttle.failed("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert throttle.blocked_for("10.0.0.1") == 0.0
    assert throttle.failed("10.0.0.1") == 1.0
    assert throttle.blocked_for("10.0.0.1") == 1.0
    assert throttle.blocked_for("10.0.0.2") == 0.0  # per address
    assert [throttle.failed("10.0.0.1") for _ in range(3)] == [2.0, 4.0, 4.0]  # capped
    clock.now += 4.0
    assert throttle.blocked_for("10.0.0.1") == 0.0


def test_a_success_clears_and_a_long_quiet_forgets() -> None:
    clock = Clock()
    throttle = FailureThrottle(PasswordPolicy(free_failures=1, max_block=10.0), clock)
    throttle.failed("a")
    throttle.succeeded("a")
    assert throttle.failed("a") == 0.0  # counting started over
    assert throttle.failed("a") == 1.0
    clock.now += 1.0 + 10.0 + 0.1  # the block ended, then max_block seconds of quiet
    assert throttle.failed("a") == 0.0


def test_a_long_run_of_failures_stays_at_the_maximum() -> None:
    """In-flight failures keep counting while an address is shut out: the doubling is capped
    before it could overflow a float."""
    throttle = FailureThrottle(PasswordPolicy(free_failures=1, max_block=8.0), Clock())
    blocks = [throttle.failed("a") for _ in range(2000)]
    assert blocks[:5] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert blocks[-1] == 8.0


def test_the_remembered_addresses_are_bounded() -> None:
    throttle = FailureThrottle(PasswordPolicy(tracked=3), Clock())
    for n in range(10):
        throttle.failed(f"10.0.0.{n}")
    assert len(throttle) == 3


async def test_checks_beyond_the_workers_and_queue_are_refused_at_once() -> None:
    gate = PasswordGate(PasswordPolicy(workers=1, queue=1, per_address=5))
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "match"

    running = asyncio.ensure_future(gate.check("a", slow))
    waiting = asyncio.ensure_future(gate.check("b", slow))
    await asyncio.sleep(0)  # both reach the gate
    refused = await gate.check("c", slow)
    assert isinstance(refused, Decision)
    assert refused.reason is Reason.PASSWORD_CHECKS_BUSY
    assert refused.connack == ConnackCode.SERVER_UNAVAILABLE
    release.set()
    assert await running == "match"
    assert await waiting == "match"


async def test_an_address_without_failures_may_check_several_passwords_at_once() -> None:
    gate = PasswordGate(PasswordPolicy(workers=1, queue=10, per_address=1))
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "match"

    backend = [asyncio.ensure_future(gate.check("10.0.0.9", slow)) for _ in range(4)]
    await asyncio.sleep(0)
    assert not any(each.done() for each in backend)  # waiting for the worker, not refused
    release.set()
    assert await asyncio.gather(*backend) == ["match"] * 4


async def test_a_burst_from_one_address_leaves_the_pool_to_the_others() -> None:
    # A flood's first wave comes before any of its checks failed: it waits in its own line
    # and a valid client from elsewhere still finds the pool's queue open.
    gate = PasswordGate(PasswordPolicy(workers=1, queue=2, per_address=1))
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "match"

    burst = [asyncio.ensure_future(gate.check("10.0.0.66", slow)) for _ in range(10)]
    await asyncio.sleep(0)
    refused = [each for each in burst if each.done()]
    assert len(refused) == 10 - 1 - 2  # one share, a line as long as the queue
    assert all(isinstance(each.result(), Decision) for each in refused)
    valid = asyncio.ensure_future(gate.check("10.0.0.7", slow))
    await asyncio.sleep(0)
    assert not valid.done()  # waiting for the worker, not refused
    release.set()
    assert await valid == "match"
    await asyncio.gather(*burst)


async def test_an_address_that_failed_gets_its_share_only() -> None:
    gate = PasswordGate(PasswordPolicy(workers=4, queue=10, per_address=1))
    gate.throttle.failed("10.0.0.9")  # below free_failures: not shut out, but a suspect
    release = asyncio.Event()

    async def slow() -> None:
        await release.wait()

    first = asyncio.ensure_future(gate.check("10.0.0.9", slow))
    await asyncio.sleep(0)
    second = await gate.check("10.0.0.9", slow)
    assert isinstance(second, Decision)
    assert second.reason is Reason.PASSWORD_CHECKS_BUSY
    other = asyncio.ensure_future(gate.check("10.0.0.10", slow))
    await asyncio.sleep(0)
    assert not other.done()  # another address is not refused
    release.set()
    assert await first is None
    assert await other is None


async def test_a_cancelled_connect_keeps_its_worker_until_its_check_ends() -> None:
    gate = PasswordGate(PasswordPolicy(workers=1, queue=0, per_address=5))
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "match"

    connect = asyncio.ensure_future(gate.check("a", slow))
    await started.wait()
    connect.cancel()  # the client went away
    await asyncio.gather(connect, return_exceptions=True)
    busy = await gate.check("b", slow)  # the check still runs in its worker
    assert isinstance(busy, Decision)
    assert busy.reason is Reason.PASSWORD_CHECKS_BUSY
    release.set()
    await asyncio.sleep(0)
    started.clear()
    again = asyncio.ensure_future(gate.check("b", slow))
    await started.wait()
    assert await again == "match"


async def test_failures_shut_the_address_out_and_a_waiting_check_is_refused() -> None:
    clock = Clock()
    gate = PasswordGate(PasswordPolicy(workers=1, queue=5, per_address=5, free_failures=1), clock)
    release = asyncio.Event()

    async def wrong() -> None:
        await release.wait()

    first = asyncio.ensure_future(gate.check("x", wrong))
    queued = asyncio.ensure_future(gate.check("x", wrong))  # waits for the one worker
    await asyncio.sleep(0)
    gate.throttle.failed("x")  # a failure recorded meanwhile (free: 1)
    release.set()
    assert await first is None  # its failure shuts x out
    refused = await queued
    assert isinstance(refused, Decision)
    assert refused.reason is Reason.PASSWORD_THROTTLED
    assert gate.shut_out("x")
    assert not gate.shut_out("y")
    clock.now += 60.0
    assert not gate.shut_out("x")


async def test_the_addresses_of_one_ipv6_64_are_one_host() -> None:
    # A host owns its /64 and picks addresses in it at will (RFC 8981): a guess from each of
    # them counts against it all, as the authentication throttle counts them.
    gate = PasswordGate(PasswordPolicy(free_failures=2, max_block=60.0), Clock())

    async def wrong() -> None:
        return None

    for n in range(3):  # two free failures, the third shuts the /64 out
        assert await gate.check(f"2001:db8:1:2::{n + 1}", wrong) is None
    refused = await gate.check("2001:db8:1:2:ffff:ffff:ffff:fffe", wrong)
    assert isinstance(refused, Decision)
    assert refused.reason is Reason.PASSWORD_THROTTLED
    assert "2001:db8:1:2::/64" in refused.detail
    assert gate.shut_out("2001:db8:1:2:abcd::7")
    assert not gate.shut_out("2001:db8:1:3::1")  # the next /64: another host
    assert await gate.check("2001:db8:1:3::1", wrong) is None  # checked, not refused


async def test_an_ipv4_address_is_a_host_mapped_or_not() -> None:
    gate = PasswordGate(PasswordPolicy(free_failures=1, max_block=60.0), Clock())

    async def wrong() -> None:
        return None

    assert await gate.check("::ffff:192.0.2.7", wrong) is None
    assert await gate.check("192.0.2.7", wrong) is None  # the same host: shut out now
    assert gate.shut_out("192.0.2.7")
    assert gate.shut_out("::ffff:192.0.2.7")
    assert not gate.shut_out("192.0.2.8")  # its neighbour is another host


async def test_a_suspect_64_has_one_share_of_checks() -> None:
    gate = PasswordGate(PasswordPolicy(workers=4, queue=10, per_address=1))
    release = asyncio.Event()

    async def slow() -> None:
        await release.wait()

    async def wrong() -> None:
        return None

    assert await gate.check("2001:db8::9", wrong) is None  # failed once: its share only

    first = asyncio.ensure_future(gate.check("2001:db8::1", slow))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(gate.check("2001:db8::2", slow))  # another of the /64
    await asyncio.sleep(0)
    assert second.done()  # refused at once, not waiting for a worker
    busy = second.result()
    assert isinstance(busy, Decision)
    assert busy.reason is Reason.PASSWORD_CHECKS_BUSY
    assert gate.shut_out("2001:db8::3")
    release.set()
    assert await first is None
