"""Frames for a member that is gone, kept in JetStream until its sessions are taken.

A member killed without a hand-over holds persistent sessions whose clients are away until a
survivor adopts them, a client takes its session to another member, or the member restarts
(``broker.cluster.sessions``). Meanwhile the others' route tables still name it. A frame with
QoS 1 or 2 messages sent to it then finds nobody listening; rather than counting it delivered
(its messages would reach nobody while their publishers had their PUBACK or PUBREC, MQTT 3.1.1
§4.3.2, §4.3.3), the forwarder *parks* it: its bytes go to the stream ``<cluster>_parked``
under ``<cluster>.parked.<member>``, and its publishers are acknowledged once JetStream has
it. Whoever takes the member's sessions reads them back (``broker.cluster.replay``).

The stream is bounded: at most ``cluster_max_parked_bytes`` bytes (a full stream refuses
the frame: its publishers are not acknowledged and send again) and ``KEPT_FOR`` seconds (a
member nobody ever takes over does not keep frames forever). It has ``cluster_replicas``
copies (``broker.cluster.streams``): frames already acknowledged to their publishers outlive
the NATS server that led the stream.

Several members may read one gone member's frames at once: its adopter, a member a client
took one of its sessions to directly, the member itself restarted. Each *pins* the subject
while it reads (a consumer of the stream that delivers nothing, seen cluster-wide); a member
that takes a session from a gone member pins it before its claim replaces the gone member's
(``SessionClaims``), so before the adopter can find the session not its own, until its
replay ends; an adopter a session is taken from before its replay gave it the frames pins
them for the session's new member (``Owed.handing_over``). A purge waits until nobody
pins the subject: none drops frames another member is still to give to a session it took
(MQTT 3.1.1 §4.3.2, §4.3.3). The adopter deletes the gone member's routes only once no
taking pins it either: until the taken session's own routes are seen, what is routed to it
is parked for the gone member, not dropped. A pin outlives a member that died holding it by
``PINNED_FOR`` seconds at most.

A reader's consumer is placed by JetStream on any server holding a copy of the stream, one
that lags included (new after a rescale, or back after a stop): it looks at its copy every
``HEARTBEAT`` seconds, and asks the stream's leader, which has every frame acknowledged to
its publishers, for frames it knows are there and did not get within ``LAGGING`` seconds.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Final

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.client import JetStreamContext

from broker.cluster.errors import nats_errors
from broker.cluster.link import REQUEST_TIMEOUT, ClusterLink
from broker.cluster.streams import open_stream
from broker.peer import SessionKey
from nanoiot.errors import ClusterError, ClusterFullError
from nanoiot.tasks import cancellable

__all__ = ["HEARTBEAT", "KEPT_FOR", "PINNED_FOR", "Owed", "ParkedFrames", "Reader"]

PushSubscription = JetStreamContext.PushSubscription

log = logging.getLogger(__name__)

KEPT_FOR: Final = 3600.0  # seconds a parked frame is kept at most (the stream's max age)
PINNED_FOR: Final = 600.0  # seconds a pin outlives its member (the server drops it then)
PURGE_RETRY: Final = 1.0  # seconds between a deferred purge's looks at the pins
_READING: Final = "reading_"  # a replay's pin
_TAKING: Final = "taking_"  # a session's taking's: from before its claim to its replay's end
# A reader's consumer has one copy, which JetStream places on any server holding a copy of
# the stream. A copy brought up to date out of band (new after ``cluster_replicas`` grew, or
# its server back after a stop) stores what it is sent without waking the consumers on it:
# these look at their copy again only at their next idle heartbeat (nats-server 2.9; measured,
# a frame parked before a rescale came exactly one heartbeat after the subscribe, whatever
# the heartbeat). nats-py's default of 5 s is as long as a replay waits for a frame it knows
# is there (``broker.cluster.barriers.READ_WITHIN``); a reader's consumer has one a second.
HEARTBEAT: Final = 1.0
# Seconds a reader waits for a frame its stream's leader has before it asks the leader: the
# copy its consumer is on may not have it for long. After a rescale a new copy's catch-up
# stalled once and was retried 10 s later (nats-server logs "Catchup ... stalled"); a copy
# that has the frame gives it at once, or by its consumer's next heartbeat.
LAGGING: Final = 2 * HEARTBEAT
ASK_EVERY: Final = 0.5  # seconds between a lagging reader's requests to the leader
_PAGE: Final = 256  # consumers JetStream lists at most at once
_STREAM: Final = "parked"
# JetStream's answer to a frame a full stream refuses (``DiscardPolicy.NEW``): "maximum bytes
# exceeded", as a failure to store it (nats-server 2.9).
_STORE_FAILED: Final = 10077


class ParkedFrames:
    """The cluster's stream of parked frames, one subject per gone member."""

    def __init__(self, link: ClusterLink, max_bytes: int) -> None:
        self.link = link
        self.max_bytes = max_bytes
        self.name = f"{link.cluster}_{_STREAM}"
        self._js = link.client.jetstream(timeout=REQUEST_TIMEOUT)

    def subject(self, member: str) -> str:
        return self.link.subject(_STREAM, member)

    async def start(self) -> None:
        """The stream, made or brought to this member's limits."""
        config = api.StreamConfig(
            name=self.name,
            subjects=[self.subject("*")],
            max_bytes=self.max_bytes,
            max_age=KEPT_FOR,
            discard=api.DiscardPolicy.NEW,  # full: the newest is refused, never one kept
            storage=api.StorageType.FILE,
            num_replicas=self.link.replicas,
        )
        with nats_errors(f"opening stream {self.name}"):
            await open_stream(self._js, config)

    async def park(self, member: str, frame: bytes) -> None:
        """``frame`` kept for ``member``; once JetStream acknowledged it. ``ClusterFullError``
        if the stream is full, ``ClusterError`` if JetStream did not take it otherwise."""
        what = f"parking a frame for member {member}"
        with nats_errors(what):
            try:
                await self._js.publish(self.subject(member), frame, stream=self.name)
            except nats.js.errors.APIError as exc:
                if exc.err_code != _STORE_FAILED or "maximum bytes" not in (exc.description or ""):
                    raise
                raise ClusterFullError(
                    f"{what}: stream {self.name} is full (cluster_max_parked_bytes, "
                    f"{self.max_bytes} bytes)"
                ) from None

    async def oldest(self, member: str) -> datetime | None:
        """When the oldest frame still parked for ``member`` was parked, by the clock of the
        stream's leader; None if none is."""
        with nats_errors(f"reading {self.name} for member {member}"):
            try:
                found = await self._js.get_msg(
                    self.name, seq=1, subject=self.subject(member), next=True
                )
            except nats.js.errors.NotFoundError:
                return None
        return found.time

    async def last(self, member: str) -> int:
        """The stream sequence of the last frame parked for ``member``; 0 if none."""
        with nats_errors(f"reading {self.name} for member {member}"):
            try:
                found = await self._js.get_last_msg(self.name, self.subject(member))
            except nats.js.errors.NotFoundError:
                return 0
        return found.seq or 0

    @contextlib.asynccontextmanager
    async def reading(self, member: str) -> AsyncIterator["Reader"]:
        """``member``'s parked frames from the first, in the order they were parked."""
        with nats_errors(f"reading {self.name} for member {member}"):
            subscription = await self._js.subscribe(
                self.subject(member), stream=self.name, ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.ALL, idle_heartbeat=HEARTBEAT,
            )  # fmt: skip
        try:
            yield Reader(self, member, subscription)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def after(self, member: str, sequence: int) -> tuple[int, bytes] | None:
        """The first frame parked for ``member`` after stream sequence ``sequence``, as the
        stream's leader has it (it answers this request); None if there is none."""
        with nats_errors(f"reading {self.name} for member {member}"):
            try:
                found = await self._js.get_msg(
                    self.name, seq=sequence + 1, subject=self.subject(member), next=True
                )
            except nats.js.errors.NotFoundError:
                return None
        return found.seq or 0, found.data or b""

    async def pin(self, member: str, *, taking: bool = False) -> str:
        """A pin on ``member``'s frames: none is purged while it is there. ``taking``: a
        session is being taken from ``member`` (``unpinned``). Its name."""
        name = f"{_TAKING if taking else _READING}{uuid.uuid4().hex}"
        config = api.ConsumerConfig(
            name=name, filter_subject=self.subject(member), ack_policy=api.AckPolicy.NONE,
            deliver_policy=api.DeliverPolicy.NEW, inactive_threshold=PINNED_FOR,
            num_replicas=1, mem_storage=True,
        )  # fmt: skip
        with nats_errors(f"pinning {self.name} for member {member}"):
            await self._js.add_consumer(self.name, config)
        return name

    async def unpin(self, name: str) -> None:
        """The pin ``name`` taken away (gone already: the server dropped it)."""
        with contextlib.suppress(ClusterError), nats_errors(f"unpinning {self.name}"):
            await self._js.delete_consumer(self.name, name)

    async def pins(self, member: str, *, taking: bool = False) -> set[str]:
        """The pins on ``member``'s frames, cluster-wide (``taking``: of takings only)."""
        consumers: list[api.ConsumerInfo] = []
        with nats_errors(f"reading the consumers of {self.name}"):
            while True:
                page = await self._js.consumers_info(self.name, offset=len(consumers))
                consumers += page
                if len(page) < _PAGE:
                    break
        subject, kinds = self.subject(member), (_TAKING,) if taking else (_READING, _TAKING)
        return {
            c.name for c in consumers
            if c.name and c.name.startswith(kinds) and c.config.filter_subject == subject
        }  # fmt: skip

    async def unpinned(self, member: str, then: str, *, taking: bool = False) -> bool:
        """Once nobody pins ``member``'s frames (``taking``: no taking does), to do
        ``then`` (for the log); False if some still did after ``PINNED_FOR`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PINNED_FOR
        logged = False
        while pins := await self.pins(member, taking=taking):
            if loop.time() >= deadline:
                return False
            if not logged:
                log.info("parked frames of member %s: %s once %d readers are done", member,
                         then, len(pins))  # fmt: skip
                logged = True
            await asyncio.sleep(PURGE_RETRY)
        return True

    async def purge(
        self, member: str, through: int, still: Callable[[], bool] = lambda: True
    ) -> None:
        """Drop ``member``'s parked frames up to stream sequence ``through``, the last one a
        replay read (its sessions were all taken and given them), once nobody pins them,
        if it is ``still`` to be done then; given up, the frames left to their age, after
        ``PINNED_FOR``. Frames parked after it stay: the replay did not give them (parked
        once its reading ended, for the member's next absence), and whoever reads them
        next does."""
        if not await self.unpinned(member, "purged"):
            log.warning("parked frames of member %s not purged: still read", member)
            return
        if not still():
            return
        with nats_errors(f"purging {self.name} of member {member}"):
            # JetStream purges the subject's messages below ``seq``, the later ones kept.
            await self._js.purge_stream(self.name, seq=through + 1, subject=self.subject(member))
        log.info("parked frames of member %s purged up to sequence %d", member, through)


class Reader:
    """The frames of one member, one at a time, from a consumer of the stream, or from its
    leader for frames known to be there that the consumer's copy does not have yet."""

    def __init__(self, parked: ParkedFrames, member: str, subscription: PushSubscription) -> None:
        self.parked = parked
        self.member = member
        self.sequence = 0  # the stream sequence of the last frame read
        self._subscription = subscription
        self._lagging = False  # the consumer's copy missed a frame the leader has

    async def next(self, within: float, there: int = 0) -> tuple[int, bytes] | None:
        """The frame after the last one read, (stream sequence, frame), or None if none came
        within ``within`` seconds. ``there``: the stream's leader had frames up to this
        sequence (``ParkedFrames.last``). One the consumer does not give within ``LAGGING``
        seconds is asked of the leader, and so is every later one while the consumer gives
        none the leader did not (its copy lags)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        if self.sequence < there and not self._lagging:
            got = await self._delivered(min(within, LAGGING))
            if got is not None:
                return got
            self._lagging = True
            log.info("parked frames of member %s: none after %d came within %g s, up to %d "
                     "there: asking the stream's leader", self.member, self.sequence, LAGGING,
                     there)  # fmt: skip
        if not self._lagging:
            return await self._delivered(within)
        while True:
            got = await cancellable(self.parked.after(self.member, self.sequence))
            if got is not None:
                self.sequence = got[0]
                return got
            left = deadline - loop.time()
            if self.sequence < there or left <= 0:
                return None  # none left up to there: aged out (``KEPT_FOR``)
            if (got := await self._delivered(min(left, ASK_EVERY))) is not None:
                return got

    async def _delivered(self, within: float) -> tuple[int, bytes] | None:
        """The consumer's next frame after the last one read (one read already, from the
        leader, is passed over), or None if none came within ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        with nats_errors("reading parked frames"):
            while True:
                timeout = max(deadline - loop.time(), 0.001)
                try:
                    # nats-py's wait can swallow a cancellation (``cancellable``).
                    msg = await cancellable(self._subscription.next_msg(timeout=timeout))
                except nats.errors.TimeoutError:
                    return None
                sequence = msg.metadata.sequence.stream if msg.metadata.sequence else 0
                if sequence > self.sequence:  # one the leader did not give: not lagging
                    self.sequence, self._lagging = sequence, False
                    return sequence, msg.data


class Owed:
    """The sessions here (or being adopted) not yet given the parked frames of the gone
    member they were taken from: one handed over meanwhile takes them along."""

    def __init__(self, parked: ParkedFrames) -> None:
        self.parked = parked
        self._owed: dict[SessionKey, str] = {}

    def adopting(self, key: SessionKey, gone: str, *, again: bool = True) -> None:
        """``key`` is taken from ``gone`` here (an adoption's before its claim): not given
        ``gone``'s frames yet. ``again``: in place of any other gone member's."""
        if again or key not in self._owed:
            self._owed[key] = gone

    def given(self, key: SessionKey, gone: str) -> None:
        """``gone``'s frames given to ``key`` here (or it is not taken here)."""
        if self._owed.get(key) == gone:
            del self._owed[key]

    async def handing_over(self, key: SessionKey) -> tuple[str, str] | None:
        """``key`` is handed over before the gone member's frames were all given to it here:
        that member and a pin on its frames for the session's new member
        (``Replays.taken_with``), which reads them for it; None if it has them."""
        gone = self._owed.pop(key, None)
        if gone is None:
            return None
        try:
            return gone, await self.parked.pin(gone, taking=True)
        except ClusterError:  # the new member pins them itself, later
            return gone, ""
