"""Parking: keeping the frames for a member nobody listens for in JetStream
(``broker.cluster.parked``) until it is back, for ``broker.cluster.forward``'s ``Forwarder``.

Once NATS said nobody listens for a member (killed, or stopping cleanly), the frames sent to
it and not answered, in the order they were sent, and from then on every frame with QoS 1 or
2 messages for it, go to JetStream one at a time, so that they stay in the order they were
sent (MQTT 3.1.1 §4.6); their publishers are acknowledged once JetStream has them (§4.3.2,
§4.3.3), failed if it refused them. ``unpark`` ends it once those queued are in JetStream, so
that no frame sent to the member directly overtakes them. Frames waiting for JetStream count
against ``max_forward_buffer``, with those waiting for NATS.
"""

import asyncio
import collections
import logging
from collections.abc import Callable

from broker.cluster.confirmations import Awaiting, fail
from broker.cluster.frames import decode
from broker.cluster.parked import ParkedFrames
from broker.cluster.parked_age import ParkedAge
from broker.repeats import LogLimiter
from nanoiot.errors import ClusterError, ClusterFullError
from nanoiot.tasks import cancel_and_wait, cancel_requested

__all__ = ["Parker"]

log = logging.getLogger("broker.cluster.forward")  # its lines are the forwarder's

_Parking = tuple[str, bytes, "asyncio.Future[None]"]  # a frame to park: member, bytes, future


class Parker:
    """The parking half of a forwarder, and the bytes both hold (``max_buffer``)."""

    _awaiting: Awaiting  # the forwarder's frames sent and not answered yet

    def __init__(self, max_buffer: int, on_gone: Callable[[str], None]) -> None:
        self.max_buffer = max_buffer
        self.on_gone = on_gone  # told when frames for a member start being parked
        self.frames_dropped = 0
        self._warnings = LogLimiter(log)  # one line per member and trouble a minute
        self.frames_parked = 0
        self.frames_not_parked = 0  # refused by JetStream: full (ClusterFullError), or away
        self.parking: ParkedFrames | None = None  # where; None: a gone member's are refused
        self.parked: set[str] = set()  # members whose frames are parked
        self._unparking: set[str] = set()  # ... until those queued are in JetStream
        self._unparked = asyncio.Event()  # set (and replaced) when a member's are no longer
        self._parking_now: str | None = None
        self._parking: collections.deque[_Parking] = collections.deque()
        self._parking_ready = asyncio.Event()
        self._parker: asyncio.Task[None] | None = None
        self._outbox_bytes = 0  # frames waiting for NATS or for JetStream
        self.age = ParkedAge(self)  # of what waits unread in JetStream
        self._age_watch: asyncio.Task[None] | None = None

    def _start_parker(self) -> None:
        loop = asyncio.get_running_loop()
        self._parker = loop.create_task(self._park_all(), name="cluster parker")
        self._age_watch = loop.create_task(self.age.watch(), name="cluster parked age")

    async def _stop_parker(self) -> None:
        for task in (self._parker, self._age_watch):
            if task is not None:
                await cancel_and_wait(task)
        self._parker = self._age_watch = None

    def _fail_queued(self) -> None:
        """The node stops: what waits to be parked fails (its publishers send it again)."""
        for _member, _data, future in self._parking:
            fail(future, "the node is stopping")
        self._parking.clear()

    def _start_parking(self, member: str, why: str = "nobody listens for it") -> None:
        """Nobody listens for ``member`` (or it missed its heartbeats: ``why``): the frames
        sent to it and not answered are parked, in the order they were sent (their answers,
        if any come, are ignored). One it routed before it died reaches its sessions twice,
        QoS 2 once (``broker.cluster.forward``)."""
        waiting = self._awaiting.of(member)
        if member not in self.parked:
            # The first may be this member's barrier to a member it took a session from.
            first = "none yet"
            if waiting:
                barrier = all(routed.barrier for routed in decode(waiting[0][0], 0.0))
                first = "this member's hand-over barrier" if barrier else "messages"
            log.warning("cluster member %s is gone (%s): frames for it are parked until its "
                        "sessions are taken (the first: %s)", member, why, first)  # fmt: skip
            self.parked.add(member)
            self.on_gone(member)
        for data, confirmed in waiting:
            self._park(member, data, confirmed)

    def unpark(self, member: str) -> None:
        """``member`` is back: frames for it go to it again, once those parked before are
        in JetStream (none overtakes them)."""
        if member in self.parked and member not in self._unparking:
            self._unparking.add(member)
            self._drained(member)

    async def unparked(self, member: str) -> None:
        """Once frames for ``member`` are no longer parked: all it parked are in JetStream."""
        while member in self.parked:
            await self._unparked.wait()

    def _drained(self, member: str) -> None:
        if self._parking_now == member or any(entry[0] == member for entry in self._parking):
            return
        self._unparking.discard(member)
        self.parked.discard(member)
        self._unparked, unparked = asyncio.Event(), self._unparked
        unparked.set()
        log.info("cluster member %s is back: frames for it are no longer parked", member)

    def _park(self, member: str, data: bytes, future: "asyncio.Future[None]") -> None:
        if self.parking is None:
            fail(future, f"member {member} is gone")
            return
        if self._outbox_bytes + len(data) > self.max_buffer:
            self.frames_dropped += 1
            self._warnings.warning(member, "frames refused (max_forward_buffer)",
                                   "forwarding buffer full (max_forward_buffer): a frame for %s "
                                   "refused", member)  # fmt: skip
            fail(future, f"max_forward_buffer {self.max_buffer} bytes exceeded")
            return
        self._outbox_bytes += len(data)
        self._parking.append((member, data, future))
        self._parking_ready.set()

    def _not_parked(self, member: str, exc: ClusterError) -> None:
        self.frames_not_parked += 1
        self._warnings.warning(member, "frames not parked", "%s: its publishers are "
                               "disconnected unacknowledged (they send again); %d batches "
                               "not parked so far", exc, self.frames_not_parked)  # fmt: skip

    async def _park_all(self) -> None:
        """One frame at a time, so that each member's stay in the order they were sent."""
        queue = self._parking
        while True:
            await self._parking_ready.wait()
            self._parking_ready.clear()
            while queue:
                member, data, future = queue.popleft()
                self._parking_now = member
                try:
                    assert self.parking is not None
                    await self.parking.park(member, data)
                except ClusterFullError as exc:  # kept as it is: the publisher is told so
                    self._not_parked(member, exc)
                    if not future.done():
                        future.set_exception(exc)
                except ClusterError as exc:
                    self._not_parked(member, exc)
                    fail(future, str(exc))
                except asyncio.CancelledError:
                    fail(future, "the node is stopping")  # JetStream may not have it: sent again
                    raise
                else:
                    self.frames_parked += 1
                    if not future.done():
                        future.set_result(None)
                finally:
                    self._outbox_bytes -= len(data)
                    self._parking_now = None
                    if member in self._unparking:
                        self._drained(member)
                if cancel_requested():  # lost in nats-py's wait (``nanoiot.tasks``): stopping
                    raise asyncio.CancelledError
