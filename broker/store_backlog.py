"""``max_unsaved_session_changes``: how many session changes may wait for the store.

While the database cannot be written (``broker.journal``) every change to a persistent session
waits in memory until it can. What each change holds is bounded by what it changes (a
session's queue, its window, its subscriptions), but not how many there are: a client that
subscribes to the same filters again and again adds one per filter at the rate it sends, and
during an outage one device grew the broker by 200 MB in 25 s that way (100 filters of 1 KB a
packet, each SUBACK sent at once). Past the limit, what would add changes is refused until the
store catches up, each refusal in the protocol's words:

- a persistent session's SUBSCRIBE filters: SUBACK 0x80 (MQTT 5 0x97 quota exceeded, §3.9.3);
- a QoS 1/2 PUBLISH: its publisher is closed unacknowledged (MQTT 5 DISCONNECT 0x89 server
  busy, as when its PUBACK waits ``ack_timeout``), and sends the message again (§4.4);
- a CONNECT that would save a session or route a QoS 1/2 will: CONNACK 3 (MQTT 5 0x89).

What else changes sessions is never refused: a session's end, a subscriber's acknowledgements,
an UNSUBSCRIBE (at most one per subscription let in). Each refusal is a limit hit; the log has
one line per host and kind a minute (``Broker.client_log``).
"""

from typing import TYPE_CHECKING, Final

from auth.connack import ConnackCode
from broker.connection_limit import host_of
from broker.mqtt.codes import Reason
from broker.mqtt.packets import Connect
from nanoiot.text import printable

if TYPE_CHECKING:
    from broker.client import MqttClient

__all__ = [
    "LIMIT", "full", "refuse_connect", "refuse_publish", "refuse_subscribe", "refuses_connect",
]  # fmt: skip

LIMIT: Final = "max_unsaved_session_changes"


def full(client: "MqttClient") -> bool:
    """Whether the session changes waiting for the store reached the limit."""
    limit = client.broker.config.max_unsaved_session_changes
    return limit is not None and client.broker.store.unsaved >= limit


def _why(client: "MqttClient") -> str:
    limit = client.broker.config.max_unsaved_session_changes
    return f"{limit} session changes wait for the store ({LIMIT})"


def refuse_subscribe(client: "MqttClient", topic_filter: str) -> int:
    """Count and log a persistent session's filter refused; its MQTT 5 SUBACK reason code."""
    broker = client.broker
    broker.metrics.subscriptions_denied += 1
    broker.metrics.count_limit(LIMIT)
    broker.client_log.warning(
        host_of(client.tls.remote[0]), "subscriptions refused for the store's backlog",
        "%s may not subscribe to '%s' now: %s", client.label, printable(topic_filter), _why(client),
    )  # fmt: skip
    return Reason.QUOTA_EXCEEDED


def refuse_publish(client: "MqttClient") -> None:
    """Close a QoS 1/2 publisher without acknowledging its message (it sends it again)."""
    broker = client.broker
    broker.metrics.count_limit(LIMIT)
    why = _why(client)
    broker.client_log.warning(
        host_of(client.tls.remote[0]), "publishers closed for the store's backlog",
        "closing %s unacknowledged: %s", client.label, why,
    )  # fmt: skip
    client._end(will=True, reason=(Reason.SERVER_BUSY, why))


def refuses_connect(client: "MqttClient", connect: Connect, expiry: int | None) -> bool:
    """Whether ``connect`` is refused: it would write the store (a persistent session, whose
    state is saved at each connect: 3.1.1 §3.1.2.4, 5.0 §3.1.2.11.2) or its will could (QoS
    1/2, queued for persistent sessions) while the backlog is full."""
    persistent = not connect.clean_start if client.core.v5 is None else bool(expiry)
    will = connect.will
    return (persistent or (will is not None and will.qos > 0)) and full(client)


def refuse_connect(client: "MqttClient") -> None:
    """CONNACK 3 (MQTT 5 0x89 server busy): the client connects again later."""
    broker = client.broker
    broker.metrics.count_limit(LIMIT)
    why = _why(client)
    broker.client_log.warning(
        host_of(client.tls.remote[0]), "connects refused for the store's backlog",
        "refused %s: %s", client.label, why,
    )  # fmt: skip
    client.core.refuse(ConnackCode.SERVER_UNAVAILABLE, Reason.SERVER_BUSY, why)
    client._end(will=False)
