"""What a persistent session keeps while its client is away (MQTT 3.1.1 §3.1.2.4).

The router (``broker.router``) hands a QoS 1 or 2 copy for a session without a client
here; ``AwayQueue.keep`` queues it within the session's limits (``max_queued_messages``,
``max_queued_bytes``: expired messages go first, then the oldest, ``broker.mqtt.session``),
writes the store (deleting what went), and counts and logs what the limits dropped (those
that expired are counted only), saying which: queued QoS 0 messages, the oldest queued, or
the new message itself. Apart from the router because it is the one place where
routing drops messages, and that is logged and counted, not silent.
"""

import asyncio
import logging

from broker.expiry_sweep import ExpirySweep
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.mqtt.session import Outgoing
from broker.repeats import LogLimiter
from broker.session_store import SessionStore
from broker.sessions import BrokerSession

__all__ = ["AwayQueue"]

# Under the router's name: routing is what drops them, and operators grep for it.
log = logging.getLogger("broker.router")

_DROPS_LOGGED_PER = 60.0  # seconds: a session's queue drops are logged once, then counted


class AwayQueue:
    def __init__(self, store: SessionStore, limits: Limits, metrics: BrokerMetrics) -> None:
        self.store = store
        self.limits = limits
        self.metrics = metrics
        self._drops = LogLimiter(log, interval=_DROPS_LOGGED_PER)
        # Takes the messages out of away sessions' queues as they expire (5.0 §3.3.2.3.3).
        self.sweep = ExpirySweep(store, metrics)

    def keep(self, session: BrokerSession, out: Outgoing) -> bool:
        """Keep a message for a persistent session whose client is away (§3.1.2.4), within
        its queue limits; True if the store was written."""
        # The broker's clock, as the messages' deadlines (5.0 §3.3.2.3.3) are on it.
        dropped = session.enqueue(out, self.limits, asyncio.get_running_loop().time())
        kept = True
        live: list[Outgoing] = []  # dropped by a limit, not for their expiry: logged
        for message, limit in dropped:
            self.metrics.count_limit(limit)
            if message is out:
                kept = False
            else:
                self.store.message_done(message)
            if limit != "message_expiry":
                live.append(message)
        if kept:
            self.store.message_queued(session, out)
            self.sweep.watch(session)
        if live:
            self._log_drops(session, len(live), dropped[-1][1], _which(live, out))
        return kept or bool(dropped)

    def _log_drops(self, session: BrokerSession, count: int, limit: str, which: str) -> None:
        """One line per session and limit a minute, then a count of the rest (a queue that
        overflows does so at the publishers' rate: a line per message would flood the log).
        ``which``: what went (``_which``)."""
        key = session.store_key
        if limit.endswith("_per_device"):  # one line for all the device's sessions
            key = session.device_id
            self._drops.warning(key, f"queue drops ({limit})",
                                "device %s: %d messages dropped, %s (%s, of session %s); "
                                "further drops are counted", key, count, which, limit,
                                session.store_key)  # fmt: skip
            return
        self._drops.warning(key, f"queue drops ({limit})",
                            "session %s: %d messages dropped, %s (%s); further drops are "
                            "counted", key, count, which, limit)  # fmt: skip


def _which(dropped: list[Outgoing], new: Outgoing) -> str:
    """What a limit dropped, in the order ``Session.enqueue`` takes them: queued QoS 0
    messages (§4.3.1: they may be lost anyway), then the oldest queued, then the new
    message itself (a queue read back past a bound keeps its messages; a device's other
    sessions hold its bound; a QoS 0 message meets a queue with none)."""
    queued = [message for message in dropped if message is not new]
    parts = []
    if any(message.qos == 0 for message in queued):
        parts.append("queued QoS 0 ones")
    if any(message.qos != 0 for message in queued):
        parts.append("the oldest queued")
    if len(queued) < len(dropped):
        parts.append("the new message itself")
    return " then ".join(parts)
