"""Retained messages (MQTT 3.1.1 §3.3.1.3), bounded in all and per device.

The last retained message of each topic is kept and sent to every new subscription that
matches it; a retained message with an empty payload deletes the topic's, and so does one
whose MQTT 5 Message Expiry Interval is 0: it has expired before any later subscription can
be sent it (5.0 §3.3.2.3.3, ``broker.mqtt.expiry``), so it leaves the topic with no retained
message, as if kept and expired at once (current subscribers get it). Each is owned by
the device that published it, so that one device cannot fill the broker (per-device limits
on count and bytes, besides the totals) and a deleted device's messages go with it. A
message over a limit is still delivered to current subscribers, only not kept; the broker
counts it. The broker's own ``$SYS`` messages have no owner and no per-device limit.

In a cluster the node a message is published on checks the limits, counting what the
other nodes replicated to it; the others keep it as it is (``replicate=False``), so every
node keeps the same messages. Nodes accepting one device's messages within the same
millisecond may together pass its limit, by at most one limit per node: the device's later
messages are then refused on every node until it deletes enough of them.
"""

from collections.abc import Callable
from dataclasses import dataclass

from broker.mqtt.expiry import for_connected_only
from broker.mqtt.properties import NO_PROPERTIES, Properties
from broker.mqtt.trie import TopicTree
from broker.mqtt.wire import utf8_length


@dataclass(frozen=True, slots=True)
class RetainLimits:
    max_messages: int = 100_000
    max_bytes: int = 64 * 1024 * 1024
    max_messages_per_device: int = 100
    max_bytes_per_device: int = 1024 * 1024
    # A topic's levels are kept as trie nodes (~230 bytes each, ``broker.mqtt.trie``), not in
    # its bytes: a 64 KiB topic of 32,768 levels would hold 7.6 MB counted as 64 KiB.
    max_topic_levels: int = 128


@dataclass(frozen=True, slots=True)
class Retained:
    topic: str  # canonical
    payload: bytes
    qos: int
    owner: str | None  # device id; None for the broker's own
    # MQTT 5: the message's properties, and when it expires (5.0 §3.3.2.3.3: an expired
    # retained message is not sent to new subscriptions).
    properties: Properties = NO_PROPERTIES
    expires_at: float | None = None

    @property
    def size(self) -> int:
        # MQTT 5 properties too: user properties may be most of a message (§3.3.2.3.7). The
        # topic's UTF-8 bytes, not its characters: a topic of 4-byte characters (§1.5.3) was
        # counted a quarter of its size, and a device kept four times its bytes.
        properties = self.properties
        topic, payload = utf8_length(self.topic), len(self.payload)
        return topic + payload + (len(properties.wire) if properties else 0)


class RetainedStore:
    def __init__(self, limits: RetainLimits) -> None:
        self.limits = limits
        self._tree: TopicTree[Retained] = TopicTree()
        self._bytes = 0
        self._owned: dict[str, dict[str, int]] = {}  # device id -> topic -> size
        # In a cluster: told of each retained message kept or deleted here (None: deleted),
        # so that every node keeps the same ones (``broker.cluster.retained``).
        self.replica: Callable[[str, Retained | None], None] | None = None

    def __len__(self) -> int:
        return len(self._tree)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def owned_by(self, device_id: str) -> int:
        """How many retained messages ``device_id`` published and the broker keeps."""
        return len(self._owned.get(device_id, ()))

    def matching(self, topic_filter: str) -> list[Retained]:
        if not self._tree:  # each filter of a SUBSCRIBE asks: no walk when none is kept
            return []
        return self._tree.match(topic_filter)

    def retain(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        owner: str | None,
        properties: Properties = NO_PROPERTIES,
        expires_at: float | None = None,
        *,
        replicate: bool = True,
    ) -> str | None:
        """Keep (or, for an empty payload or a lifetime of 0, delete) the topic's retained
        message; the name of the limit that refused it, or None. ``replicate``: tell
        ``replica`` (False for a change that came from another node: kept whatever the
        limits, as the node that wrote it checked them against what it knew then; a node
        refusing it would keep other retained messages than its peers for good)."""
        old = self._tree.get(topic)
        if not payload or for_connected_only(properties):
            if old is not None:
                self._remove(old)
            if replicate and self.replica is not None:
                self.replica(topic, None)
            return None
        new = Retained(topic, payload, qos, owner, properties, expires_at)
        refused = self._refusal(new, old) if replicate else None
        if refused is not None:
            return refused
        if old is not None:
            self._remove(old)
        self._tree.set(topic, new)
        self._bytes += new.size
        if owner is not None:
            self._owned.setdefault(owner, {})[topic] = new.size
        if replicate and self.replica is not None and owner is not None:
            self.replica(topic, new)  # the broker's own ($SYS, owner None) stay on this node
        return None

    def _refusal(self, new: Retained, old: Retained | None) -> str | None:
        limits = self.limits
        freed = old.size if old is not None else 0
        if old is None and len(self._tree) >= limits.max_messages:
            return "max_retained_messages"
        if new.topic.count("/") >= limits.max_topic_levels:
            return "max_topic_levels"
        if self._bytes - freed + new.size > limits.max_bytes:
            return "max_retained_bytes"
        if new.owner is None:
            return None
        owned = self._owned.get(new.owner, {})
        same_owner = old is not None and old.owner == new.owner
        count = len(owned) + (0 if same_owner else 1)
        if count > limits.max_messages_per_device:
            return "max_retained_messages_per_device"
        size = sum(owned.values()) - (freed if same_owner else 0) + new.size
        if size > limits.max_bytes_per_device:
            return "max_retained_bytes_per_device"
        return None

    def _remove(self, old: Retained) -> None:
        self._tree.pop(old.topic)
        self._bytes -= old.size
        if old.owner is not None:
            owned = self._owned.get(old.owner)
            if owned is not None:
                owned.pop(old.topic, None)
                if not owned:
                    del self._owned[old.owner]

    def forget_device(self, device_id: str) -> int:
        """Delete every retained message of a device (it was deleted); how many."""
        topics = list(self._owned.get(device_id, {}))
        for topic in topics:
            found = self._tree.get(topic)
            if found is not None:
                self._remove(found)
                if self.replica is not None:
                    self.replica(topic, None)
        return len(topics)
