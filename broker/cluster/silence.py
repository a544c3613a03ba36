"""Whether a member that missed its heartbeats is gone for good, before a survivor adopts
its sessions (``SessionClaims.adopt``).

Silent is not always dead: a member whose process stalls (starved of CPU, paused) still has
its NATS subscriptions, and would keep the sessions it holds in memory.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from broker.cluster.link import ClusterLink

__all__ = ["ADOPT_RETRY", "ADOPT_WITHIN", "nobody_listens"]

log = logging.getLogger(__name__)

# A silent member whose subscriptions NATS still has is asked again every ADOPT_RETRY
# seconds (plus the request's own timeout) for at most ADOPT_WITHIN seconds.
ADOPT_RETRY: Final = 1.0
ADOPT_WITHIN: Final = 600.0


async def nobody_listens(link: ClusterLink, gone: str, is_gone: Callable[[str], bool]) -> bool:
    """Whether NATS says nobody listens on ``gone``'s forwarding subject any more.

    While its requests time out it is asked again (NATS drops the subscriptions of a
    connection it finds dead, after its own ping timeout), until it answers or is back (no
    longer ``is_gone``), for at most ``ADOPT_WITHIN`` seconds."""
    subject = link.subject("route", gone)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ADOPT_WITHIN
    logged = False
    while is_gone(gone) and loop.time() < deadline:
        answered = await link.answers(subject)
        if answered is False:
            return True
        if not logged:
            why = "answers" if answered else "NATS still has its subscriptions"
            log.warning("member %s missed its heartbeats but %s: its sessions stay with "
                        "it while it does", gone, why)  # fmt: skip
            logged = True
        if answered:
            return False
        await asyncio.sleep(ADOPT_RETRY)
    return False
