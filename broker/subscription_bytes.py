"""What the topic filters a session, and all of one device's sessions, make a broker process
hold, and the bounds on it: ``max_subscriptions``, ``max_subscription_bytes`` (a session)
and ``max_subscription_bytes_per_device`` (a device's or application's sessions here).

Without the byte bounds one certificate could pin hundreds of megabytes: a hundred sessions
(``max_sessions_per_device``) of a hundred filters each (``max_subscriptions``), each up to
64 KiB, or 128 levels of about 280 bytes each (3.1.1 §4.7.1: every level a trie node).

A filter is counted as what it was measured to cost (CPython 3.11, tracemalloc): its UTF-8
bytes twice (the session's key, and the subscription trie's level names), ``LEVEL_COST``
for each level (its node, the node's children table and its name's header: 281 to 292
bytes measured), and ``ENTRY_COST`` (the session's entry, the subscription's options and
the subscribers table at its node: 330 to 420 bytes measured). Levels shared with other
filters (``devices/<name>/rpc/...``) are counted for each: what is counted is what the
filter may cost, never less than it does.

The router counts every subscription as it is added to or removed from its tables (``added``,
``removed``): a client's SUBSCRIBE and UNSUBSCRIBE, a session's end (its expiry, a clean
take-over, the device's deletion), a session restored from the store, moved here from another
cluster member or forgotten here for one. A take-over of a session keeps its subscriptions
and counts nothing: they are the session's, not the connection's. A session read back from
the store is taken in whole, even past these bounds (MQTT 3.1.1 §4.1: its subscriptions are
kept for as long as it lives, and its client was told they were made): a lower setting
since they were made, or another member's sessions, which counted against that member's
bounds. It is counted, its device refused any new filter while it stays past a bound, and
that is logged (``restored``). In a cluster the bounds are per broker process (node or
worker), as the memory they bound is.
"""

import logging
from collections.abc import Iterable

from broker.sessions import BrokerSession

__all__ = ["ENTRY_COST", "LEVEL_COST", "SubscriptionBytes", "cost"]

log = logging.getLogger("broker.registry")

LEVEL_COST = 288
ENTRY_COST = 384


def cost(topic_filter: str) -> int:
    """The bytes a topic filter is counted as (see above)."""
    levels = topic_filter.count("/") + 1
    return 2 * len(topic_filter.encode()) + LEVEL_COST * levels + ENTRY_COST


class SubscriptionBytes:
    """The bytes counted for the filters each session and each device hold here; a bound
    of None is no bound."""

    def __init__(self) -> None:
        self._by_device: dict[str, int] = {}
        self.max_subscriptions: int | None = None
        self.max_bytes: int | None = None  # max_subscription_bytes: one session's
        self.max_bytes_per_device: int | None = None

    def added(self, session: BrokerSession, topic_filter: str) -> None:
        counted = cost(topic_filter)
        session.subscription_bytes += counted
        device = session.key[0]
        self._by_device[device] = self._by_device.get(device, 0) + counted

    def removed(self, session: BrokerSession, topic_filter: str) -> None:
        counted = cost(topic_filter)
        session.subscription_bytes -= counted
        device = session.key[0]
        left = self._by_device[device] - counted
        if left:
            self._by_device[device] = left
        else:
            del self._by_device[device]

    def of_device(self, device_id: str) -> int:
        return self._by_device.get(device_id, 0)

    def refusal(self, session: BrokerSession, topic_filter: str) -> tuple[str, int] | None:
        """The limit (and its value) that a new filter of ``session`` would pass, or None.
        MQTT 3.1.1 §3.9.3 refuses it with 0x80, MQTT 5 with 0x97 (Quota exceeded)."""
        most = self.max_subscriptions
        if most is not None and len(session.subscriptions) >= most:
            return "max_subscriptions", most
        counted = cost(topic_filter)
        most = self.max_bytes
        if most is not None and session.subscription_bytes + counted > most:
            return "max_subscription_bytes", most
        most = self.max_bytes_per_device
        if most is not None and self.of_device(session.key[0]) + counted > most:
            return "max_subscription_bytes_per_device", most
        return None

    def restored(self, sessions: Iterable[BrokerSession]) -> None:
        """``sessions`` were taken in from the store, their filters counted: one line for
        those (and their devices) found past a bound, which keep all they had."""
        most, per_device = self.max_bytes, self.max_bytes_per_device
        over = [s for s in sessions if most is not None and s.subscription_bytes > most]
        devices = {s.key[0] for s in sessions} if per_device is not None else set()
        past = sorted(d for d in devices if self.of_device(d) > (per_device or 0))
        if over:
            log.warning("%d restored sessions hold filters counted past max_subscription_bytes "
                        "%s (%s: %d bytes): kept, and their new filters are refused",
                        len(over), most, over[0].store_key, over[0].subscription_bytes)  # fmt: skip
        if past:
            log.warning("restored sessions of %d devices hold filters counted past "
                        "max_subscription_bytes_per_device %s (%s: %d bytes): kept, and their "
                        "new filters are refused until enough are left", len(past), per_device,
                        past[0], self.of_device(past[0]))  # fmt: skip
