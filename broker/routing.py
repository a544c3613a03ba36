"""Topic rules inside amqtt's routing: per-device ACL, the ``me`` mapping, QoS, retained.

Overrides of ``amqtt.broker.Broker`` (pinned in ``tests/broker/test_amqtt_pins.py``):

- ``add_subscription`` / ``_del_subscription``: filters are mapped to canonical form
  (``v1/devices/me/...`` becomes ``devices/<name>/...``) and checked against the ACL.
- ``route`` (called by ``broker.packet_loop`` for QoS 0 and 1, and by
  ``_handle_message_delivery`` for QoS 2): an incoming PUBLISH is mapped, checked and
  delivered at once. MQTT 3.1.1 has no way to refuse a PUBLISH, so a forbidden one is dropped
  and logged.
- ``_deliver``: writes to each subscriber's stream (``broker.delivery.send_publish``) at
  min(publish QoS, subscription QoS) (§3.8.4; amqtt uses the subscription's), with the topic
  turned back into the ``me`` form for ``me`` subscriptions; no broadcast queue, no task per
  subscriber. ``_run_broadcast`` feeds what amqtt still broadcasts (wills) to it.
- ``_publish_retained_messages_for_subscription``: retained messages go only to subscribers
  allowed to receive them (amqtt sent them to anyone, facts.md §2).
"""

import asyncio
import logging
from collections import deque
from typing import Any

from amqtt.broker import RetainedApplicationMessage
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.session import Session

from auth.acl import to_canonical, to_device_form
from auth.topics import topic_matches, valid_topic_filter, valid_topic_name
from broker.metrics import BrokerMetrics
from broker.peer import Peer, peer_of

log = logging.getLogger(__name__)

_REFUSED = 0x80  # SUBACK failure return code, MQTT 3.1.1 §3.9.3


def _canonical(peer: Peer, topic: str) -> str:
    if peer.identity.application:
        return topic
    return to_canonical(topic, peer.identity.device_name)


def _outbound(peer: Peer | None, topic_filter: str, topic: str) -> str:
    """The topic as this subscriber expects it: in ``me`` form if it subscribed that way."""
    if peer is not None and topic_filter in peer.me_filters:
        return to_device_form(topic, peer.identity.device_name)
    return topic


class RoutingMixin:
    """Mixed into ``NanoIoTBroker`` before ``amqtt.broker.Broker``."""

    _subscriptions: dict[str, list[tuple[Session, int]]]
    _retained_messages: dict[str, Any]
    _broadcast_queue: "asyncio.Queue[dict[str, Any]]"
    metrics: BrokerMetrics

    def subscriptions_of(self, session: Session) -> list[tuple[str, int]]:
        """The (canonical filter, QoS) pairs this session holds."""
        key = session.client_id
        return [
            (topic_filter, qos)
            for topic_filter, subscribers in self._subscriptions.items()
            for subscriber, qos in subscribers
            if subscriber.client_id == key
        ]

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        topic_filter, qos = subscription
        peer = peer_of(session)
        if peer is None:
            return _REFUSED
        canonical = _canonical(peer, topic_filter)
        if not valid_topic_filter(canonical) or not peer.acl.can_subscribe(canonical):
            log.info("%s may not subscribe to '%s'", peer.label, topic_filter)
            return _REFUSED
        if canonical != topic_filter:
            peer.me_filters.add(canonical)
        granted: int = await super().add_subscription((canonical, qos), session)  # type: ignore[misc]
        return granted

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        peer = peer_of(session)
        if peer is not None:
            a_filter = _canonical(peer, a_filter)
            peer.me_filters.discard(a_filter)
        deleted: int = super()._del_subscription(a_filter, session)  # type: ignore[misc]
        return deleted

    async def _handle_message_delivery(
        self, client_session: Session, handler: Any, wait_deliver: "asyncio.Future[Any]"
    ) -> bool:
        """A PUBLISH that came through amqtt's delivery queue (QoS 2; QoS 0 and 1 take
        ``route`` directly, ``broker.delivery``); False closes the connection."""
        message = wait_deliver.result()
        if message is None or peer_of(client_session) is None:
            return message is None
        packet = message.publish_packet
        retain = packet is not None and packet.retain_flag
        return self.route(client_session, message.topic, message.data, message.qos, retain)

    def route(
        self, client_session: Session, topic: str, data: bytes, qos: int, retain: bool
    ) -> bool:
        """Check one PUBLISH from a client and deliver it now; False: close its connection."""
        peer = peer_of(client_session)
        if peer is None:
            return False
        self.metrics.messages_in += 1
        if not valid_topic_name(topic) or topic.startswith("$"):
            # MQTT 3.1.1 §4.7.3 and §4.7.2: a malformed topic is a protocol violation.
            log.info("%s sent PUBLISH with invalid topic %r: closing", peer.label, topic)
            return False
        canonical = _canonical(peer, topic)
        if not peer.acl.can_publish(canonical):
            log.info("%s may not publish to '%s': dropped", peer.label, topic)
            return True
        self._deliver(client_session, canonical, data, qos)
        if retain:
            self._retain(client_session, canonical, data, qos)
        return True

    def _deliver(
        self, source: Session | None, topic: str, data: bytes, published_qos: int | None
    ) -> None:
        """Write the message to every matching subscriber's stream, at min(publish QoS,
        subscription QoS) (§3.8.4); no await, so subscriptions cannot change meanwhile."""
        sessions = self._sessions  # type: ignore[attr-defined]
        for topic_filter, subscribers in self._subscriptions.items():
            if not topic_matches(topic, topic_filter):
                continue
            for target, subscribed_qos in subscribers:
                qos = (
                    subscribed_qos if published_qos is None else min(published_qos, subscribed_qos)
                )
                out = _outbound(peer_of(target), topic_filter, topic)
                if target.transitions.state != "connected":
                    # §3.1.2.4: a persistent session keeps QoS 1 and 2 messages while offline.
                    if not target.clean_session and qos in (QOS_1, QOS_2):
                        self.queue_offline(
                            target, RetainedApplicationMessage(source, out, data, qos)
                        )
                    continue
                handler = sessions.get(target.client_id, (None, None))[1]
                if handler is not None and handler.send_publish(out, data, qos):
                    self.metrics.messages_out += 1

    def queue_offline(self, target: Session, message: RetainedApplicationMessage) -> None:
        """Keep a message for a persistent session whose client is away (made durable by
        ``broker.persistence``, which overrides this)."""
        target.retained_messages.put_nowait(message)

    def _retain(self, source: Session, topic: str, data: bytes, qos: int | None) -> None:
        """§3.3.1.3: keep the last retained message of a topic; an empty one deletes it
        (``Broker.retain_message`` without its plugin events: we run no plugins)."""
        if data:
            self._retained_messages[topic] = RetainedApplicationMessage(source, topic, data, qos)
        else:
            self._retained_messages.pop(topic, None)

    async def _run_broadcast(self, running_tasks: "deque[asyncio.Task[Any]]") -> None:
        """amqtt's broadcast queue still carries what amqtt itself publishes (wills)."""
        broadcast = await self._broadcast_queue.get()
        self._deliver(
            broadcast["session"], broadcast["topic"], broadcast["data"], broadcast.get("qos")
        )

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        peer = peer_of(session)
        handler = self._get_handler(session)  # type: ignore[attr-defined]
        if peer is None or handler is None:
            return
        topic_filter = _canonical(peer, subscription[0])
        publishes = [
            handler.mqtt_publish(
                _outbound(peer, topic_filter, topic),
                retained.data,
                min(subscription[1], retained.qos or 0),
                retain=True,
            )
            for topic, retained in list(self._retained_messages.items())
            if topic_matches(topic, topic_filter) and peer.acl.can_receive(topic)
        ]
        if publishes:
            await asyncio.gather(*publishes)
