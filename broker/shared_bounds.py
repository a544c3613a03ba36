"""Shared subscriptions taken in with restored sessions, against this process's bounds.

A new group is refused past ``max_shared_subscription_bytes`` or a device's
``max_shared_subscription_bytes_per_device`` (``broker.inbound``). A session read back from
the store (at start, taken over from another cluster member, or adopted from a dead one) is
taken in whole: MQTT 3.1.1 §4.1 keeps its subscriptions for as long as the session exists,
and dropping some would lose messages its client was told it would get. So restored groups
may take this process past its bounds: a lower setting since the groups were made, or
sessions of another member, which had bounds of its own. They are counted like the others,
so every new group is refused while the process (or the device) stays past its bound, and
joining a group there is still costs nothing; and this is logged, once each time the process
is found past it, since in a cluster the names of the groups a message is routed to must fit
one NATS message (``broker.cluster.frames``: with the bound checked against NATS's
``max_payload`` at start, what is past it eats the room kept for the message itself).
"""

import logging
from collections.abc import Hashable

from auth.topics import split_shared
from broker.mqtt.shared import SharedSubscriptions
from broker.sessions import BrokerSession

__all__ = ["SharedBounds"]

log = logging.getLogger("broker.registry")


class SharedBounds:
    def __init__(self, shared: SharedSubscriptions[BrokerSession], most: int, per_device: int):
        self.shared = shared
        self.most = most  # max_shared_subscription_bytes
        self.per_device = per_device  # max_shared_subscription_bytes_per_device
        self._past = False  # the process was past its bound when last looked at

    def restored(self, sessions: list[BrokerSession]) -> None:
        """``sessions`` were taken in, their groups with them: logged if that took the
        process, or a device, past its bound."""
        named = self.shared.named
        past, self._past = self._past, named > self.most
        if self._past and not past:
            log.warning("restored sessions' shared subscriptions take %d bytes of names, past "
                        "max_shared_subscription_bytes %d: kept, and new groups are refused "
                        "until enough are left", named, self.most)  # fmt: skip
        devices: set[Hashable] = {
            s.device_id for s in sessions if any(map(split_shared, s.subscriptions))
        }
        for device in sorted(devices, key=str):
            if (by_device := self.shared.named_by(device)) > self.per_device:
                log.warning("restored sessions of device %s are in shared subscriptions "
                            "taking %d bytes of names, past "
                            "max_shared_subscription_bytes_per_device %d: kept, and its new "
                            "groups are refused until enough are left", device, by_device,
                            self.per_device)  # fmt: skip
