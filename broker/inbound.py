"""What a client's PUBLISH, SUBSCRIBE and UNSUBSCRIBE do: topic rules, then routing.

Topics are mapped to the broker's canonical form first (a device's ``v1/devices/me/...`` is
its ``devices/<name>/...``, ``auth.acl``), then checked against the client's ACL:

- PUBLISH: MQTT 3.1.1 has no way to refuse one (§3.3.5), so a forbidden PUBLISH is
  acknowledged and dropped, counted and logged once per client and topic. Topics under
  ``$SYS/`` are the broker's: no client publishes there. Any other ``$`` topic is the ACL's
  decision (§4.7.2 only keeps ``$`` topics out of wildcard matches).
- SUBSCRIBE: each filter gets its granted QoS or 0x80 (§3.9.3): longer than the store keeps,
  outside the ACL, past ``max_subscriptions`` or the bytes its filters are counted as
  (``broker.subscription_bytes``), or a ``$share/`` filter that is not a shared
  subscription. Retained messages matching a new subscription follow its SUBACK, those the
  client may receive (§3.3.1.3). A filter that breaks the syntax of §4.7.1 (or, from an
  MQTT 5 client, a ``$share/`` one that breaks §4.8.2) never gets here: it is a protocol
  violation, and the core closes the connection before any filter of its packet is acted on
  (``broker.mqtt.filters``; 3.1.1 §4.8, 5.0 §4.13.1).
- Shared subscriptions, ``$share/{group}/{filter}`` (MQTT 5.0 §4.8.2, for 3.1.1 clients too):
  the ACL judges the filter after the group, the session keeps the whole filter (a session may
  hold ``$share/g/a/#`` and ``a/#`` side by side), and no retained message is sent on subscribe
  (§4.8.2: a retained message would reach every member, not one).

MQTT 5 says more: a refused PUBLISH is acknowledged with 0x87 (5.0 §3.4.2.1), one whose
payload is not the UTF-8 its Payload Format Indicator says with 0x99 (§3.3.2.3.2; at QoS 0,
DISCONNECT 0x99), a refused filter gets the reason (0x8F for one correctly formed that the
store cannot keep, 0x97 over max_subscriptions or a byte bound, 0x80 outside the ACL), an
UNSUBSCRIBE's answer says whether there was a subscription (0x11) or whether the filter
cannot be one (0x8F, §3.11.3), and the subscription options (No Local, Retain As Published,
Retain Handling, Subscription Identifier, §3.8.3.1) are kept with the subscription. Message
expiry (§3.3.2.3.3) is turned into a deadline on the broker's clock when the message
arrives; an interval of 0 reaches the subscribers connected then, and is not retained
(``broker.mqtt.expiry``).

A QoS 2 PUBLISH is routed on receipt and its packet id kept until PUBREL (§4.3.3, method B);
for a persistent session the store keeps the id too, and the PUBREC waits for its commit.
"""

import asyncio
from typing import TYPE_CHECKING

from auth.acl import to_device_form
from auth.topics import (
    SHARE_PREFIX,
    SYSTEM_PREFIX,
    shared_problem,
    split_shared,
    topic_filter_problem,
)
from broker import store_backlog
from broker.acks import with_commit
from broker.connection_limit import host_of
from broker.mqtt.codes import SUBACK_FAILURE, Reason
from broker.mqtt.expiry import deadline
from broker.mqtt.packets import MQTT_5, Publish, Subscribe, SubscribeRequest, Unsubscribe, Will
from broker.mqtt.properties import NO_PROPERTIES, Properties, Property
from broker.mqtt.publish_properties import payload_problem
from broker.mqtt.session import Outgoing, Subscription
from broker.mqtt.shared import naming
from broker.peer import Peer
from broker.router import Message
from broker.will_routing import route_will
from nanoiot.text import printable
from storage.models import MQTT_TOPIC_FILTER_MAX

if TYPE_CHECKING:
    from broker.client import MqttClient
    from broker.core import Broker


def publish(client: "MqttClient", packet: Publish, now: float = 0.0) -> None:
    if packet.qos and store_backlog.full(client):
        store_backlog.refuse_publish(client)  # unacknowledged: it sends it again (§4.4)
        return
    broker = client.broker
    broker.metrics.messages_in += 1
    peer = client.peer
    assert peer is not None
    topic = peer.canonical(packet.topic)
    durable: bool | asyncio.Future[None] = False
    code = 0
    if topic.startswith(SYSTEM_PREFIX) or not peer.acl.can_publish(topic):
        broker.metrics.publishes_denied += 1
        client.log_denied("publish to", packet.topic)
        code = Reason.NOT_AUTHORIZED
    elif (problem := payload_problem(packet.properties, packet.payload)) is not None:
        if not _payload_refused(client, packet, problem):
            return
        code = Reason.PAYLOAD_FORMAT_INVALID
    else:
        properties = packet.properties
        interval = properties.message_expiry  # §3.3.2.3.3: a deadline on the broker's clock
        expires_at = now + interval if interval is not None else None
        session = client.session
        message = Message(
            topic, packet.payload, packet.qos, packet.retain, properties, expires_at, session
        )
        if packet.qos == 2 and session is not None and session.persistent:
            # §4.3.3: its packet id is kept until PUBREL (the router has the store keep it
            # before it routes), committed before PUBREC (with or before what routing
            # writes), so that the PUBLISH sent again after a restart, or to another member,
            # is not routed a second time (unless its routing was not confirmed:
            # ``broker.cluster.resend``).
            assert packet.packet_id is not None  # QoS 2 has one (§2.3.1)
            durable = broker.router.publish_qos2(message, session, packet.packet_id)
            durable = with_commit(durable, broker.store.pending_commit())
        else:
            durable = broker.router.publish(message)
        if packet.retain:
            refused = broker.retained.retain(
                topic, packet.payload, packet.qos, peer.device_id, properties, expires_at
            )
            if refused is not None:
                broker.metrics.count_limit(refused)
                client.log_denied(f"retain (over {refused})", packet.topic)
    if packet.qos and packet.packet_id is not None:
        client.acknowledge(packet.packet_id, packet.qos, durable=durable, code=code)


def _payload_refused(client: "MqttClient", packet: Publish, problem: str) -> bool:
    """A PUBLISH whose payload is not in its format, neither routed nor retained (5.0
    §3.3.2.3.2): True if a PUBACK/PUBREC 0x99 answers it; at QoS 0, which has no answer,
    the connection is closed with DISCONNECT 0x99 instead (the same section)."""
    client.broker.metrics.publishes_denied += 1
    client.broker.client_log.info(
        host_of(client.tls.remote[0]), "payloads not in their format",
        "%s: PUBLISH to '%s' refused: %s", client.label, printable(packet.topic), problem,
    )  # fmt: skip
    if packet.qos:
        return True
    client._end(will=True, reason=(Reason.PAYLOAD_FORMAT_INVALID, problem))
    return False


def publish_again(client: "MqttClient", packet_id: int, packet: Publish | None, now: float) -> None:
    """A QoS 2 PUBLISH sent again before its PUBREL (§4.3.3): not a new message, answered
    with PUBREC once what its first routing wrote and its packet id are committed (they may
    not be yet if the connection that brought it closed before its PUBREC went out). One
    whose routing another cluster member did not confirm is routed again first, and one
    whose routing still waits for their confirmations waits for them too
    (``broker.cluster.resend``)."""
    broker, peer, session = client.broker, client.peer, client.session
    durable: bool | asyncio.Future[None] = True
    unrouted = session.unrouted if session is not None else None
    if unrouted and packet_id in unrouted and packet is not None and peer is not None:
        assert session is not None
        topic = peer.canonical(packet.topic)
        if not topic.startswith(SYSTEM_PREFIX) and peer.acl.can_publish(topic):
            properties = packet.properties
            message = Message(
                topic, packet.payload, 2, packet.retain, properties,
                deadline(properties, now), session,
            )  # fmt: skip
            again = broker.router.publish_again(message, session, packet_id)
            if again is not None:
                durable = with_commit(again, broker.store.pending_commit())
    client.acknowledge(packet_id, 2, durable=durable)


def publish_will(
    broker: "Broker", peer: Peer, will: Will, now: float, origin: object | None = None
) -> None:
    """The will of a connection that ended without DISCONNECT (§3.1.2.5); admission already
    checked its topic against the ACL. Its Will Delay Interval is the broker's business, not
    the subscribers' (5.0 §3.1.3.2.2: the others go out as PUBLISH properties). ``origin``:
    the connection's session, which No Local keeps it from (``Message.origin``)."""
    topic = peer.canonical(will.topic)
    properties = will.properties
    if properties:
        kept = [item for item in properties if item[0] != Property.WILL_DELAY_INTERVAL]
        properties = Properties(kept) if kept else NO_PROPERTIES
    expires_at = deadline(properties, now) if properties else None
    message = Message(
        topic, will.payload, will.qos, will.retain, properties, expires_at, origin=origin
    )
    route_will(broker.router, message)
    if will.retain:
        refused = broker.retained.retain(
            topic, will.payload, will.qos, peer.device_id, properties, expires_at
        )
        if refused is not None:
            broker.metrics.count_limit(refused)


def subscribe(client: "MqttClient", packet: Subscribe) -> None:
    granted: list[tuple[str, Subscription]] = []
    made_now: list[str] = []  # the filters subscribed to
    codes: list[int] = []
    identifier = packet.properties.get(Property.SUBSCRIPTION_IDENTIFIER)
    v5 = client.core.level == MQTT_5
    for request in packet.requests:
        made = _subscribe_one(client, request, identifier if isinstance(identifier, int) else None)
        if isinstance(made, int):
            codes.append(made if v5 else SUBACK_FAILURE)
            continue
        topic_filter, sub, new = made
        made_now.append(topic_filter)
        codes.append(sub.qos)
        # 5.0 §3.8.3.1 Retain Handling: 0 always, 1 for a new subscription only, 2 never.
        if sub.retain_handling == 0 or (sub.retain_handling == 1 and new):
            granted.append((topic_filter, sub))
    if packet.refused:  # past max_filters_per_subscribe, in the packet's order (§3.9.3)
        _count_refused(client)
        codes.extend([Reason.QUOTA_EXCEEDED if v5 else SUBACK_FAILURE] * packet.refused)
    # §3.8.4: from the SUBACK on, messages published anywhere in a cluster reach them.
    within = client.broker.config.ack_timeout / 2  # never closes it (``broker.acks``)
    seen = client.broker.router.seen(made_now, within) if made_now else None
    client._acks.suback(packet.packet_id, codes, seen)
    for topic_filter, sub in granted:
        if not topic_filter.startswith(SHARE_PREFIX):
            _send_retained(client, topic_filter, sub)


def canonical_filter(peer: Peer, topic_filter: str) -> tuple[str, str, bool]:
    """A SUBSCRIBE or UNSUBSCRIBE filter in the broker's canonical form (as the session keeps
    it), the topic filter in it the ACL judges (for a shared subscription, the one after
    ``$share/{group}/``), and whether the client wrote that one in the ``me`` form."""
    shared = split_shared(topic_filter)
    if shared is None:
        canonical = peer.canonical(topic_filter)
        return canonical, canonical, canonical != topic_filter
    name, inner = shared
    canonical = peer.canonical(inner)
    return f"{SHARE_PREFIX}{name}/{canonical}", canonical, canonical != inner


def _subscribe_one(
    client: "MqttClient", request: SubscribeRequest, identifier: int | None
) -> tuple[str, Subscription, bool] | int:
    """(the canonical filter, the subscription, whether it is new), or the reason code of
    its refusal."""
    broker, peer, session = client.broker, client.peer, client.session
    assert peer is not None
    assert session is not None
    written = request.topic_filter
    key, canonical, me_form = canonical_filter(peer, written)
    # The core checked the filter as written (``broker.mqtt.filters``), and a plain one is
    # its own canonical form: only its length is left to check.
    checked = key == written
    problem = _filter_problem(written, key, canonical, checked=checked)
    if problem is not None or not peer.acl.allows_subscription(canonical):
        broker.metrics.subscriptions_denied += 1
        client.log_denied("subscribe to", written)
        # 5.0 §3.9.3: 0x8F for a filter correctly formed that cannot be one here (longer
        # than the store keeps); outside the ACL, 0x80 as in 3.1.1,
        # which is what the Paho interoperability suite expects of a refused subscription.
        return Reason.TOPIC_FILTER_INVALID if problem is not None else Reason.UNSPECIFIED_ERROR
    levels = broker.config.max_topic_levels
    if canonical.count("/") >= levels:  # a trie node per level (§4.7.1): ~230 bytes each
        broker.metrics.subscriptions_denied += 1
        broker.metrics.count_limit("max_topic_levels")
        client.log_denied(f"subscribe (max_topic_levels {levels}) to", written)
        return Reason.QUOTA_EXCEEDED
    refusal = _shared_refusal(client, key, written)
    if refusal is not None:
        return refusal
    if session.persistent and store_backlog.full(client):
        return store_backlog.refuse_subscribe(client, written)
    new = key not in session.subscriptions
    # What the session, and the device, hold (``broker.subscription_bytes``).
    over = broker.subscription_bytes.refusal(session, key) if new else None
    if over is not None:
        limit, value = over
        broker.metrics.subscriptions_denied += 1
        broker.metrics.count_limit(limit)
        client.log_denied(f"subscribe ({limit} {value}) to", written)
        return Reason.QUOTA_EXCEEDED
    sub = Subscription(
        request.qos, request.no_local, request.retain_as_published, request.retain_handling,
        identifier, me_form=me_form,
    )  # fmt: skip
    session.subscriptions[key] = sub  # §3.8.4: an identical filter is replaced
    broker.router.subscribe(session, key, sub)
    if session.persistent:
        broker.store.subscribe(session, key, sub)
    return key, sub, new


def _shared_refusal(client: "MqttClient", key: str, written: str) -> int | None:
    """The reason code refusing a shared subscription past its bounds, or None. Each message
    another node of a cluster routes here names every group it is for, and one NATS message
    must hold them (``broker.cluster.frames``): a share name is bounded, and so are the bytes
    naming the groups this process holds (a member joining a group adds none), and of those
    the groups one device's sessions are in, so that one device cannot take them all."""
    shared = split_shared(key)
    if shared is None:
        return None
    broker, session, (name, topic_filter) = client.broker, client.session, shared
    assert session is not None
    config, groups, naming_it = broker.config, broker.shared, naming(name, topic_filter)
    if _long_share_name(client, key):
        limit, value = "max_share_name_length", config.max_share_name_length
        refusal = int(Reason.TOPIC_FILTER_INVALID)  # 5.0 §3.9.3: well formed, not here
    elif (
        not groups.holds(session.device_id, name, topic_filter)
        and groups.named_by(session.device_id) + naming_it
        > config.max_shared_subscription_bytes_per_device
    ):
        limit = "max_shared_subscription_bytes_per_device"
        value, refusal = config.max_shared_subscription_bytes_per_device, int(Reason.QUOTA_EXCEEDED)
    elif (
        groups.group(name, topic_filter) is None
        and groups.named + naming_it > config.max_shared_subscription_bytes
    ):
        limit, value = "max_shared_subscription_bytes", config.max_shared_subscription_bytes
        refusal = int(Reason.QUOTA_EXCEEDED)
    else:
        return None
    broker.metrics.count_limit(limit)
    broker.metrics.subscriptions_denied += 1
    client.log_denied(f"subscribe ({limit} {value}) to", written)
    return refusal


def _long_share_name(client: "MqttClient", key: str) -> bool:
    """Whether ``key`` is a shared subscription whose share name is past its bound."""
    shared = split_shared(key)
    return shared is not None and len(shared[0]) > client.broker.config.max_share_name_length


def _filter_problem(written: str, key: str, canonical: str, *, checked: bool = False) -> str | None:
    """Why a filter, as the client wrote it and in the canonical forms ``canonical_filter``
    gives, cannot be a subscription: its syntax (§4.7.1, a shared one's 5.0 §4.8.2; not if
    ``checked`` already), or a length the store does not keep."""
    problem = shared_problem(written) if written.startswith(SHARE_PREFIX) else None
    if problem is None and not checked:
        problem = topic_filter_problem(canonical)
    if problem is None and len(key) > MQTT_TOPIC_FILTER_MAX:
        problem = f"longer than {MQTT_TOPIC_FILTER_MAX} characters"
    return problem


def _send_retained(client: "MqttClient", topic_filter: str, sub: Subscription) -> None:
    broker, peer, session = client.broker, client.peer, client.session
    if peer is None or session is None:
        return
    now = client.core.now
    for retained in broker.retained.matching(topic_filter):
        if not peer.acl.can_receive(retained.topic):
            continue
        if retained.expires_at is not None and retained.expires_at <= now:
            continue  # 5.0 §3.3.2.3.3
        topic = retained.topic
        if sub.me_form:
            topic = to_device_form(topic, peer.identity.device_name)
        properties = retained.properties
        if sub.identifier is not None:  # appended to the bytes: the values are not read
            properties = properties.with_subscription_identifiers((sub.identifier,))
        out = Outgoing(
            topic, retained.payload, min(sub.qos, retained.qos), True, properties,
            retained.expires_at,
        )  # fmt: skip
        if out.qos and session.persistent:
            broker.store.message_queued(session, out)
        client.deliver(out)


def unsubscribe(client: "MqttClient", packet: Unsubscribe) -> None:
    broker, peer, session = client.broker, client.peer, client.session
    assert peer is not None
    assert session is not None
    codes: list[int] = []
    for topic_filter in packet.filters:
        key, canonical, _ = canonical_filter(peer, topic_filter)
        if session.subscriptions.pop(key, None) is not None:
            broker.router.unsubscribe(session, key)
            if session.persistent:
                broker.store.unsubscribe(session, key)
            codes.append(Reason.SUCCESS)
        elif _long_share_name(client, key) or _filter_problem(topic_filter, key, canonical):
            # 5.0 §3.11.3: 0x8F, as SUBACK answers the same filter (§3.9.3). Filters that
            # break §4.7.1 (5.0: or §4.8.2) closed the connection already.
            codes.append(Reason.TOPIC_FILTER_INVALID)
        else:
            codes.append(Reason.NO_SUBSCRIPTION_EXISTED)  # 5.0 §3.11.3
    if packet.refused:  # past max_filters_per_subscribe: valid, not accepted (5.0 §3.11.3)
        _count_refused(client)
        codes.extend([Reason.IMPLEMENTATION_SPECIFIC_ERROR] * packet.refused)
    client._acks.unsuback(packet.packet_id, codes)


def _count_refused(client: "MqttClient") -> None:
    """Filters past ``max_filters_per_subscribe``: counted once a packet, logged once a
    client (``log_denied``)."""
    broker = client.broker
    broker.metrics.count_limit("max_filters_per_subscribe")
    limit = broker.limits.max_filters_per_subscribe
    client.log_denied(f"send more than {limit} topic filters in one packet:", "the rest refused")
