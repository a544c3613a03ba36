"""The frames other members send this one, and when it listens for them.

The sending side is ``broker.cluster.forward``; this is the receiving side of a member's
``ClusterRouter``: a frame's messages go to this member's own subscribers only (nothing is
forwarded twice), and the frame is confirmed, if its sender asked, once what it wrote is
committed. Apart from the router because when a member listens is a concern of its own: from
start until it stops, not while it is fenced off, and again as it comes back
(``broker.cluster.fence``), when a frame that comes early waits rather than be refused.

A frame that comes while this member still restores its own sessions from the store (at
start-up, or back from fencing) waits for the restore, which takes seconds for a fleet: on a
2-core machine's PostgreSQL, 5,000 persistent sessions (three subscriptions and three queued
messages each) took about 1 s, 20,000 about 5 s, past the ``CONFIRM_WITHIN`` seconds a
sender waits for an answer; and the member listens for frames before it starts restoring
(its routes still send it what is for the sessions it restores). So such a frame is taken
off NATS and held, in order, and its sender told the member is busy with it
(``broker.cluster.busy``) until the restore is done and the frame taken as usual: nothing is
answered before then. Held that way are ``max_buffer`` bytes of frames at most; past them a
frame waits in NATS's queue for this subscription, as every frame did before, unnamed.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from broker.cluster.confirmations import CONFIRM_WITHIN, all_of, ignore_outcome
from broker.cluster.errors import nats_errors
from broker.cluster.frames import Routed, read
from broker.router import Message
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_and_wait

if TYPE_CHECKING:
    from broker.client import MqttClient
    from broker.cluster.link import ClusterLink
    from broker.cluster.router import ClusterRouter
    from broker.router import LocalRouter

__all__ = ["FramesIn"]

# Under the router's name: operators grep its log for what routing dropped.
log = logging.getLogger("broker.cluster.router")


class FramesIn:
    """What ``router`` takes from the other members, and its counts for ``/metrics``."""

    def __init__(self, router: "ClusterRouter", max_buffer: int) -> None:
        self.router = router
        self._max_early = max_buffer  # bytes of frames held for the restore, named busy
        self._early: deque[Msg] = deque()  # frames that came before ``_ready``, in order
        self._early_bytes = 0
        self._early_task: asyncio.Task[None] | None = None
        self.received = 0  # messages other members sent here
        self.repeats = 0  # QoS 2 ones that came here again (``broker.cluster.resend``)
        self._subscription: NatsSubscription | None = None
        self._rejoined: asyncio.Future[None] | None = None  # ``take``

    async def take(self, rejoined: "asyncio.Future[None] | None" = None) -> None:
        """Listen for the frames other members send here (at start, and back from fencing:
        one that comes before this member is back waits for ``rejoined``, not refused)."""
        self._rejoined = rejoined
        if self._subscription is None:
            self._subscription = await self.router.forwarder.start_taking(self.receive)

    async def stop(self) -> None:
        """Stopping: frames sent here from now on are parked by their senders (NATS answers
        that nobody listens); those NATS sent first are routed and answered."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None and self.router.link.connected:  # else none comes anyway
            try:
                with nats_errors("stopping taking forwarded messages"):
                    async with asyncio.timeout(CONFIRM_WITHIN):  # their senders' limit
                        await _drain(self.router.link, subscription)
                        if self._early_task is not None:  # those held for the restore
                            await asyncio.shield(self._early_task)
            except ClusterError as exc:
                log.debug("%s", exc)
        await self._drop_early()

    async def _drop_early(self) -> None:
        """The frames still held for the restore stay unanswered: their senders probe this
        member and park them, as for any frame it does not answer."""
        if self._early_task is not None:
            await cancel_and_wait(self._early_task)
            self._early_task = None
        busy = self.router.forwarder.busy
        for msg in self._early:
            busy.answered(msg.reply)
        self._early.clear()
        self._early_bytes = 0

    async def stop_until_back(self) -> None:
        """Fenced off: frames sent here are parked by their senders (NATS answers that nobody
        listens), replayed once its sessions are restored, not refused (their publishers
        would send again what reached a session another member took meanwhile)."""
        subscription = self._subscription
        await self.stop()  # those NATS sent first (refused)
        if subscription is not None and not self.router.link.connected:  # not taken again
            with contextlib.suppress(Exception):  # on reconnect
                await subscription.unsubscribe()

    def _waiting(self) -> bool:
        """Whether a frame coming now would wait (``_ready``)."""
        rejoined = self._rejoined
        if rejoined is not None and not rejoined.done():
            return True
        claims = self.router.claims
        return claims is not None and claims.restoring() is not None

    async def _ready(self) -> None:
        """Until this member is back (``take``) and its own sessions are restored (none
        would miss a message); the frames after this one wait their turn, in order."""
        rejoined = self._rejoined
        if rejoined is not None and not rejoined.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(rejoined)
        claims = self.router.claims
        restoring = claims.restoring() if claims is not None else None
        if restoring is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(restoring)

    async def receive(self, msg: Msg) -> None:
        """A frame from another member: ``_take``n once ``_ready``, in order. One that
        comes before is held, its sender told this member is busy with it, within
        ``max_buffer`` bytes; past them it waits here, on NATS's queue (module docstring)."""
        if not self._early and not self._waiting():
            await self._take(msg)
            return
        if self._early_bytes + len(msg.data) > self._max_early and self._early_task is not None:
            await asyncio.shield(self._early_task)  # NATS holds the frames after it
        if not self._early and not self._waiting():
            await self._take(msg)
            return
        self._early.append(msg)
        self._early_bytes += len(msg.data)
        if msg.reply:
            self.router.forwarder.busy.held(msg.reply)
        if self._early_task is None:
            self._early_task = asyncio.get_running_loop().create_task(
                self._take_early(), name="frames held for the restore"
            )

    async def _take_early(self) -> None:
        try:
            while self._early:
                await self._ready()
                msg = self._early.popleft()
                self._early_bytes -= len(msg.data)
                if msg.reply:  # named again at once if it is held further (``_answer``)
                    self.router.forwarder.busy.answered(msg.reply)
                await self._take(msg)
        finally:
            self._early_task = None

    async def _take(self, msg: Msg) -> None:
        """To this member's subscribers, then confirmed (if asked) once the store committed
        what that wrote and the members it sent messages on to (``broker.cluster.handover``)
        confirmed them; refused if one was refused. Refused while it is fenced off, above all
        when a stall fenced it (``Fencing.fenced_now``): it may be one the others parked; not
        when it came as this member listened again, back from fencing (``take``)."""
        router = self.router
        handovers = router.handovers
        assert handovers is not None
        registry = handovers.registry
        await self._ready()
        if registry is not None and registry.fenced_now():
            if msg.reply:  # its publisher sends it again
                router.forwarder.reply(msg.reply, taken=False)
            return
        durable = False
        waits: list[asyncio.Future[None]] = []
        local = router.local
        max_queued = local.limits.max_queued_messages
        later = local.later = set()  # one write per subscriber for the frame (``_written``)
        try:
            for record in read(msg.data, asyncio.get_running_loop().time()):
                self.received += 1
                routed: Routed | None = None
                if isinstance(record, Message):  # for plain subscriptions alone: most are
                    message = record
                else:
                    routed, message = record, record.message
                    if routed.barrier:
                        handovers.relay(routed)
                        continue
                    if routed.session is not None:
                        taken = handovers.take(routed, max_queued)
                        if isinstance(taken, asyncio.Future):
                            waits.append(taken)
                        else:
                            durable |= taken
                        continue
                refused = handovers.refused_if_stale(message) if handovers.fence else None
                if refused is not None:
                    waits.append(refused)  # not routed here either: it comes again
                    continue
                if message.qos == 2 and message.id:  # once (``broker.cluster.resend``)
                    repeated = self._repeated(message, routed is None or routed.plain)
                    if repeated is not None:
                        durable |= repeated
                        continue
                if routed is None:
                    durable |= local.deliver_plain(message)
                else:
                    durable |= local.deliver_forwarded(
                        message, plain=routed.plain, groups=routed.groups
                    )
                if handovers.departures:
                    waits += handovers.send_on_routed(routed or Routed(message, True, ()))
        except (ClusterError, UnicodeDecodeError) as exc:
            log.warning("dropped a forwarded frame: %s", exc)
            for waiting in waits:  # what they would have confirmed is not
                ignore_outcome(waiting)
            return  # unconfirmed: the sender fails its publisher, which sends again
        finally:
            _written(local, later)
        held = bool(local.waits)  # for a session arriving here, or behind a parked backlog
        if held:
            waits += local.waits
            local.waits.clear()
        self._answer(msg.reply, waits, durable, held)

    def _repeated(self, message: Message, plain: bool) -> bool | None:
        """A QoS 2 message routed here before (``broker.cluster.resend``): given to the plain
        subscribers that came here since, if ``plain``; True if the store was written. None
        if it is new here."""
        since = self.router.delivered.first(message.id, time.monotonic())
        if since is None:
            return None
        self.repeats += 1
        return plain and self.router.local.deliver_since(message, since)

    def _answer(
        self, reply: str, waits: list["asyncio.Future[None]"], durable: bool, held: bool
    ) -> None:
        """Confirm the frame (if its sender asked) once ``waits`` and the store's commit of
        what it wrote (``durable``) are done; ``held``: its sender is told meanwhile that
        this member is busy (``broker.cluster.busy``)."""
        if not reply:
            return
        router = self.router
        pending = router.store.pending_commit() if durable else None
        if pending is not None:
            waits.append(pending)
        combined = all_of(waits)
        if combined is None:
            router.forwarder.reply(reply)
        else:
            if held:
                router.forwarder.busy.held_until(reply, combined)
            router.forwarder.reply_when(reply, combined)


def _written(local: "LocalRouter", later: "set[MqttClient]") -> None:
    """The frame's messages written to their subscribers, one write each: a frame holds
    hundreds, and a write per message (the MQTT encoder's output taken and handed to TLS, the
    socket's buffer read for the QoS 0 check) was 7 of the 33 calls a record cost here. A QoS
    0 message goes to a subscriber while its output, the frame's messages given it counted
    as written, is within ``max_outgoing_buffer`` (MQTT 3.1.1 §4.3.1: at most once)."""
    local.later = None
    for client in later:
        client.flush()


async def _drain(link: "ClusterLink", subscription: NatsSubscription) -> None:
    """Unsubscribe, and take every frame NATS sent before it had the UNSUB. nats-py's own
    ``drain`` waits for one PONG, which may come before NATS has the UNSUB (its PING goes
    ahead of the commands not written yet, ``ClusterLink.flush``), then drops the
    subscription: a frame NATS sent between that PONG and the UNSUB came to a subscription
    nats-py no longer knew, and went unanswered (its sender waited, probed, then parked it).
    So the subscription is dropped only once NATS is known to have the UNSUB, and the frames
    before it taken (nats-py's internals: its ``drain`` with the flush it lacks)."""
    client, sid = link.client, subscription._id
    await client._send_unsubscribe(sid)
    await link.flush()  # what NATS sent before the UNSUB is in the queue now
    if subscription._pending_queue is not None:
        await subscription._pending_queue.join()
    subscription._stop_processing()
    client._remove_sub(sid)
    subscription._closed = True
