"""What the queues of all one device's sessions make a broker process hold, and the bounds on
it: ``max_queued_messages_per_device`` and ``max_queued_bytes_per_device``.

Each session's queue is bounded (``max_queued_messages``, ``max_queued_bytes``), but a
device may hold ``max_sessions_per_device`` sessions: a hundred persistent sessions, each
subscribed to its own topic and sent 10 MiB while its client is away, held about 1 GiB for
one certificate, in memory and in the store. Every session of a device shares one
``QueueTally`` (``broker.mqtt.session``), keyed by the device id as the subscription bytes
are (``broker.subscription_bytes``): the device's or application's sessions in this process.
Past a bound the policy is the per-session one (``Session.enqueue``): the expired messages of
the device's queues first (5.0 §3.3.2.3.3: never delivered, ``broker.mqtt.queues``), then
QoS 0, then the oldest of the queue that grows, counted as the limit's hit and logged once
a minute per device (``broker.away_queue``).

A queue's message counts until it leaves the queue: sent to its client (then it is in
flight, bounded by ``max_inflight_messages``), dropped (expired ones at a bound, or as their
turn to be sent comes), or its session ended (expiry, a clean take-over, the device's
deletion) or moved to another cluster member. A session read back from the store is taken
in whole but for its expired messages (deleted, ``Registry.restore``), even past these
bounds (3.1.1 §4.1: kept for as long as the session lives, and those QoS 1/2 messages were
acknowledged to their publishers): counted, logged, and its device's new messages dropped
themselves (not its old ones for them) until enough are sent. In a
cluster the bounds are per broker process (node or worker), as the memory they bound is.
"""

import logging
import weakref
from collections.abc import Iterable

from broker.mqtt.limits import Limits
from broker.mqtt.session import QueueTally
from broker.sessions import BrokerSession

__all__ = ["DeviceQueues"]

log = logging.getLogger("broker.registry")


class DeviceQueues:
    """The tally of each device with a session here; a tally lives as long as one of its
    sessions does (held by them only), so the tallies are as many as the devices here."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._tallies = weakref.WeakValueDictionary[str, QueueTally]()

    def join(self, session: BrokerSession) -> None:
        """Count ``session``'s queue with its device's other sessions' from now on."""
        device = session.device_id
        tally = self._tallies.get(device)
        if tally is None:
            tally = self._tallies[device] = QueueTally()
        session.attach(tally)

    def of_device(self, device_id: str) -> tuple[int, int]:
        """The messages and bytes queued for the device's sessions here."""
        tally = self._tallies.get(device_id)
        return (tally.messages, tally.bytes) if tally is not None else (0, 0)

    def restored(self, sessions: Iterable[BrokerSession]) -> None:
        """``sessions`` were taken in from the store: counted, and one line for the devices
        found past a bound, whose sessions keep all they had."""
        devices: set[str] = set()
        for session in sessions:
            self.join(session)
            devices.add(session.device_id)
        most_messages = self.limits.max_queued_messages_per_device
        most_bytes = self.limits.max_queued_bytes_per_device
        past = sorted(
            d for d in devices
            if (queued := self.of_device(d))[0] > most_messages or queued[1] > most_bytes
        )  # fmt: skip
        if past:
            messages, held = self.of_device(past[0])
            log.warning("restored sessions of %d devices hold queues past "
                        "max_queued_messages_per_device %d or max_queued_bytes_per_device %d "
                        "(%s: %d messages, %d bytes): kept, and their new messages dropped "
                        "until enough are delivered", len(past), most_messages, most_bytes,
                        past[0], messages, held)  # fmt: skip
