"""The Message Expiry Interval of an application message (MQTT 5.0 §3.3.2.3.3), pure.

The interval is the message's lifetime in seconds, from when the broker received it: a
deadline on the broker's clock. A copy whose onward delivery to a subscriber has not started
by then is deleted [MQTT-3.3.2-5]; one sent on carries what is left [MQTT-3.3.2-6].

A lifetime of 0 means "for whoever is subscribed and connected now". The deadline is the
moment the message arrived, which every later clock reading has passed: the store commit a
QoS 1/2 delivery waits for, or a cluster hop, would expire every copy before it went. So the
onward delivery to each matching session whose client is connected when the message is
published starts as part of the publish (``publishing``), and the copy goes with a Message
Expiry Interval of 0. Whatever would have to wait for later (a session whose client is away
or leaving, a full in-flight window, messages queued before it) or to be kept (as the
topic's retained message) has expired. Mosquitto takes 0 for "never expires"; EMQX, like this
broker, delivers it to the connected subscribers only.

Part of the protocol core: no I/O.
"""

from broker.mqtt.properties import Properties
from broker.mqtt.session import Outgoing


def deadline(properties: Properties, now: float) -> float | None:
    """When a message received at ``now`` with ``properties`` expires (None: never)."""
    interval = properties.message_expiry
    return now + interval if interval is not None else None


def for_connected_only(properties: Properties) -> bool:
    """A Message Expiry Interval of 0: the message reaches only the subscribers connected
    when it is published, and is never queued nor retained. Read from the publisher's
    interval as received, which every copy keeps (``Properties.with_message_expiry`` splices
    the time left into the bytes a subscriber gets only)."""
    return properties.message_expiry == 0


def expired(message: Outgoing, now: float, *, publishing: bool = False) -> bool:
    """Whether ``message`` may no longer start its onward delivery at ``now``;
    ``publishing``: it would start as part of its publish (``for_connected_only``)."""
    expires = message.expires_at
    if expires is None or expires > now:
        return False
    return not (publishing and message.properties.message_expiry == 0)
