"""A connected client's keep-alive timer (MQTT 3.1.1 §3.1.2.10): the connection ends when
nothing came from the client within one and a half times the keep-alive it asked for.

One timer per connection, set when the client is admitted (``broker.connecting``) and
re-armed for the remaining time each time it fires: no per-packet work, the core records when
the last packet came (``Connection.last_received``). A client the broker does not read
(``backpressure.reading``: backpressure, waiting for its turn, the restore of the previous
run's sessions, its SUBACK waiting for a cluster's other members) is not silent, so the
count starts again once it is read (``backpressure.resume``). This is the one place that
rule is kept: the core's ``keep_alive_expired`` is the deadline alone.

Works on ``broker.client.MqttClient``'s state, as ``broker.connecting`` does.
"""

import logging
from typing import TYPE_CHECKING

from broker import backpressure
from broker.mqtt.codes import Reason
from broker.mqtt.connection import KEEP_ALIVE_GRACE

if TYPE_CHECKING:
    from broker.client import MqttClient

log = logging.getLogger("broker.client")  # logged as the connection it belongs to


def arm(client: "MqttClient") -> None:
    """Start ``client``'s keep-alive timer, if it asked for one (0: none, §3.1.2.10)."""
    keep_alive = client.core.keep_alive
    if keep_alive:
        client._timer = client._loop.call_later(keep_alive * KEEP_ALIVE_GRACE, _due, client)


def _due(client: "MqttClient") -> None:
    """The timer fired: end the connection if it was silent, or wait the time left."""
    client._timer = None
    if client.ended:
        return
    if client.broker.registry.fenced_now() and client.ended:
        return  # a stall fenced this member off (``broker.cluster.fence``): no will here
    loop = client._loop
    now = loop.time()
    core = client.core
    if not backpressure.reading(client):
        core.last_received = now  # §3.1.2.10: not read, not silent; counted from reading
        log.debug("%s is not read: its keep-alive counts from when it is", client.label)
    elif core.keep_alive_expired(now):
        _log_expiry(client)
        reason = f"nothing received for {core.keep_alive * KEEP_ALIVE_GRACE:g} s"
        client._end(will=True, reason=(Reason.KEEP_ALIVE_TIMEOUT, reason))
        return
    grace = core.keep_alive * KEEP_ALIVE_GRACE
    # Not read meanwhile (``broker.backpressure``): reading again restarts the count.
    due = core.last_received + grace - now
    client._timer = loop.call_later(max(due, 0.0) + 0.001, _due, client)


def _log_expiry(client: "MqttClient") -> None:
    """A device that connects and goes silent again and again would write this line each
    time: a few a device, then a count (``Broker.device_lines``)."""
    message = "keep-alive expired for %s: disconnecting (MQTT 3.1.1 §3.1.2.10)"
    peer = client.peer
    if peer is None:
        log.info(message, client.label)
        return
    client.broker.device_lines(log).info(peer.owner, "keep-alive expiries", message, client.label)
