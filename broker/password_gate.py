"""Password checks under bounds: a small pool, a short queue, and a throttle per host.

An argon2id check (RFC 9106) costs tens of milliseconds of CPU and 64 MiB on purpose; a client
needs no credentials to ask for one. Unbounded, a flood of CONNECTs with guessed passwords
filled the machine and a valid application waited behind every guess. So:

- at most ``workers`` checks run at once; a check whose client left still holds its worker
  until its thread finishes (a thread cannot be stopped), so the bound is real;
- at most ``queue`` wait for a worker, and one client host has at most ``per_address`` of
  them running or waiting: past either, the CONNECT is refused at once (CONNACK 3, server
  unavailable, MQTT 3.1.1 §3.2.2.3: the client may retry). Only a host that has failed a
  check lately is refused for its share; the further CONNECTs of a host without failures
  (a backend opening several connections at once) wait for its share in a line of their own,
  at most ``queue`` long, so a burst from one host never fills the pool's queue;
- after ``free_failures`` failed checks from a host, each further failure shuts that host
  out for a while, doubling up to ``max_block`` seconds (``broker.failure_throttle``): its
  password checks are refused (CONNACK 3), and the listener drops its new connections
  before the TLS handshake, which was then the flood's main cost (``shut_out``). Like
  fail2ban this shuts out whatever shares the host (a NAT), certificates included, while
  the block lasts. A success clears the count. The throttle looks at the host only, so
  an unknown user name costs the same as a known one and reveals nothing. Its "shutting
  out" line is written at most once per host and ``log_interval``, for at most ``tracked``
  hosts an interval, the rest counted in a summary line (``broker.repeats.LogLimiter``).
  Written once a block, it came without end from failures in flight, a short
  ``max_block`` or guesses from ever new hosts.

A host is what ``max_connecting_per_address`` and the authentication throttle count as one
(``broker.connection_limit.host_of``): an IPv4 address (an IPv4-mapped IPv6 one too), or the
/64 of an IPv6 address. A host is given a whole /64 (RFC 7421) and picks addresses in it at
will (RFC 8981): counted per address, it got a fresh share and a fresh count of failures with
each address it took. Behind a trusted load balancer it is the client's, from its PROXY
header.

A CONNECT waiting here is bounded by the connect timeout and cancelled when its client goes,
like the rest of the CONNECT phase (``broker.client``). Certificates and access tokens never
come here.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from auth.decision import Decision, Reason, deny
from broker.connection_limit import host_of
from broker.failure_throttle import FailureThrottle
from broker.repeats import LogLimiter

log = logging.getLogger(__name__)
M = TypeVar("M")
_SHUT_OUT: Final = "shut-outs after failed password checks"  # their summary line's words


@dataclass(frozen=True)
class PasswordPolicy:
    workers: int = 2
    queue: int = 16
    per_address: int = 1
    free_failures: int = 5
    max_block: float = 60.0
    tracked: int = 10_000  # hosts whose failures are remembered
    log_interval: float = 60.0  # seconds: one "shutting out" line per host in each


@dataclass
class _Share:
    """One host's share of the pool: ``users`` CONNECTs hold or wait for its places."""

    places: asyncio.Semaphore
    users: int = 0


class PasswordGate:
    """Runs password checks within the policy's bounds (see the module's docstring)."""

    def __init__(
        self, policy: PasswordPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or PasswordPolicy()
        self.throttle = FailureThrottle(self.policy, clock)
        self.lines = LogLimiter(
            log, interval=self.policy.log_interval, max_keys=self.policy.tracked, clock=clock
        )
        self._workers = asyncio.Semaphore(self.policy.workers)
        self._waiting = 0
        self._shares: dict[str, _Share] = {}  # by host

    def shut_out(self, address: str) -> bool:
        """True while the address's host is throttled, or while it has failed before and has
        its share of checks under way (the next CONNECT would only be refused as busy): the
        listener then drops its connections before the TLS handshake. Their handshakes were
        what a flood cost once its checks were bounded, and they delayed everyone's."""
        if not self.throttle:  # no failures remembered: every connect's usual case
            return False
        host = host_of(address)
        if self.throttle.blocked_for(host) > 0:
            return True
        return self._users(host) >= self.policy.per_address and self._suspect(host)

    async def check(
        self, address: str, verify: Callable[[], Awaitable[M | None]]
    ) -> M | Decision | None:
        """``verify()``'s answer (None: refused by the store), or a refusal without a check."""
        host = host_of(address)
        refusal = self._throttled(host) or self._full(host)
        if refusal is not None:
            return refusal
        share = self._shares.get(host)
        if share is None:
            share = self._shares[host] = _Share(asyncio.Semaphore(self.policy.per_address))
        share.users += 1
        try:
            async with share.places:
                return await self._run(host, verify)
        finally:
            share.users -= 1
            if not share.users:
                del self._shares[host]

    async def _run(
        self, host: str, verify: Callable[[], Awaitable[M | None]]
    ) -> M | Decision | None:
        self._waiting += 1
        try:
            await self._workers.acquire()
        finally:
            self._waiting -= 1
        refusal = self._throttled(host)  # the host may have failed meanwhile
        if refusal is not None:
            self._workers.release()
            return refusal
        task = asyncio.ensure_future(self._counted(host, verify))
        task.add_done_callback(self._finished)
        # Shielded: if this CONNECT is cancelled, the check still runs to its end in its
        # thread, and keeps its worker until then.
        return await asyncio.shield(task)

    async def _counted(self, host: str, verify: Callable[[], Awaitable[M | None]]) -> M | None:
        """The check, and its outcome counted before its worker is free: also when the client
        left meanwhile, and before a check waiting for that worker looks at the throttle."""
        result = await verify()
        if result is not None:
            self.throttle.succeeded(host)
            return result
        block = self.throttle.failed(host)
        if block:
            self.lines.warning(
                host, _SHUT_OUT, "shutting out %s for %g s: %d failed password checks in a row",
                host, block, self.throttle.failures(host),
            )  # fmt: skip
        return None

    def flush(self) -> None:
        """Write the counts of "shutting out" lines held back (the broker stops)."""
        self.lines.flush()

    def _finished(self, task: "asyncio.Future[Any]") -> None:
        self._workers.release()
        if not task.cancelled():
            task.exception()  # retrieved: a store error after the client left is not news

    def _throttled(self, host: str) -> Decision | None:
        wait = self.throttle.blocked_for(host)
        if not wait:
            return None
        return deny(
            Reason.PASSWORD_THROTTLED,
            f"too many failed password checks from {host}; retry in {wait:.0f} s",
        )

    def _full(self, host: str) -> Decision | None:
        policy = self.policy
        users = self._users(host)
        if users >= policy.per_address and self._suspect(host):
            return deny(
                Reason.PASSWORD_CHECKS_BUSY,
                f"{policy.per_address} password check(s) from {host} already under way",
            )
        if users - policy.per_address >= policy.queue:
            return deny(
                Reason.PASSWORD_CHECKS_BUSY,
                f"{users} password checks from {host} running or waiting",
            )
        if self._workers.locked() and self._waiting >= policy.queue:
            return deny(
                Reason.PASSWORD_CHECKS_BUSY,
                f"{policy.workers} password checks running and {policy.queue} waiting",
            )
        return None

    def _users(self, host: str) -> int:
        share = self._shares.get(host)
        return share.users if share is not None else 0

    def _suspect(self, host: str) -> bool:
        return self.throttle.failures(host) > 0
