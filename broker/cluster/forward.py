"""Sending routed messages to other members, and their confirmations.

A message for another member goes into that member's frame for this event loop turn
(``broker.cluster.frames``); the frames leave together at the end of the turn, one NATS
message each, on ``<cluster>.route.<member>``. Messages from one publisher to one member
travel on one NATS connection and one subject, so they arrive in the order they were
published (MQTT 3.1.1 §4.6).

A frame holding a QoS 1 or 2 message is sent with a reply subject: the receiving member
answers once it routed the frame and its session store committed what that wrote, and only
then may the publisher get its PUBACK or PUBREC (§4.3.2, §4.3.3). ``forward`` returns the
future of those answers (``broker.cluster.confirmations`` keeps what waits for them). It
fails (the publisher's connection is closed unacknowledged, so the client sends again) when a
member does not answer within ``CONFIRM_WITHIN`` seconds or the frames waiting for NATS
exceed ``max_forward_buffer`` bytes. A member that could not take a frame's messages (one for
a session it did not hold) answers so, and the publisher is failed in the same way.

NATS answering that nobody listens on a member's subject means the member is gone (killed:
its persistent sessions wait for whoever takes them). Every frame sent to it and not
answered, in the order they were sent, and from then on every frame with QoS 1 or 2
messages for it (or a barrier for a session taken from it: ``barrier``), are *parked*
(``broker.cluster.parked``) instead, without asking NATS again, until ``unpark`` (the
member is back; ``unparked`` once all are in JetStream): their publishers are acknowledged
once JetStream has the frame, and failed if it refused it. Its routes stay: what is routed
to its sessions meanwhile is parked too. Parked frames waiting for JetStream count against
``max_forward_buffer``. Nothing of this costs anything per message while no member is gone.

NATS says so only for a message sent once it noticed the member's connection closed: a frame
that reached NATS before the member was killed is never answered. So a member with a frame
unanswered ``PROBE_AFTER`` seconds (``broker.cluster.confirmations``) is *probed*: an empty
frame with a reply subject is sent to it, which a listening member answers at once (it
routes nothing), and NATS's answer that nobody listens parks the member's frames as above.
A publisher with a message in flight to a member killed is acknowledged within about
``PROBE_AFTER`` seconds, not failed after ``CONFIRM_WITHIN``. A parked frame the member may
have routed before it died reaches its sessions again when they are taken: a QoS 1 message
may come twice (§4.3.2), a QoS 2 one not (the session read back from the store knows the
ids it holds and the last ones it completed: ``broker.cluster.resend``, step 4).

A member stopping cleanly stops taking frames first (``ClusterRouter.stop``): NATS then
answers that nobody listens for those sent after, and their senders park them at once. ``stop``
answers the frames it took before: it waits for the answers still pending (``reply_when``) and
sends what is queued, within ``CONFIRM_WITHIN`` seconds (their senders' limit), before its
sender stops. Otherwise a frame routed then would go unanswered: its sender would wait for a
probe (``PROBE_AFTER``) and park it, to be routed again by whoever takes the sessions.
"""

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Final

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from broker.cluster.confirmations import CONFIRM_WITHIN, Awaiting, all_of, fail, ignore_outcome
from broker.cluster.errors import nats_errors
from broker.cluster.frames import Group, decode, encode, encode_barrier
from broker.cluster.link import ClusterLink
from broker.cluster.parked import ParkedFrames
from broker.peer import SessionKey
from broker.repeats import LogLimiter
from broker.router import Message
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_and_wait

__all__ = ["Forwarder"]

log = logging.getLogger(__name__)

_NO_RESPONDERS: Final = "503"
_REFUSED: Final = b"-"
_PROBE: Final = "p"  # a probe's reply token: this and the member's name (frames' are numbers)
_Parking = tuple[str, bytes, "asyncio.Future[None]"]  # a frame to park: member, bytes, future


class _Frame:
    __slots__ = ("confirmed", "data")

    def __init__(self) -> None:
        self.data = bytearray()
        self.confirmed: asyncio.Future[None] | None = None


class Forwarder:
    def __init__(self, link: ClusterLink, max_buffer: int, on_gone: Callable[[str], None]) -> None:
        self.link = link
        self.max_buffer = max_buffer
        self.on_gone = on_gone  # told when frames for a member start being parked
        self.frames_dropped = 0
        self._warnings = LogLimiter(log)  # one line per member and trouble a minute
        self.frames_parked = 0
        self.parking: ParkedFrames | None = None  # where; None: a gone member's are refused
        self.parked: set[str] = set()  # members whose frames are parked
        self._unparking: set[str] = set()  # ... until those queued are in JetStream
        self._unparked = asyncio.Event()  # set (and replaced) when a member's are no longer
        self._parking_now: str | None = None
        self._parking: collections.deque[_Parking] = collections.deque()
        self._parking_ready = asyncio.Event()
        self._parker: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._frames: dict[str, _Frame] = {}
        self._scheduled = False
        self._outbox: collections.deque[tuple[str, bytes, str]] = collections.deque()
        self._outbox_bytes = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()  # set while the outbox is empty and nothing is being sent
        self._idle.set()
        self._replying: set[asyncio.Future[None]] = set()  # what answers to send wait for
        self._awaiting = Awaiting(self._probe)  # frames sent, not answered yet
        self._inbox = link.client.new_inbox()
        self._replies: Subscription | None = None
        self._sender: asyncio.Task[None] | None = None
        self._max_frame = max(link.client.max_payload - 1024, 1024)

    def subject(self, member: str) -> str:
        return self.link.subject("route", member)

    async def start(self) -> None:
        with nats_errors("subscribing to forwarding confirmations"):
            self._replies = await self.link.client.subscribe(
                self._inbox + ".*", cb=self._confirmation
            )
        self._sender = self._loop.create_task(self._send_all(), name="cluster forwarder")
        self._parker = self._loop.create_task(self._park_all(), name="cluster parker")

    async def stop(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(TimeoutError):  # their senders gave up on them by then
                async with asyncio.timeout(CONFIRM_WITHIN):
                    await self._answered_all()
            self._flush()
            await cancel_and_wait(self._sender)
            self._sender = None
        if self._parker is not None:
            await cancel_and_wait(self._parker)
            self._parker = None
        if self._replies is not None:
            with contextlib.suppress(Exception):
                await self._replies.unsubscribe()
        for _member, _data, future in self._parking:
            fail(future, "the node is stopping")
        self._parking.clear()
        self._awaiting.fail_all("the node is stopping")

    def forward(
        self,
        members: Iterable[str],
        message: Message,
        plain: Collection[str],
        groups: Mapping[str, list[Group]],
    ) -> "asyncio.Future[None] | None":
        """Queue ``message`` for each member (for its plain subscribers if it is in
        ``plain``, for its shared subscriptions ``groups[member]``); the future of their
        confirmations (QoS > 0)."""
        confirmations: list[asyncio.Future[None]] = []
        now = self._loop.time()
        for member in members:
            frame = self._frame_for(member, message)
            encode(message, frame.data, now, plain=member in plain, groups=groups.get(member, ()))
            if message.qos:
                confirmations.append(self._confirmed(frame))
        return all_of(confirmations)

    def send_on(
        self, member: str, message: Message, session: SessionKey, group: Group | None = None
    ) -> "asyncio.Future[None] | None":
        """Queue ``message`` for one session that moved to ``member`` (for its shared
        subscription ``group``, if given: ``broker.cluster.handover``); the future of its
        confirmation (QoS > 0)."""
        frame = self._frame_for(member, message)
        groups = () if group is None else (group,)
        encode(message, frame.data, self._loop.time(), plain=False, session=session, groups=groups)
        return self._confirmed(frame) if message.qos else None

    def barrier(
        self, member: str, origin: str, session: SessionKey, relayed: bool, parked: bool = False
    ) -> None:
        """Queue a barrier for ``session`` from ``origin`` to ``member``, behind everything
        queued for it so far (``broker.cluster.handover``). ``parked``: ``member`` is gone;
        the barrier is sent as a frame to confirm, so that it is parked behind what was
        parked for it (``broker.cluster.replay``). Nothing waits for that confirmation."""
        frame = self._frame_for(member, None)
        encode_barrier(origin, session, frame.data, relayed=relayed)
        if parked:
            ignore_outcome(self._confirmed(frame))

    def _frame_for(self, member: str, message: Message | None) -> _Frame:
        """``member``'s frame of this turn with room for ``message``; sent at its end."""
        frame = self._frames.get(member)
        size = 1024 if message is None else len(message.topic) * 4 + len(message.payload)
        if frame is None:
            frame = self._frames[member] = _Frame()
        elif len(frame.data) + size > self._max_frame:
            self._send_frame(member, frame)  # NATS refuses messages over max_payload
            frame = self._frames[member] = _Frame()
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        return frame

    def _confirmed(self, frame: _Frame) -> "asyncio.Future[None]":
        if frame.confirmed is None:
            frame.confirmed = self._loop.create_future()
        return frame.confirmed

    def reply(self, subject: str, taken: bool = True) -> None:
        """Send a confirmation (from the receiving side), after what is queued; not
        ``taken``: the frame's messages could not all be taken, the sender's publishers
        are not to be acknowledged."""
        self._queue(subject, b"" if taken else _REFUSED, "")

    def reply_when(self, subject: str, done: "asyncio.Future[None]") -> None:
        """Send a confirmation once ``done`` is: refused if it failed (``reply``)."""
        self._replying.add(done)

        def answer(done: "asyncio.Future[None]") -> None:
            self._replying.discard(done)
            self.reply(subject, taken=not done.cancelled() and done.exception() is None)

        done.add_done_callback(answer)

    async def _answered_all(self) -> None:
        """Once every answer pending is sent (to NATS's client; closing it sends them on)."""
        if self._replying:
            await asyncio.wait(set(self._replying))  # their callbacks queue the answers first
        self._flush()
        await self._idle.wait()

    # --- sending ------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._scheduled = False
        frames, self._frames = self._frames, {}
        for member, frame in frames.items():
            self._send_frame(member, frame)

    def _send_frame(self, member: str, frame: _Frame) -> None:
        confirmed = frame.confirmed
        if self.parked and member in self.parked:
            if confirmed is not None:  # QoS 0 alone is not kept (at most once, §4.3.1)
                self._park(member, bytes(frame.data), confirmed)
            return
        if confirmed is None:
            self._queue(self.subject(member), bytes(frame.data), "", None)
            return
        data = bytes(frame.data)
        token = self._awaiting.add(member, data, confirmed)
        self._queue(self.subject(member), data, f"{self._inbox}.{token}", token)

    def _queue(self, subject: str, data: bytes, reply: str, token: str | None = None) -> None:
        if self._outbox_bytes + len(data) > self.max_buffer:
            self.frames_dropped += 1
            self._warnings.warning(subject, "frames dropped (max_forward_buffer)",
                                   "forwarding buffer full (max_forward_buffer): a frame for %s "
                                   "dropped", subject)  # fmt: skip
            if token is not None:
                self._awaiting.fail(token, f"max_forward_buffer {self.max_buffer} bytes exceeded")
            return
        self._outbox.append((subject, data, reply))
        self._outbox_bytes += len(data)
        self._idle.clear()
        self._ready.set()

    async def _send_all(self) -> None:
        client, outbox = self.link.client, self._outbox
        while True:
            await self._ready.wait()
            self._ready.clear()
            while outbox:
                subject, data, reply = outbox.popleft()
                self._outbox_bytes -= len(data)
                try:
                    with nats_errors(f"forwarding to {subject}"):
                        await client.publish(subject, data, reply=reply)
                except ClusterError as exc:
                    if not self.link.connected:  # one line per outage (``ClusterLink``)
                        log.debug("%s", exc)
                    else:
                        self._warnings.warning(subject, "forwarding failures", "%s", exc)
                    if reply:
                        self._awaiting.fail(reply.rsplit(".", 1)[1], str(exc))
            self._idle.set()

    # --- confirmations ------------------------------------------------------------------------

    def _probe(self, member: str) -> None:
        """A frame for ``member`` waits unanswered: an empty frame, which it answers at once
        if it listens, and NATS with no responders if it does not (``_confirmation``)."""
        if member not in self.parked:
            self._queue(self.subject(member), b"", f"{self._inbox}.{_PROBE}{member}")

    async def _confirmation(self, msg: Msg) -> None:
        token = msg.subject.rsplit(".", 1)[1]
        status = msg.headers.get("Status") if msg.headers else None
        if token.startswith(_PROBE):
            if status == _NO_RESPONDERS:
                self._start_parking(token.removeprefix(_PROBE))
            return  # answered: it listens, its frames are just slow
        if status == _NO_RESPONDERS:
            member = self._awaiting.member(token)
            if member is not None:  # else late: it failed already
                self._start_parking(member)
            return
        answered = self._awaiting.answered(token)
        if answered is None:
            return  # late: it failed already
        future, member, _data = answered
        if msg.data == _REFUSED:
            fail(future, f"member {member} could not take a forwarded message")
            return
        if not future.done():
            future.set_result(None)

    # --- parking (``broker.cluster.parked``) -------------------------------------------------

    def _start_parking(self, member: str) -> None:
        """Nobody listens for ``member``: the frames sent to it and not answered are parked,
        in the order they were sent (their answers, if any come, are ignored). One it routed
        before it died reaches its sessions twice, QoS 2 once (the module's docstring)."""
        waiting = self._awaiting.of(member)
        if member not in self.parked:
            # The first may be this member's barrier to a member it took a session from.
            first = "none yet"
            if waiting:
                barrier = all(routed.barrier for routed in decode(waiting[0][0], 0.0))
                first = "this member's hand-over barrier" if barrier else "messages"
            log.warning("cluster member %s is gone: frames for it are parked until its "
                        "sessions are taken (the first: %s)", member, first)  # fmt: skip
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
                except ClusterError as exc:
                    self._warnings.warning(
                        member, "frames not parked", "%s: its publishers are not acknowledged", exc
                    )
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
