"""Routing a will (MQTT 3.1.1 §3.1.2.5; 5.0 §3.1.3.2.2), which no publisher acknowledges.

A client's message is acknowledged once it is routed (in a cluster, once the other members
confirmed it); when that fails, its connection closes unacknowledged and the client sends it
again. A will has no client left to send it again: a cluster member that did not confirm it
(a full ``max_forward_buffer``, a member that did not answer) is logged, and the failure is
read here on purpose, so that asyncio does not report it as "never retrieved".

Used by ``broker.inbound``, and by ``broker.cluster.router`` for the wills of a dead
member's clients; imports nothing of ``broker.cluster`` but for type checking (no NATS).
"""

import asyncio
import logging
from typing import TYPE_CHECKING

from broker.mqtt.expiry import deadline
from broker.mqtt.properties import NO_PROPERTIES, PUBLISH, read_properties
from broker.mqtt.wire import Reader
from broker.repeats import LogLimiter
from broker.retained import RetainedStore
from broker.router import Message, Router

if TYPE_CHECKING:
    from broker.cluster.will_entries import StoredWill

__all__ = ["publish_stored_will", "route_will"]

log = logging.getLogger(__name__)

# One line a minute: the wills of a dead member's clients come at once.
_unrouted = LogLimiter(log)


def route_will(router: Router, message: Message) -> None:
    """Route ``message``, a will; a failure to reach every member is logged."""
    routed = router.publish(message)
    if isinstance(routed, asyncio.Future):
        topic = message.topic
        routed.add_done_callback(lambda done: _routed(done, topic))


def publish_stored_will(router: Router, retained: RetainedStore, will: "StoredWill") -> None:
    """A dead member's client's will, published here (MQTT 3.1.1 §3.1.2.5)."""
    now = asyncio.get_running_loop().time()
    properties = (
        read_properties(Reader(will.properties), PUBLISH, users=None)  # accepted before
        if will.properties
        else NO_PROPERTIES
    )
    expires_at = deadline(properties, now)
    route_will(
        router, Message(will.topic, will.payload, will.qos, will.retain, properties, expires_at)
    )
    if will.retain:
        retained.retain(will.topic, will.payload, will.qos, will.key[0], properties, expires_at)


def _routed(done: "asyncio.Future[None]", topic: str) -> None:
    error = "cancelled" if done.cancelled() else done.exception()
    if error is not None:
        _unrouted.warning("wills", "wills not routed to every member",
                          "a will for %s was not routed to every member: %s",
                          topic, error)  # fmt: skip
