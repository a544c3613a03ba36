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
(``broker.cluster.parking``, ``broker.cluster.parked``) instead, without asking NATS again,
until ``unpark`` (the member is back; ``unparked`` once all are in JetStream): their
publishers are acknowledged once JetStream has the frame, and failed if it refused it. Its
routes stay: what is routed to its sessions meanwhile is parked too. Parked frames waiting
for JetStream count against ``max_forward_buffer``. Nothing of this costs anything per
message while no member is gone.

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

A frame goes to NATS's client once its socket takes more (``ClusterLink.taken_in``): a fast
publisher fills the outbox (QoS 0 frames half of it at most, ``_queue``), not the client's
buffer without bound (a heartbeat behind 110 MB there came too late: the member fenced off).

A member that stops answering while NATS keeps its connection (a stopped process, a host gone
until NATS's pings give up on it) gets no answer from NATS either: its frames fail after
``CONFIRM_WITHIN`` until the members registry takes it as gone for its missed heartbeats
(``silent``), and from then on they are parked as above. The others take its run as gone then
(its wills published, its sessions taken by whoever claims them), and should it run again it
fences itself off before it routes anything (``broker.cluster.fence``): a parked frame it had
not routed is routed once, by whoever takes the session; QoS 1 may come twice, QoS 2 not.

A member stopping cleanly stops taking frames before its forwarder's sender stops, and
deletes its members entry only after both (``ClusterRouter.stop``: a survivor that sees it
gone finds nobody listening, ``broker.cluster.silence``): NATS answers that nobody listens for
the frames sent after it stopped taking them, and their senders park them at once. ``stop``
answers the frames it took before: it waits for the answers still pending (``reply_when``)
and sends what is queued, within ``CONFIRM_WITHIN`` seconds (their senders' limit), before
its sender stops. Otherwise a frame routed then would go unanswered: its sender would wait
for a probe (``PROBE_AFTER``) and park it, to be routed again by whoever takes the sessions.
"""

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Final

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from broker.cluster.busy import BUSY, BusyNotices
from broker.cluster.confirmations import CONFIRM_WITHIN, Awaiting, all_of, fail, ignore_outcome
from broker.cluster.errors import nats_errors
from broker.cluster.frames import FRAMING, Group, encode, encode_barrier
from broker.cluster.link import ClusterLink
from broker.cluster.parking import Parker
from broker.peer import SessionKey
from broker.router import Message
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_and_wait

__all__ = ["Forwarder"]

log = logging.getLogger(__name__)

_NO_RESPONDERS: Final = "503"
_REFUSED: Final = b"-"
_PROBE: Final = "p"  # a probe's reply token: this and the member's name (frames' are numbers)


class _Frame:
    __slots__ = ("barrier", "confirmed", "data")

    def __init__(self) -> None:
        self.data = bytearray()
        self.confirmed: asyncio.Future[None] | None = None
        self.barrier = False  # holds a barrier: a hand-over waits for it


class Forwarder(Parker):
    def __init__(
        self, link: ClusterLink, max_buffer: int, on_gone: Callable[[str], None], wait: float = 60
    ) -> None:
        super().__init__(max_buffer, on_gone)
        self.link = link
        self.probes_sent = 0  # empty frames asking whether a member still listens
        self.probes_found_gone = 0  # ... answered by NATS: nobody does
        self._loop = asyncio.get_running_loop()
        self._frames: dict[str, _Frame] = {}
        self._scheduled = False
        self._outbox: collections.deque[tuple[str, bytes, str]] = collections.deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()  # set while the outbox is empty and nothing is being sent
        self._idle.set()
        self._replying: set[asyncio.Future[None]] = set()  # what answers to send wait for
        self._awaiting = Awaiting(self._probe, max(wait, CONFIRM_WITHIN), max_buffer)
        self.busy = BusyNotices(lambda subject, data: self._queue(subject, data, ""))
        self._inbox = link.client.new_inbox()
        self._replies: Subscription | None = None
        self._sender: asyncio.Task[None] | None = None
        self._max_frame = max(link.client.max_payload - FRAMING, FRAMING)

    def subject(self, member: str) -> str:
        return self.link.subject("route", member)

    async def start(self) -> None:
        with nats_errors("subscribing to forwarding confirmations"):
            self._replies = await self.link.client.subscribe(
                self._inbox + ".*", cb=self._confirmation
            )
        self._sender = self._loop.create_task(self._send_all(), name="cluster forwarder")
        self._start_parker()

    async def stop(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(TimeoutError):  # their senders gave up on them by then
                async with asyncio.timeout(CONFIRM_WITHIN):
                    await self._answered_all()
            self._flush()
            await cancel_and_wait(self._sender)
            self._sender = None
        await self._stop_parker()
        if self._replies is not None:
            with contextlib.suppress(Exception):
                await self._replies.unsubscribe()
        self._fail_queued()
        self.busy.stop()
        self._awaiting.fail_all("the node is stopping")

    async def start_taking(self, frame: Callable[[Msg], Awaitable[None]]) -> Subscription:
        """Listen for the frames sent to this member (to ``frame``), once the server has the
        subscription; ClusterError if it could not be known, and nothing is taken then (their
        senders park them: NATS answers that nobody listens)."""
        subject = self.subject(self.link.member)
        with nats_errors("listening for forwarded messages"):
            frames_in = await self.link.client.subscribe(subject, cb=frame)
        try:
            with nats_errors("listening for forwarded messages"):
                await self.link.flush()  # the server has it (ClusterLink.flush)
        except ClusterError:
            with contextlib.suppress(Exception):
                await frames_in.unsubscribe()
            raise
        return frames_in

    def silent(self, member: str) -> None:
        """``member`` missed its heartbeats (``broker.cluster.members``): its frames are
        parked as if NATS said nobody listens for it, those sent and not answered first."""
        self._start_parking(member, "missed its heartbeats")

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
        now = 0.0 if message.expires_at is None else self._loop.time()  # ``encode``'s for expiry
        frames, most = self._frames, self._max_frame
        for member in members:  # ``_append``, inline: once per message and member
            frame = frames.get(member) or frames.setdefault(member, _Frame())
            data = frame.data
            start = len(data)
            encode(message, data, now, plain=member in plain, groups=groups.get(member, ()))
            kept: _Frame | None = frame
            if len(data) > most or not self._scheduled:  # else ``_appended`` does nothing
                kept = self._appended(member, frame, start)
            if kept is None:
                confirmation = self._too_big(member, message.qos)
            else:
                confirmation = self._confirmed(kept) if message.qos else None
            if confirmation is not None:
                confirmations.append(confirmation)
        return all_of(confirmations) if confirmations else None

    def send_on(
        self, member: str, message: Message, session: SessionKey, group: Group | None = None
    ) -> "asyncio.Future[None] | None":
        """Queue ``message`` for one session that moved to ``member`` (for its shared
        subscription ``group``, if given: ``broker.cluster.handover``); the future of its
        confirmation (QoS > 0)."""
        groups = () if group is None else (group,)
        now = self._loop.time()
        frame = self._append(
            member,
            lambda data: encode(message, data, now, plain=False, session=session, groups=groups),
        )
        if frame is None:
            return self._too_big(member, message.qos)
        return self._confirmed(frame) if message.qos else None

    def barrier(
        self, member: str, origin: str, session: SessionKey, relayed: bool, parked: bool = False
    ) -> None:
        """Queue a barrier for ``session`` from ``origin`` to ``member``, behind everything
        queued for it so far (``broker.cluster.handover``). ``parked``: ``member`` is gone;
        the barrier is sent as a frame to confirm, so that it is parked behind what was
        parked for it (``broker.cluster.replay``). Nothing waits for that confirmation."""
        frame = self._append(
            member, lambda data: encode_barrier(origin, session, data, relayed=relayed)
        )
        if frame is not None:
            frame.barrier = True
            if parked:
                ignore_outcome(self._confirmed(frame))

    def _append(self, member: str, write: Callable[[bytearray], None]) -> _Frame | None:
        """``member``'s frame of this turn (sent at its end) with the record ``write`` appends
        to it; None if the record alone is larger than NATS carries (``max_payload``): it is
        dropped. A frame it would make too large is sent first: NATS refuses a message over
        max_payload whole, with the other publishers' messages in it."""
        frame = self._frames.get(member) or self._frames.setdefault(member, _Frame())
        start = len(frame.data)
        write(frame.data)
        return self._appended(member, frame, start)

    def _appended(self, member: str, frame: _Frame, start: int) -> _Frame | None:
        if len(frame.data) > self._max_frame:
            record = frame.data[start:]
            del frame.data[start:]
            if len(record) > self._max_frame:
                if not frame.data:
                    del self._frames[member]
                return None
            self._send_frame(member, frame)
            frame = self._frames[member] = _Frame()
            frame.data += record
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        return frame

    def _too_big(self, member: str, qos: int) -> "asyncio.Future[None] | None":
        """A message for ``member`` dropped for its size (``_append``): logged, counted with
        the frames dropped; the confirmation (QoS > 0) fails, its publisher is not
        acknowledged."""
        self.frames_dropped += 1
        limit = self.link.client.max_payload
        self._warnings.warning(member, "messages too large for NATS",
                               "a message for member %s dropped: it is larger than NATS's "
                               "max_payload (%d bytes)", member, limit)  # fmt: skip
        if not qos:
            return None
        failed: asyncio.Future[None] = self._loop.create_future()
        fail(failed, f"a message larger than NATS's max_payload ({limit} bytes)")
        return failed

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
        if confirmed is None:  # lossy: QoS 0 messages alone
            self._queue(self.subject(member), bytes(frame.data), "", lossy=not frame.barrier)
            return
        data = bytes(frame.data)
        token = self._awaiting.add(member, data, confirmed)
        self._queue(self.subject(member), data, f"{self._inbox}.{token}", token)

    def _queue(
        self, subject: str, data: bytes, reply: str, token: str | None = None,
        *, lossy: bool = False,
    ) -> None:  # fmt: skip
        """Queue a NATS message, dropped past ``max_forward_buffer`` (its publishers
        failed); a ``lossy`` one (QoS 0 alone, §4.3.1) past half of it, so that a QoS 0
        flood leaves room for what others wait for (QoS 1/2, answers, barriers)."""
        room = self.max_buffer // 2 if lossy else self.max_buffer
        if self._outbox_bytes + len(data) > room:
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
                    # What waits for the socket stays in the outbox, within max_forward_buffer.
                    await self.link.taken_in()
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
            self.probes_sent += 1
            self._queue(self.subject(member), b"", f"{self._inbox}.{_PROBE}{member}")

    async def _confirmation(self, msg: Msg) -> None:
        token = msg.subject.rsplit(".", 1)[1]
        if token == BUSY:  # the frames it names are held by a live member: waited for longer
            self.busy.heard_from(msg.data, self._awaiting)
            return
        status = msg.headers.get("Status") if msg.headers else None
        if token.startswith(_PROBE):
            probed = token.removeprefix(_PROBE)
            if status == _NO_RESPONDERS:
                if probed not in self.parked:  # else a frame's answer said so first
                    self.probes_found_gone += 1
                self._start_parking(probed)
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
