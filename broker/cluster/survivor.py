"""What the survivor chosen for a departure does (``broker.cluster.wills``, whose ``Wills``
holds one): publish the wills of the run that ended, adopt its member's persistent sessions, and
mark the departure settled.

The departure's entry (``broker.cluster.departure``) says who does it, and how far it went:
the creator's value while the wills are published and the sessions adopted; then ``waiting``
(the sessions taken care of: what a member back from fencing waits for) while delayed wills
wait on this process (written again while they wait: ``keep_departure``); ``DONE`` once none
is left (``broker.cluster.departure_marks`` writes them). A process that dies before
``DONE`` (killed, or stopped while delayed wills waited) leaves the entry naming it: the
survivors take it over when they see that process go, or when they lose the creation race to
it later, and the one that does settles it again from what is left in ``<cluster>_wills``.

Each will is published before its entry is deleted, so a process that dies in between has
its last wills published again by the one that takes over: a will may come twice (MQTT
QoS 0/1 subscribers tolerate a duplicate, and a QoS 2 will is a new message each time), but
none is lost. A delayed will's delay (MQTT 5 §3.1.3.2.2) is started once: the process that
starts it writes when it ends to the will's entry (``StoredWill.due``), and one that takes the
departure over waits only what is left of it (publishing at once if it passed). A will whose
entry does not say (its process died before writing it) waits its whole delay from the
take-over: later than due, never earlier. A delayed will whose session a connect claimed
again (``claimed_again``: a take-over of the session this member adopted, or, read once the
adoption is done, a connect that came before it) is decided then, not when the delay ends:
published if the connect ended the session (its claim says Clean Start,
``broker.cluster.claim_value``), dropped if it took the session on. An adoption's claim is no
such connect, whoever adopted the session (this process, the one it took the departure over
from, or a survivor of that one): it names the connect it replaced (``came_back``). A delayed
will is published only by the process its departure names, so that a process cut off from
NATS long enough to be taken over (``broker.cluster.fence``) leaves it to the survivor that
took over. Just before a will is published its device is decided again, and the will dropped
if its connection would be refused now (``broker.cluster.will_decision``); a run's wills are
settled ``in_flight`` at a time (``cluster_max_will_lookups``), each of its own session.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace

from broker.cluster.claim_value import came_back
from broker.cluster.departure import (
    DEPARTURE_TRIED,
    Live,
    creator,
    departure_done,
    departure_won,
    left_unsettled,
    owner,
    waiting,
)
from broker.cluster.departure_marks import DepartureMarks
from broker.cluster.frames import to_key
from broker.cluster.kv import KeyValue
from broker.cluster.will_decision import at_most
from broker.cluster.will_entries import (
    StoredWill,
    delete_will,
    encode_will,
    ends_session,
    incarnation,
    wills_of,
)
from broker.peer import SessionKey, store_key
from nanoiot.errors import ClusterError, ClusterUnavailableError, StoreError
from nanoiot.members import Member
from nanoiot.tasks import cancel_all_and_wait, cancellable

__all__ = ["Survivor"]

log = logging.getLogger(__name__)


class Survivor:
    def __init__(
        self,
        bucket: KeyValue,
        departures: KeyValue,
        claims: KeyValue,
        incarnation: str,
        publish: Callable[[StoredWill], None],
    ) -> None:
        self.bucket = bucket
        self.departures = departures
        self.claims = claims
        self.publish = publish
        # The value of the departures it creates: its first run's (``incarnation``), kept
        # after a fencing since the process is the same.
        self.creator = creator(incarnation)
        # Which processes are live members (``departure.owner``); until told, all are.
        self.live: Live = lambda _process: True
        # Seconds between looks at the process settling a departure of this member's own
        # (``run_ended``): its heartbeat interval (``ClusterRouter.start_members``).
        self.every = 1.0
        self._ending: set[str] = set()  # this member's own runs whose settler is watched
        # Departures it could not tell whether it won: run -> (member, tried until when).
        self._undecided: dict[str, tuple[str, float]] = {}
        # Gone processes whose unsettled departures could not be read: tried until when.
        self._unread: dict[str, float] = {}
        self.published = 0  # wills of dead members published here
        # Why a will's connection would be refused now (None: it would not), asked just
        # before it is published (``broker.cluster.will_decision``); and how many it refused.
        self.refusal: Callable[[StoredWill], Awaitable[str | None]] | None = None
        self.refused = 0
        self.in_flight = 1  # wills of a run decided and published at once (``at_most``)
        # What else the survivor chosen for a departure does: adopt its sessions.
        self.adopt: Callable[[str], Awaitable[object]] | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}  # delayed wills by entry
        # Sessions with a delayed will here: its departure, entry and will.
        self._waiting: dict[SessionKey, tuple[str, str, StoredWill]] = {}
        # What the entries of the departures settled here say (delayed wills waiting here).
        self.marks = DepartureMarks(departures, self.creator)

    def member_gone(self, member: Member) -> None:
        """A member (one run of it) is gone: publish its clients' wills, if this member is
        the survivor chosen to; and if its process is gone, finish what it left unsettled."""
        run = incarnation(member.name, member.pid, member.started, member.run)
        until = asyncio.get_running_loop().time() + DEPARTURE_TRIED
        self._spawn(self._departure(member.name, run, until))
        # A run ended by a fencing leaves its process live: ``live`` says so by the time
        # this runs (the member's new entry is applied once this callback returns).
        process = incarnation(member.name, member.pid, member.started, 0)
        self._spawn(self._unsettled(process, until))

    def try_again(self) -> None:
        """NATS is back: the departures that could not be decided or read are tried again,
        and those settled here but not marked so (``mark_again``)."""
        self.mark_again()
        undecided, self._undecided = self._undecided, {}
        for run, (name, until) in undecided.items():
            self._spawn(self._departure(name, run, until))
        unread, self._unread = self._unread, {}
        for process, until in unread.items():
            self._spawn(self._unsettled(process, until))

    def mark_again(self) -> None:
        """A heartbeat of this member was written, fenced off or not: the departures it
        settled but could not mark are marked now. Unmarked, one names this live process, and
        the member back from fencing whose run it is waits ``SETTLE_WITHIN`` for it, refusing
        connections (``broker.cluster.fence``). Only a write: a member fenced off does it too
        (after a NATS restart, two may each wait for the other's marking)."""
        for run in self.marks.unmarked():
            self._spawn(self.marks.settled(run))

    async def run_ended(self, run: str, within: float) -> None:
        """This member is back after fencing: settle the wills of ``run`` (one of its own,
        ended then) if no survivor took it on, or wait at most ``within`` seconds until the
        survivor that did is done with it (its wills, and its adoption of the sessions).
        Every ``every`` seconds (a heartbeat) meanwhile, the process the departure names is
        looked at: once it is no live member (it died settling), this member takes the
        departure over and settles it itself."""
        won = await departure_won(self.departures, run, self.creator, self.live)
        if won is None:  # the fencing tries again after the next heartbeat written
            raise ClusterUnavailableError(f"the departure of {run} is undecided")
        if won:
            await self._settle("", run, adopt=False)
            return
        self._ending.add(run)  # taken over here if its settler dies, not by ``_unsettled``
        try:
            await self._wait_or_take_over(run, within)
        except ClusterError as exc:
            log.warning("the departure of %s: %s", run, exc)
        finally:
            self._ending.discard(run)

    async def _wait_or_take_over(self, run: str, within: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (left := deadline - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, self.every)):
                    await departure_done(self.departures, run)
                    return
            entry = await cancellable(self.departures.get(run))  # else on until the deadline
            settler = None if entry is None else owner(entry.value)
            if entry is None or settler is None:
                return  # done (or aged out: nothing left to settle)
            if entry.value in (self.creator, waiting(self.creator)) or self.live(settler):
                continue
            if await departure_won(self.departures, run, self.creator, self.live):
                await self._settle("", run, adopt=False)
                return
        log.warning("the departure of %s is not done after %g s: going on", run, within)

    async def _unsettled(self, process: str, until: float) -> None:
        """Settle the departures ``process`` left unsettled if it is gone (and this member
        wins their take-over)."""
        try:
            runs = [] if self.live(process) else await left_unsettled(self.departures, process)
        except ClusterError as exc:
            if asyncio.get_running_loop().time() < until:
                self._unread[process] = until
            log.warning("departures left by %s not read: %s", process, exc)
            return
        for run in runs:
            if run in self._ending:
                continue  # one of this member's own runs: ``run_ended`` takes it over
            if not self.live(process):  # re-read: it may be back (after a fencing)
                await self._departure(run.split(".", 1)[0], run, until)

    async def _departure(self, name: str, run: str, until: float) -> None:
        """Settle the departure of ``run`` (of member ``name``) if this member won it; while
        that is unknown, try again after the next heartbeat written, until ``until``."""
        won = await departure_won(self.departures, run, self.creator, self.live)
        if won is None and asyncio.get_running_loop().time() < until:
            self._undecided[run] = (name, until)
        elif won is None:
            log.warning("wills of %s not published: its departure is undecided after %g s",
                        run, DEPARTURE_TRIED)  # fmt: skip
        elif won:
            try:
                await self._settle(name, run, adopt=True)
            except ClusterError as exc:  # its wills not read: none published yet
                log.warning("wills of %s not published yet: %s", run, exc)
                self._undecided[run] = (name, until)  # won again, as the entry says

    async def _settle(self, name: str, run: str, *, adopt: bool) -> None:
        """Publish the wills of ``run``, adopt its sessions, mark it done."""
        found = await wills_of(self.bucket, run)
        log.info("member %s is gone: %d wills of its clients to publish", run, len(found))
        self.marks.delayed[run] = sum(1 for _, will, _ in found if will.delay)
        works = (self._delay(run, key, will, rev) if will.delay else self._due(run, key, will)
                 for key, will, rev in found)  # fmt: skip
        await at_most(self.in_flight, works)  # each of its own session: in any order
        if adopt and self.adopt is not None:
            try:
                await self.adopt(name)
            except (ClusterError, StoreError) as exc:
                log.warning("sessions of member %s not adopted: %s", name, exc)
        await self._claims_read(run)
        await self.marks.settled(run)

    async def _delay(self, run: str, kv_key: str, will: StoredWill, revision: int) -> None:
        """Publish ``will`` when its delay ends (§3.1.3.2.2: it runs from the end of the
        connection, not from a take-over): when its entry says, if a process that settled
        this departure before started it; else ``will.delay`` from now, written to the entry
        for a process that takes this departure over."""
        due = will.due
        if due is None:
            will = replace(will, due=(due := time.time() + will.delay))
            try:
                await self.bucket.update(kv_key, encode_will(will), revision)
            except ClusterError as exc:  # a taker would count the whole delay again
                log.info("will of session %s: when it is due not kept: %s",
                         store_key(will.key), exc)  # fmt: skip
        # Never longer than the delay itself, should this host's clock be behind the one
        # that wrote it (hosts' clocks are kept in step: NTP).
        left = min(max(due - time.time(), 0.0), float(will.delay))
        earlier = self._timers.pop(kv_key, None)  # its departure taken back here
        if earlier is not None:
            earlier.cancel()
        loop = asyncio.get_running_loop()
        self._timers[kv_key] = loop.call_later(left, self._delay_ended, run, kv_key, will)
        self._waiting[will.key] = (run, kv_key, will)

    def _delay_ended(self, run: str, kv_key: str, will: StoredWill) -> None:
        self._timers.pop(kv_key, None)
        self._spawn(self._delay_over(run, kv_key, will))

    async def _delay_over(self, run: str, kv_key: str, will: StoredWill) -> None:
        await self._due(run, kv_key, will)
        await self.marks.will_out(run)

    async def _claims_read(self, run: str) -> None:
        """The sessions with a delayed will of ``run`` whose client connected again before
        this member adopted them (their claim is another connect's): decided now."""
        for key, (waits_for, _, will) in list(self._waiting.items()):
            if waits_for != run:
                continue
            try:
                claim = await self.claims.get(to_key(store_key(key)))
            except ClusterError as exc:  # decided when the delay ends
                log.info("claim of session %s not read: %s", store_key(key), exc)
                continue
            if claim is not None and came_back(claim.value, claim.revision, will.claim):
                self.claimed_again(key)

    def claimed_again(self, key: SessionKey) -> None:
        """A connect claimed ``key`` after its client's will began its delay here: the will
        is decided now, not when the delay ends (``_due``)."""
        waiting = self._waiting.get(key)
        timer = None if waiting is None else self._timers.pop(waiting[1], None)
        if waiting is None or timer is None:
            return  # no will waits here, or its delay ended already
        timer.cancel()
        log.info("session %s claimed again within its will's delay", store_key(key))
        self._spawn(self._delay_over(*waiting))

    async def _due(self, run: str, kv_key: str, will: StoredWill) -> None:
        """Publish ``will``; a delayed one unless its client connected again (its claim
        changed, other than by an adoption) without ending the session, or another process
        took its departure over; none whose connection would be refused now (``refusal``)."""
        claim = None
        self._waiting.pop(will.key, None)
        if will.delay:
            try:
                claim = await self.claims.get(to_key(store_key(will.key)))
                departure = await self.departures.get(run)
            except ClusterError as exc:
                log.warning("will of session %s not published: %s", store_key(will.key), exc)
                return
            mine = (self.creator, waiting(self.creator))
            # None: aged out (a delay longer than the entry's age), still this process's.
            if departure is not None and departure.value not in mine:
                log.info("will of session %s left to the process that took the departure of "
                         "%s over", store_key(will.key), run)  # fmt: skip
                return
        back = claim is not None and came_back(claim.value, claim.revision, will.claim)
        due = claim is None or not back or ends_session(claim.value)
        refused = await self.refusal(will) if due and self.refusal is not None else None
        if refused is not None:
            self.refused += 1
            log.warning("will of session %s dropped: %s", store_key(will.key), refused)
        elif due:
            self.publish(will)
            self.published += 1
            log.info("published the will of session %s for its dead member",
                     store_key(will.key))  # fmt: skip
        else:
            log.info("will of session %s dropped: its client took the session on",
                     store_key(will.key))  # fmt: skip
        await delete_will(self.bucket, kv_key, None)

    def _spawn(self, work: Coroutine[object, object, object]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, within: float) -> None:
        """Wait, at most ``within`` seconds, for the departures under way here."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await cancel_all_and_wait([*self._tasks, *self.marks.keeping()])
