"""What the queues of a device's sessions hold together (``QueueTally``), and the expired
messages taken out of them before a bound drops live ones (MQTT 5.0 §3.3.2.3.3), pure.

A queued message whose Message Expiry Interval has passed is never delivered [MQTT-3.3.2-5]:
until its turn to be sent came it still counted against ``max_queued_messages``,
``max_queued_bytes`` and its device's bounds, so a queue full of expired messages made the
broker drop live ones. ``Session.enqueue`` now takes them out first, when a bound would drop
something (never on the way of a message that fits): its own queue's, then those of its
device's other sessions (``QueueTally.sessions``).

The cost stays off the hot path and bounded:

- The queued messages that have an expiry are also in ``Session.expiring``, in queue order:
  a message that fits costs an append there, and one sent a pop from its head.
- At a bound, the expired ones are taken from the head of ``expiring`` (each check O(1)),
  and out of the queue (from its head, or found in C, ``deque.remove``). This is exact
  while their deadlines are in queue order: one publisher's messages with one interval,
  whatever is queued without an expiry between them.
- A message queued with a deadline before its predecessor's (publishers mixing short and
  long intervals) may expire behind live ones: then ``expiring`` is scanned once that
  deadline passed (``expiry_due``), at most once per ``SCAN_EVERY`` per queue (and per
  device for the walk over its sessions), as each scan costs its length (1,000 messages:
  ~0.2 ms). Such a message may hold room for up to ``SCAN_EVERY`` past its deadline. An
  interval is whole seconds, so a message queued after a scan is due no earlier than a
  second later: only rare older ones (a retained message, a restored queue) pull a scan
  forward.

No I/O; ``now`` is the broker's clock (the loop's), as ``Outgoing.expires_at`` is.
"""

import math
from collections import deque
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from broker.mqtt.session import Outgoing, Session

SCAN_EVERY: Final = 0.1  # seconds: at most one scan of a queue, or walk of a device, per
NEVER: Final = math.inf  # an ``expiry_due`` when no scan is due (and a deadline never met)


class NoQueue(deque["Outgoing"]):
    """The queue of every session that has nothing queued yet: one shared, empty deque that
    refuses to grow. An empty deque is 760 bytes, and most sessions (idle devices, clean
    sessions of connected clients) never queue anything; ``Session`` gives itself a deque
    of its own for its first queued message (and for its first that has an expiry)."""

    def append(self, _message: "Outgoing") -> None:
        raise TypeError("the shared empty queue does not grow: see Session.enqueue")

    def appendleft(self, _message: "Outgoing") -> None:
        raise TypeError("the shared empty queue does not grow: see Session.enqueue")

    def extend(self, _messages: object) -> None:
        raise TypeError("the shared empty queue does not grow: see Session.enqueue")


NO_QUEUE: Final[deque["Outgoing"]] = NoQueue()


class QueueTally:
    """What the queues of all one device's sessions in this process hold together
    (``max_queued_messages_per_device``, ``max_queued_bytes_per_device``): shared by those
    sessions, each counting its own queue in it (``Session.attach``). ``sessions``: they,
    whose expired messages make room at the device's bound (``expired_of_device``)."""

    __slots__ = ("__weakref__", "bytes", "expiry_due", "messages", "sessions")

    def __init__(self) -> None:
        self.bytes = 0
        self.messages = 0
        self.sessions: list[Session] = []  # a session leaves it as it ends (``Session.clear``)
        self.expiry_due = NEVER  # no queued message of the device expires before


def take_expired(
    expiring: "deque[Outgoing]", now: float, due: float
) -> tuple[list["Outgoing"], float]:
    """Take the messages expired by ``now`` out of ``expiring`` (a queue's messages that
    have an expiry, in queue order), in that order; with the next ``due``: NEVER while the
    deadlines left are in queue order, else when the next scan may run."""
    gone: list[Outgoing] = []
    while expiring and _deadline(expiring[0]) <= now:  # ``broker.mqtt.expiry.expired``
        gone.append(expiring.popleft())
    if now < due:
        return gone, due
    kept: list[Outgoing] = []
    earliest, last, ordered = NEVER, -NEVER, True
    for message in expiring:
        deadline = _deadline(message)
        if deadline <= now:
            gone.append(message)
            continue
        kept.append(message)
        ordered &= deadline >= last
        earliest, last = min(earliest, deadline), deadline
    expiring.clear()
    expiring.extend(kept)
    return gone, NEVER if ordered else max(earliest, now + SCAN_EVERY)


def remove(queue: "deque[Outgoing]", gone: list["Outgoing"]) -> None:
    """Take ``gone`` (in queue order) out of ``queue``: from its head, else each found in C
    (``deque.remove``, by identity), else, for many, in one pass."""
    start = 0
    while start < len(gone) and queue[0] is gone[start]:
        queue.popleft()
        start += 1
    rest = gone[start:]
    if len(rest) <= 8:
        for message in rest:
            queue.remove(message)  # Outgoing compares by identity
        return
    ids = {id(message) for message in rest}
    kept = [message for message in queue if id(message) not in ids]
    queue.clear()
    queue.extend(kept)


def next_expiry(session: "Session") -> float:
    """The earliest a message of ``session``'s queue may have to be taken out."""
    expiring, due = session.expiring, session.expiry_due
    if expiring:
        head = expiring[0].expires_at
        if head is not None and head < due:
            return head
    return due


def _deadline(message: "Outgoing") -> float:
    expires = message.expires_at
    assert expires is not None, "only messages with an expiry are in ``expiring``"
    return expires


def expired_of_device(tally: QueueTally, now: float, but: "Session") -> list["Outgoing"]:
    """Take the expired messages out of the queues of the device's sessions other than
    ``but`` (whose own the caller took), if one of them may hold some and the device was
    not walked within ``SCAN_EVERY``."""
    if now < tally.expiry_due:
        return []
    gone: list[Outgoing] = []
    due = NEVER
    for session in tally.sessions:
        if session is not but:
            gone += session.purge_expired(now)
        due = min(due, next_expiry(session))
    tally.expiry_due = max(due, now + SCAN_EVERY) if due != NEVER else NEVER
    return gone
