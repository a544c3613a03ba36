"""Routing a will (MQTT 3.1.1 §3.1.2.5; 5.0 §3.1.3.2.2), which no publisher acknowledges.

A client's message is acknowledged once it is routed (in a cluster, once the other members
confirmed it); when that fails, its connection closes unacknowledged and the client sends it
again. A will has no client left to send it again: a cluster member that did not confirm it
(a full ``max_forward_buffer``, a member that did not answer) is logged, and the failure is
read here on purpose, so that asyncio does not report it as "never retrieved".

Used by ``broker.inbound`` and ``broker.cluster.router``; imports only ``broker.router``.
"""

import asyncio
import logging

from broker.repeats import LogLimiter
from broker.router import Message, Router

__all__ = ["route_will"]

log = logging.getLogger(__name__)

# One line a minute: the wills of a dead member's clients come at once.
_unrouted = LogLimiter(log)


def route_will(router: Router, message: Message) -> None:
    """Route ``message``, a will; a failure to reach every member is logged."""
    routed = router.publish(message)
    if isinstance(routed, asyncio.Future):
        topic = message.topic
        routed.add_done_callback(lambda done: _routed(done, topic))


def _routed(done: "asyncio.Future[None]", topic: str) -> None:
    error = "cancelled" if done.cancelled() else done.exception()
    if error is not None:
        _unrouted.warning("wills", "wills not routed to every member",
                          "a will for %s was not routed to every member: %s",
                          topic, error)  # fmt: skip
