"""Whether a member that left or missed its heartbeats is gone for good, before a survivor
adopts its sessions (``SessionClaims.adopt``).

Silent is not always dead: a member whose process stalls (starved of CPU, paused) still has
its NATS subscriptions, and would keep the sessions it holds in memory. Nor is an answer a
sign of life to come. A member stopping cleanly stops listening and answers the frames NATS
had sent it before it deletes its members entry (``ClusterRouter.stop``), so a survivor that
sees it gone finds nobody listening; but one of an earlier version deleted its entry first,
and a survivor asking in between got an answer and saw nobody listen a moment later.

So the one rule, whatever the interleaving: the member is asked again every ``ADOPT_RETRY``
seconds for as long as anything listens on its subject (it answers, or NATS still has its
subscriptions and nobody answers in time), until NATS says nobody listens (its sessions are
adopted), or it is back (a heartbeat of it again: it keeps or restores its own), for at most
``ADOPT_WITHIN`` seconds. The wait between two asks ends as soon as a heartbeat of the member
is seen: a member back from fencing waits for the survivor that settles its ended run
(``broker.cluster.fence``), and that survivor's adoption ends here (a thawed member waited
out the whole ``ADOPT_RETRY`` before it could take connections again). Waiting is never
wrong: a member that answers while writing no heartbeat is either leaving, or stalled and
about to be back or to fence itself off, which ends its listening too
(``broker.cluster.fence``). Asking is the only way to see a subscription go: NATS tells
nobody when one does.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from broker.cluster.link import ClusterLink
from nanoiot.tasks import cancellable

__all__ = ["ADOPT_RETRY", "ADOPT_WITHIN", "UntilBack", "nobody_listens"]

log = logging.getLogger(__name__)

# A gone member something still listens for is asked again every ADOPT_RETRY seconds (plus
# the request's own timeout) for at most ADOPT_WITHIN seconds.
ADOPT_RETRY: Final = 1.0
ADOPT_WITHIN: Final = 600.0


# Return once the member named is live again, or after the seconds given at most.
UntilBack = Callable[[str, float], Awaitable[None]]


async def nobody_listens(
    link: ClusterLink, gone: str, is_gone: Callable[[str], bool], until_back: UntilBack
) -> bool:
    """Whether NATS says nobody listens on ``gone``'s forwarding subject any more.

    While it answers or its requests time out (NATS drops the subscriptions of a connection
    it finds dead, after its own ping timeout) it is asked again, until it is back (no
    longer ``is_gone``: ``until_back`` ends the wait between two asks then), for at most
    ``ADOPT_WITHIN`` seconds."""
    subject = link.subject("route", gone)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ADOPT_WITHIN
    logged = False
    while is_gone(gone):
        answered = await cancellable(link.answers(subject))  # a lost cancellation: 600 s
        if answered is False:
            return True
        if not logged:
            why = "answers" if answered else "NATS still has its subscriptions"
            log.warning("member %s left or missed its heartbeats but %s: its sessions stay "
                        "with it while it does", gone, why)  # fmt: skip
            logged = True
        if loop.time() + ADOPT_RETRY >= deadline:
            log.warning("member %s is still listened for after %g s: its sessions stay with "
                        "it", gone, ADOPT_WITHIN)  # fmt: skip
            return False
        await until_back(gone, ADOPT_RETRY)
    return False
