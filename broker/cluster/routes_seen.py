"""Whether the other members' route tables hold this member's filters: what a SUBACK waits for.

MQTT 3.1.1 and 5.0 §3.8.4: once the server sent the SUBACK, it delivers the messages matching
the new subscription. In a cluster such a message may be published on another member, which
sends it only to the members its route table names (``broker.cluster.routes``): a member whose
table lacks the filter sends it nowhere (no probe, nothing parked: it names no member to send
it to), and its publisher is acknowledged. That table follows the routes bucket through a KV
watch, a delivery after the write. So a filter *written* to the bucket is not yet *seen* by
the others: a SUBACK sent once its route was written still left a window (about a
millisecond) in which a message published elsewhere missed the new subscriber, and an
application that subscribes, then tells a device on another node to publish, lost it.

So a SUBACK waits until every other member says its table is at the revision this member's
write had (``seen_for``). Each member answers a request naming a revision on
``<cluster>.routes.<member>`` once its table is there (``RouteAnnouncer.reached``). Asked
are the members this one knows of (live, or with routes), and those whose heartbeat entry
the members bucket holds but this member has not read yet, found by one request to the
bucket's stream made after the write (``KeyValue.keys_now``, alongside the others'
answers). One NATS says nobody listens for is not running, and reads the whole bucket when
it starts, after it starts listening (so its table has the write); one that does not
answer within ``SEEN_WITHIN`` seconds (stalled, or its table lagging) is passed over,
counted, and the SUBACK goes without it.

No member is missed: one that has just started wrote its entry either before that request
(then it is asked) or after it, so after the write; it then reads the routes bucket's last
revision and takes no client before its table is there (``ClusterRouter.start_members``),
so its table has the route before any of its clients can publish.

Cost: one request and answer per other member and one to the members bucket, each a round
trip through NATS, at the same time. Rounds are shared: while one is out, the SUBACKs that
come wait for the next, which asks for the latest revision written, so many clients
subscribing at once cost a round per round trip, not a round each; so do the SUBSCRIBEs one
client sends one after another (pipelined), as its connection is read on while its SUBACKs
wait, at most ``cluster_max_subacks_waiting`` of them (``broker.acks``). Measured figures are
in docs/deploy.md.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from broker.cluster.errors import nats_errors
from broker.cluster.link import ClusterLink
from broker.cluster.routes import RouteAnnouncer
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_and_wait, cancel_requested

__all__ = ["SEEN_WITHIN", "RoutesSeen", "at_most"]

log = logging.getLogger(__name__)

# Seconds a member is waited for to say its table has a revision: longer than a loaded
# member's watch takes (milliseconds), shorter than a client waits for its SUBACK.
SEEN_WITHIN: Final = 2.0


class RoutesSeen:
    """This member's answers to how far its table is, and its own waits for the others'."""

    def __init__(
        self, link: ClusterLink, announcer: RouteAnnouncer, members: Callable[[], set[str]]
    ) -> None:
        self.link = link
        self.announcer = announcer
        self.members = members  # every other member this one knows of
        self.confirmed = 0  # every member asked had its table at this revision or later
        self.late = 0  # members that did not answer within SEEN_WITHIN
        self.rounds = 0  # rounds of requests
        self._wanted: list[tuple[int, asyncio.Future[None]]] = []  # (revision, until seen)
        self._round: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()
        self._listening: NatsSubscription | None = None
        # The members whose heartbeat entry the members bucket holds now, read afresh
        # (``KeyValue.keys_now``); None until this member has its own entry.
        self.entries: Callable[[], Awaitable[set[str]]] | None = None

    async def start(self) -> None:
        """Answer the others: before this member's table is read (``RouteAnnouncer.start``),
        so that one told nobody listens here knows this member's table will have its write."""
        with nats_errors("listening for route revisions"):
            self._listening = await self.link.client.subscribe(
                self._subject(self.link.member), cb=self._asked
            )
            await self.link.flush()  # NATS has it before the bucket is read

    async def stop(self) -> None:
        listening, self._listening = self._listening, None
        if listening is not None:  # a member asking now is told nobody listens: not running
            with contextlib.suppress(Exception):  # closed, or NATS away: nothing comes anyway
                await listening.unsubscribe()
        if self._round is not None:
            await cancel_and_wait(self._round)
            self._round = None
        for task in list(self._answers):
            await cancel_and_wait(task)
        for _revision, waiting in self._wanted:
            if not waiting.done():
                waiting.set_result(None)  # nothing is asked any more
        self._wanted = []

    def seen_for(self, filters: Iterable[str]) -> "asyncio.Future[None] | None":
        """Done once the entries of ``filters`` are written as changed so far and the other
        members' tables have them; None if they have. As of this member's table, not its
        last write: an entry the bucket held already is not written again."""
        written = self.announcer.keys_written(filters)
        if written is None:
            return None  # not started, or stopped: nothing is written
        if written.done():
            return self.seen(self.announcer.revision)
        return asyncio.ensure_future(self._seen_once(written))

    async def _seen_once(self, written: "asyncio.Future[None]") -> None:
        await written
        waiting = self.seen(self.announcer.revision)
        if waiting is not None:
            await waiting

    def seen(self, revision: int) -> "asyncio.Future[None] | None":
        """Done once the other members' tables are at ``revision`` (None: they are)."""
        if revision <= self.confirmed:
            return None
        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wanted.append((revision, waiting))
        if self._round is None:
            self._round = asyncio.get_running_loop().create_task(
                self._ask(), name="cluster routes seen"
            )
        return waiting

    def _subject(self, member: str) -> str:
        return self.link.subject("routes", member)

    async def _ask(self) -> None:
        """Rounds while any wait: each for the latest revision this member wrote."""
        try:
            while self._wanted:
                revision = max(self.announcer.revision, *(r for r, _ in self._wanted))
                members = self.members() - {self.link.member}
                if members or self.entries is not None:
                    self.rounds += 1
                    asked = [self._one(member, revision) for member in sorted(members)]
                    await asyncio.gather(*asked, self._unknown(members, revision))
                self.confirmed = max(self.confirmed, revision)
                still = []
                for wanted, waiting in self._wanted:
                    if wanted > self.confirmed:
                        still.append((wanted, waiting))
                    elif not waiting.done():
                        waiting.set_result(None)
                self._wanted = still
                if cancel_requested():  # lost in nats-py's wait (``nanoiot.tasks``): stopping
                    raise asyncio.CancelledError
        finally:
            self._round = None

    async def _unknown(self, known: set[str], revision: int) -> None:
        """Ask too the members whose entry the bucket holds now but this member's view
        does not yet (one that has just started). One whose entry comes after this read
        reads the routes up to a revision after this round's before it takes any client."""
        if self.entries is None:
            return
        try:
            written = await self.entries()
        except ClusterError as exc:  # NATS away: the writes wait as much
            log.debug("members not read afresh: %s", exc)
            return
        unknown = written - known - {self.link.member}
        await asyncio.gather(*(self._one(member, revision) for member in sorted(unknown)))

    async def _one(self, member: str, revision: int) -> None:
        """Until ``member`` says its table is at ``revision``, or is not running, or did not
        answer within SEEN_WITHIN seconds."""
        subject = self._subject(member)
        try:
            await self.link.client.request(subject, b"%d" % revision, timeout=SEEN_WITHIN)
        except nats.errors.NoRespondersError:
            return  # not running: it reads the whole bucket as it starts
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            self.late += 1
            log.warning("member %s did not say its routes are at revision %d within %g s "
                        "(%s): subscriptions acknowledged without it", member, revision,
                        SEEN_WITHIN, type(exc).__name__)  # fmt: skip

    async def _asked(self, msg: Msg) -> None:
        """Another member asks whether this member's table is at a revision: answered once
        it is (not holding up the next request)."""
        try:
            revision = int(msg.data)
        except ValueError:
            log.warning("ignored a malformed route revision request on %s", msg.subject)
            return
        task = asyncio.get_running_loop().create_task(
            self._answer(msg, revision), name="cluster routes seen answer"
        )
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, msg: Msg, revision: int) -> None:
        try:
            async with asyncio.timeout(SEEN_WITHIN):
                await self.announcer.reached(revision)
        except TimeoutError:
            return  # the asker goes on without this member's answer
        try:
            with nats_errors("answering a route revision request"):
                await msg.respond(b"")
        except ClusterError as exc:
            log.debug("%s", exc)


def at_most(waiting: "asyncio.Future[None]", within: float) -> "asyncio.Future[None]":
    """Done once ``waiting`` is, or ``within`` seconds from now, whichever comes first; never
    fails (a SUBACK held for it goes in any case, ``broker.acks``)."""
    loop = waiting.get_loop()
    bounded: asyncio.Future[None] = loop.create_future()

    def done() -> None:
        if not bounded.done():
            bounded.set_result(None)

    def overdue() -> None:
        waiting.cancel()  # its route waits to be written (NATS away): nothing holds the wait
        done()

    timer = loop.call_later(within, overdue)

    def finished(future: "asyncio.Future[None]") -> None:
        timer.cancel()
        if not future.cancelled():
            future.exception()  # read: a stop's end of the wait is no error of the SUBACK's
        done()

    waiting.add_done_callback(finished)
    return bounded
