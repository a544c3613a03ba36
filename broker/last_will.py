"""When a client's will is published, once its connection has ended without DISCONNECT.

MQTT 3.1.1 §3.1.2.5: at once. MQTT 5.0 §3.1.3.2.2: after the Will Delay Interval, or when the
session ends if that comes first; a client that takes the session meanwhile cancels it
(``BrokerSession.cancel_timers``). While the previous run's sessions are being restored it
waits for them, as the client's other messages do (``broker.connecting``). In a cluster it is
published once no other member may publish it too (``broker.cluster.wills``). A will waiting
for its delay is dropped if its device's credentials are revoked or disabled meanwhile
(``broker.revocation``): a revoked device publishes nothing more; in a cluster, a dead
member's will is decided again before a survivor publishes it (``broker.cluster.will_decision``).
"""

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from broker import inbound
from broker.mqtt.packets import Will
from broker.mqtt.properties import Property
from broker.peer import Peer
from broker.sessions import BrokerSession

if TYPE_CHECKING:
    from broker.client import MqttClient


class DelayedWill:
    """Publishes a will that waited for its delay (``BrokerSession.pending_will``); ``peer``
    is the connection that set it, decided again if its device changes meanwhile."""

    __slots__ = ("_publish", "peer")

    def __init__(self, publish: Callable[[], None], peer: Peer) -> None:
        self._publish = publish
        self.peer = peer

    def __call__(self) -> None:
        self._publish()


def publish_will(client: "MqttClient", session: BrokerSession, peer: Peer, will: Will) -> None:
    """Publish the will of ``client``, which has just ended, now or after its delay: the
    smaller of the Will Delay Interval and the session's expiry."""
    delay = will.properties.get(Property.WILL_DELAY_INTERVAL, 0) if will.properties else 0
    expiry = client._expiry()
    if isinstance(delay, int) and delay and expiry:
        loop = client._loop

        def publish() -> None:
            session.will_timer = session.pending_will = None
            _publish(client, session, peer, will)
            session.will_done()

        session.pending_will = DelayedWill(publish, peer)
        session.will_timer = loop.call_later(min(delay, expiry), publish)
        return
    restoring = client.broker.restoring()
    if restoring is None:
        _publish(client, session, peer, will)
    else:  # like its other messages, once every subscriber's session is in
        restoring.add_done_callback(
            functools.partial(_publish_restored, client, session, peer, will)
        )


def _publish(client: "MqttClient", session: BrokerSession, peer: Peer, will: Will) -> None:
    """``session``, the client's, is the will's publisher: under No Local its own
    subscriptions do not get it (5.0 §3.8.3.1 [MQTT-3.8.3-3]: the will is the Application
    Message of the connection that set it, whose ClientID is the session's)."""
    broker, loop = client.broker, client._loop
    broker.registry.will_due(
        client, lambda: inbound.publish_will(broker, peer, will, loop.time(), origin=session)
    )


def _publish_restored(
    client: "MqttClient",
    session: BrokerSession,
    peer: Peer,
    will: Will,
    restored: "asyncio.Future[None]",
) -> None:
    if not restored.cancelled():  # cancelled: the broker stops
        _publish(client, session, peer, will)
