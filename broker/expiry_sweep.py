"""The expired messages of away sessions' queues, taken out soon after they expire.

MQTT 5.0 §3.3.2.3.3: a message whose Message Expiry Interval passed is never delivered. The
broker drops such messages as their turn to be sent comes, at a queue's bounds
(``broker.mqtt.queues``) and as it reads a queue back from the store; without more, a
persistent session whose client stays away for days kept its expired messages in memory and
in the store for as long, until a bound, a reconnect or a restart. ``ExpirySweep`` takes
them out (deleting their rows, counted as the ``message_expiry`` limit's hits, as the others)
within moments of their deadline.

It costs nothing per session per tick: one heap keyed by each watched session's next
deadline (``broker.mqtt.queues.next_expiry``), one loop timer for the earliest. A session is
watched as its client leaves with messages queued, as a message that may expire is queued
for it while it is away, and as it is read back from the store; a session whose client came
back is dropped from the heap when its turn comes (its client's sending drops them), and an
ended one at once (the heap is rebuilt when such entries make most of it). A turn takes at
most ``SESSIONS_PER_TURN`` sessions' and ``MESSAGES_PER_TURN`` messages' worth, then lets
the loop run before the next: 10,000 sessions whose messages expire in the same second are
swept in turns of a few milliseconds each, never one long stall.
"""

import asyncio
import heapq
import itertools
from typing import Final

from broker.metrics import BrokerMetrics
from broker.mqtt.queues import NEVER, next_expiry
from broker.session_store import SessionStore
from broker.sessions import BrokerSession

__all__ = ["ExpirySweep"]

# Per turn of the loop: a few milliseconds at most (measured: ~5.5 µs a session with one
# expired message, its store delete queued and counted; a turn of 256 such, 1.5-3 ms).
SESSIONS_PER_TURN: Final = 256
MESSAGES_PER_TURN: Final = 512


class ExpirySweep:
    def __init__(self, store: SessionStore, metrics: BrokerMetrics) -> None:
        self.store = store
        self.metrics = metrics
        self._heap: list[tuple[float, int, BrokerSession]] = []
        self._due: dict[BrokerSession, float] = {}  # each watched session's entry that counts
        self._order = itertools.count()  # ties in the heap: never compare sessions
        self._timer: asyncio.Handle | None = None
        self._armed = NEVER  # when the timer fires
        self._stopped = False

    def __len__(self) -> int:
        """How many sessions are watched."""
        return len(self._due)

    def watch(self, session: BrokerSession) -> None:
        """Sweep ``session``'s queue when its next message expires, if its client is away."""
        due = next_expiry(session)
        if due == NEVER or self._stopped or session.client is not None:
            return
        if self._due.get(session, NEVER) <= due:
            return  # an entry as early is in the heap (the usual case: a later deadline)
        self._due[session] = due
        heapq.heappush(self._heap, (due, next(self._order), session))
        self._arm(due)

    def drop(self, session: BrokerSession) -> None:
        """``session`` ended or left this member: no longer swept."""
        if self._due.pop(session, None) is not None and len(self._heap) > 2 * len(self._due) + 64:
            # Entries no longer counting are most of the heap: rebuilt, so that sessions
            # coming and going never grow it beyond twice the watched ones.
            self._heap = [(due, next(self._order), s) for s, due in self._due.items()]
            heapq.heapify(self._heap)

    def stop(self) -> None:
        """The broker stops: no more sweeps (the store is closing)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
        self._due.clear()

    def _arm(self, due: float) -> None:
        if due >= self._armed:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._armed = due
        self._timer = asyncio.get_running_loop().call_at(due, self._turn)

    def _turn(self) -> None:
        """Sweep the sessions whose deadline passed, a bounded number; the next turn is
        at once if more are due, else at the next deadline."""
        self._timer, self._armed = None, NEVER
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap, sessions, messages = self._heap, 0, 0
        while heap and heap[0][0] <= now:
            if sessions >= SESSIONS_PER_TURN or messages >= MESSAGES_PER_TURN:
                self._armed = now
                self._timer = loop.call_soon(self._turn)
                return
            due, _, session = heapq.heappop(heap)
            if self._due.get(session) != due:
                continue  # replaced by an earlier entry, or dropped
            del self._due[session]
            sessions += 1
            messages += self._sweep(session, now)
        if heap:
            self._arm(heap[0][0])

    def _sweep(self, session: BrokerSession, now: float) -> int:
        """Take ``session``'s expired messages out; how many went."""
        if session.client is not None:
            return 0  # its client takes its queue again: sending drops the expired ones
        gone = session.purge_expired(now)
        for message in gone:
            self.store.message_done(message)
            self.metrics.count_limit("message_expiry")
        self.watch(session)  # its next deadline, if it has one
        return len(gone)
