"""One subscriber's copy of a routed message (``broker.router``)."""

from typing import TYPE_CHECKING, TypeVar

from auth.acl import to_device_form
from broker.mqtt.properties import NO_PROPERTIES
from broker.mqtt.session import Outgoing, Subscription
from broker.sessions import BrokerSession

if TYPE_CHECKING:
    from broker.router import Message

OutgoingT = TypeVar("OutgoingT", bound=Outgoing)


def copy_for(
    message: "Message", session: BrokerSession, sub: Subscription, qos: int, kind: type[OutgoingT]
) -> OutgoingT:
    """One subscriber's copy: its topic in the form it subscribed with, the publisher's MQTT 5
    properties with the subscription's identifier added (5.0 §3.3.4), the retain flag kept
    only for Retain As Published (§3.8.3.1)."""
    topic = message.topic
    out = kind(
        to_device_form(topic, session.device_name) if sub.me_form else topic, message.payload, qos
    )
    properties = message.properties
    ids = sub.identifiers if sub.identifier is not None or sub.more_identifiers else ()
    if properties is not NO_PROPERTIES or ids or message.expires_at is not None:
        if ids:
            properties = properties.with_subscription_identifiers(ids)
        out.properties = properties
        out.expires_at = message.expires_at
    if sub.retain_as_published:
        out.retain = message.retain
    if qos == 2:  # a copy routed again does not reach a session that holds this one
        out.message_id = message.id
    return out
