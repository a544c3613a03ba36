"""A dead member's client's will, decided again before a survivor publishes it.

A revoked, disabled or deleted device publishes nothing more: on its own member a will that
waits for its delay is dropped when its device changes (``broker.revocation``). A member that
died cannot do that, nor act on a revocation it had not applied yet; and the change may come
after its death, while a survivor holds the will for its Will Delay Interval (MQTT 5.0
§3.1.3.2.2). So the survivor decides the will's connection again just before it publishes
it (``broker.cluster.survivor``), with the decision a new connection would get
(``Authenticator.authenticate``; the same re-decision as ``broker.revocation``'s,
``refusal_of``): from the certificate chain the client presented, which the will's entry
keeps, or, without one, from the credential it was admitted with (a token or password is
never written to NATS: ``Authenticator.decide_credential``). A will whose connection would be
refused now is dropped (one log line, ``nanoiot_cluster_wills_refused``).

The decisions are the survivor's one cost per will that grows with the store's round trip
(PostgreSQL's, ~0.5 ms on one host, more across a network): a dead member's thousands of wills
are decided ``cluster_max_will_lookups`` at a time (``Decisions``, ``at_most``), not one after
another; each will is still decided before it is published, and published before its entry
is deleted. Wills of one run are of distinct sessions (one entry each), whose order MQTT
does not set (§4.6 orders one client's messages), so they may go out in any order. The
bound holds for every decision of the process (a survivor's, and those of a member back from
fencing: ``broker.cluster.wills``), so that they leave room in the store's lookup pool
(``storage.lookups``) for the connects of the dead member's clients, which come meanwhile.

If the store cannot answer (unreachable, or slower than ``DECIDE_WITHIN``), the will is
published as before: on a single node too a store that cannot answer is no revocation, and
a will waiting there stays. An entry written by an earlier version (neither chain nor
credential) is published as before too.
"""

import asyncio
from collections.abc import Awaitable, Iterable

from cryptography import x509

from broker.authn import Authenticator, ConnectRequest
from broker.cluster.will_entries import StoredWill
from broker.revocation import refusal_of

__all__ = ["DECIDE_WITHIN", "Decisions", "at_most", "refusal_now"]

DECIDE_WITHIN = 10.0  # seconds for the store's lookups; past it, as if it could not answer


async def refusal_now(authenticator: Authenticator, will: StoredWill) -> str | None:
    """Why ``will``'s connection would be refused now; None if it would not, or if that
    cannot be known (the store does not answer, or the entry does not say)."""
    device_id, client_id = will.key
    try:
        if will.chain:
            chain = tuple(x509.load_der_x509_certificate(der) for der in will.chain)
            request = ConnectRequest(chain[0], chain, None, None, client_id, remote="")
            decision = await authenticator.authenticate(request, DECIDE_WITHIN)
        elif will.credential is not None:
            decision = await authenticator.decide_credential(will.credential, DECIDE_WITHIN)
        else:
            return None
    except TimeoutError:
        return None
    except ValueError as exc:  # not a certificate: its connection could not be admitted
        return f"its certificate is not readable: {exc}"
    refusal, _answered = refusal_of(decision, device_id)
    return refusal


class Decisions:
    """``refusal_now`` with at most ``in_flight`` decisions under way (a store lookup each),
    the others waiting their turn."""

    def __init__(self, authenticator: Authenticator, in_flight: int) -> None:
        self._authenticator = authenticator
        self._turns = asyncio.Semaphore(in_flight)

    async def __call__(self, will: StoredWill) -> str | None:
        async with self._turns:
            return await refusal_now(self._authenticator, will)


async def at_most(in_flight: int, works: Iterable[Awaitable[object]]) -> None:
    """Await each of ``works``, at most ``in_flight`` at once, taken in order as earlier ones
    end (a generator of coroutines makes each only when its turn comes)."""
    left = iter(works)

    async def one_at_a_time() -> None:
        for work in left:
            await work

    await asyncio.gather(*(one_at_a_time() for _ in range(in_flight)))
