"""Which member of a shared subscription gets a message, and what its copy keeps.

MQTT 5.0 §4.8.2 (for 3.1.1 clients too): one copy per group, to one member. The router
(``broker.router``) gives the message to the member whose turn it is if it ``takes_now``,
else ranks the members with ``member_rank`` and lets ``SharedGroup.pick``
(``broker.mqtt.shared``) choose among the best; the copy it sends is a ``SharedOutgoing``,
which remembers its group and message so that, when the member's session ends before the
copy is acknowledged, another member can be given it. Apart from the router so that the
router keeps to the walk and the copies; nothing here does I/O or writes the store.
"""

from typing import TYPE_CHECKING

from broker.mqtt.session import Outgoing, Subscription
from broker.mqtt.shared import Rank, SharedGroup
from broker.sessions import BrokerSession

if TYPE_CHECKING:
    from broker.router import Message

__all__ = ["AWAY", "BUSY", "READY", "SharedOutgoing", "member_rank", "takes_now"]


class SharedOutgoing(Outgoing):
    """A member's copy of a message routed through a shared subscription: what it takes to
    give the message to another member if this one's session ends first (5.0 §4.8.2)."""

    __slots__ = ("group", "message")

    group: SharedGroup[BrokerSession]
    message: "Message"


# A shared subscription member's rank (``SharedGroup.pick``): lower is chosen first.
READY, BUSY, AWAY = 0, 1, 2


def takes_now(session: BrokerSession, sub: Subscription, topic: str, published_qos: int) -> bool:
    """Whether a shared subscription's member can take a message on ``topic`` at once (its
    rank would be ``READY``): its client is connected and can send it now, and its ACL does
    not deny it the topic. What the router asks of the member whose turn it is, first."""
    client = session.client
    if client is None:
        return False
    denied = session.receive_denied
    if denied is not None and denied.fullmatch(topic) is not None:
        return False
    return client.can_send_now(published_qos if published_qos < sub.qos else sub.qos)


def member_rank(message: "Message") -> Rank[BrokerSession]:
    """How well a shared subscription's member can take ``message`` now: one whose client
    can send it at once, before one whose in-flight window is full (it would wait in its
    queue), before one whose client is away; never one its ACL denies the topic."""
    topic, published_qos = message.topic, message.qos

    def rank(session: BrokerSession, sub: Subscription) -> int | None:
        if takes_now(session, sub, topic, published_qos):
            return READY
        denied = session.receive_denied
        if denied is not None and denied.fullmatch(topic) is not None:
            return None
        return AWAY if session.client is None else BUSY

    return rank
