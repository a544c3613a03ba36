"""Sending routed messages to other members, and their confirmations.

A message for another member goes into that member's frame for this event loop turn
(``broker.cluster.frames``); the frames leave together at the end of the turn, one NATS
message each, on ``<cluster>.route.<member>``. Messages from one publisher to one member
travel on one NATS connection and one subject, so they arrive in the order they were
published (MQTT 3.1.1 §4.6).

A frame holding a QoS 1 or 2 message is sent with a reply subject: the receiving member
answers once it routed the frame and its session store committed what that wrote, and only
then may the publisher get its PUBACK or PUBREC (§4.3.2, §4.3.3). ``forward`` returns the
future of those answers. It fails (the publisher's connection is closed unacknowledged, so
the client sends again) when a member does not answer within ``CONFIRM_WITHIN`` seconds or
the frames waiting for NATS exceed ``max_forward_buffer`` bytes. NATS answering that nobody
listens on a member's subject means the member is gone: ``on_gone`` drops its routes and
the frame counts as delivered (its persistent sessions are in the shared store). A member
that could not take a frame's messages (one for a session it did not hold) answers so, and
the publisher is failed in the same way.
"""

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Final

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from broker.cluster.errors import nats_errors
from broker.cluster.frames import Group, encode, encode_barrier
from broker.cluster.link import ClusterLink
from broker.peer import SessionKey
from broker.router import Message
from nanoiot.errors import ClusterError, ClusterUnavailableError

__all__ = ["CONFIRM_WITHIN", "Forwarder", "all_of"]

log = logging.getLogger(__name__)

CONFIRM_WITHIN: Final = 5.0
_NO_RESPONDERS: Final = "503"
_REFUSED: Final = b"-"


def all_of(futures: list["asyncio.Future[None]"]) -> "asyncio.Future[None] | None":
    """A future done when all of ``futures`` are, failed if one failed; no task involved."""
    if not futures:
        return None
    if len(futures) == 1:
        return futures[0]
    combined: asyncio.Future[None] = futures[0].get_loop().create_future()
    remaining = len(futures)

    def one_done(done: "asyncio.Future[None]") -> None:
        nonlocal remaining
        remaining -= 1
        if combined.done():
            return
        if done.cancelled() or done.exception() is not None:
            combined.set_exception(
                ClusterUnavailableError("a member did not confirm a forwarded message")
                if done.cancelled()
                else done.exception()  # type: ignore[arg-type]
            )
        elif remaining == 0:
            combined.set_result(None)

    for future in futures:
        future.add_done_callback(one_done)
    return combined


class _Frame:
    __slots__ = ("confirmed", "data")

    def __init__(self) -> None:
        self.data = bytearray()
        self.confirmed: asyncio.Future[None] | None = None


class Forwarder:
    def __init__(self, link: ClusterLink, max_buffer: int, on_gone: Callable[[str], None]) -> None:
        self.link = link
        self.max_buffer = max_buffer
        self.on_gone = on_gone
        self.frames_dropped = 0
        self._loop = asyncio.get_running_loop()
        self._frames: dict[str, _Frame] = {}
        self._scheduled = False
        self._outbox: collections.deque[tuple[str, bytes, str]] = collections.deque()
        self._outbox_bytes = 0
        self._ready = asyncio.Event()
        self._waiting: dict[str, tuple[asyncio.Future[None], str, asyncio.TimerHandle]] = {}
        self._ids = itertools.count()
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

    async def stop(self) -> None:
        if self._sender is not None:
            self._flush()
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        if self._replies is not None:
            with contextlib.suppress(Exception):
                await self._replies.unsubscribe()
        for future, _member, timer in self._waiting.values():
            timer.cancel()
            if not future.done():
                future.set_exception(ClusterUnavailableError("the node is stopping"))
        self._waiting.clear()

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

    def barrier(self, member: str, origin: str, session: SessionKey, relayed: bool) -> None:
        """Queue a barrier for ``session`` from ``origin`` to ``member``, behind everything
        queued for it so far (``broker.cluster.handover``)."""
        frame = self._frame_for(member, None)
        encode_barrier(origin, session, frame.data, relayed=relayed)

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

    # --- sending ------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._scheduled = False
        frames, self._frames = self._frames, {}
        for member, frame in frames.items():
            self._send_frame(member, frame)

    def _send_frame(self, member: str, frame: _Frame) -> None:
        confirmed = frame.confirmed
        if confirmed is None:
            self._queue(self.subject(member), bytes(frame.data), "", None)
            return
        token = str(next(self._ids))
        timer = self._loop.call_later(CONFIRM_WITHIN, self._unconfirmed, token)
        self._waiting[token] = (confirmed, member, timer)
        self._queue(self.subject(member), bytes(frame.data), f"{self._inbox}.{token}", token)

    def _queue(self, subject: str, data: bytes, reply: str, token: str | None = None) -> None:
        if self._outbox_bytes + len(data) > self.max_buffer:
            self.frames_dropped += 1
            log.warning("forwarding buffer full (max_forward_buffer): a frame for %s dropped",
                        subject)  # fmt: skip
            if token is not None:
                self._fail(token, f"max_forward_buffer {self.max_buffer} bytes exceeded")
            return
        self._outbox.append((subject, data, reply))
        self._outbox_bytes += len(data)
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
                        log.warning("%s", exc)
                    if reply:
                        self._fail(reply.rsplit(".", 1)[1], str(exc))

    # --- confirmations ------------------------------------------------------------------------

    async def _confirmation(self, msg: Msg) -> None:
        token = msg.subject.rsplit(".", 1)[1]
        waiting = self._waiting.pop(token, None)
        if waiting is None:
            return  # late: it failed already
        future, member, timer = waiting
        timer.cancel()
        status = msg.headers.get("Status") if msg.headers else None
        if status == _NO_RESPONDERS:
            log.warning("cluster member %s is gone: its routes are dropped", member)
            self.on_gone(member)
        elif msg.data == _REFUSED:
            if not future.done():
                future.set_exception(
                    ClusterUnavailableError(f"member {member} could not take a forwarded message")
                )
            return
        if not future.done():
            future.set_result(None)

    def _unconfirmed(self, token: str) -> None:
        waiting = self._waiting.get(token)
        member = waiting[1] if waiting is not None else "?"
        self._fail(token, f"member {member} did not confirm within {CONFIRM_WITHIN:g} s")

    def _fail(self, token: str, why: str) -> None:
        waiting = self._waiting.pop(token, None)
        if waiting is None:
            return
        future, _member, timer = waiting
        timer.cancel()
        if not future.done():
            future.set_exception(ClusterUnavailableError(f"forwarding: {why}"))
