"""Who is in the cluster: every member's entry in ``<cluster>_members``, and who went away.

Each member (node or worker) writes its entry (``nanoiot.members.Member``: name, host, start
time, figures) under its name every ``cluster_heartbeat_interval`` seconds, and watches the
bucket. A member is live while its entry keeps being rewritten. It is gone when:

- its entry is deleted (it stopped cleanly: ``leave``, once it no longer takes frames);
- its entry was not rewritten for ``MISSED_BEATS`` of its intervals, timed on this member's
  own clock from the writes it saw (hosts' clocks differ, so never from the entry's content;
  NATS 2.9 also sends no event when the bucket's age removes an entry);
- an entry under its name comes from another process (same name, other pid or start time):
  the member was restarted, and the previous run is gone;
- an entry under its name has a higher ``run``: the member fenced itself off while cut off
  from NATS (``broker.cluster.fence``) and came back; the run that ended there is gone.

A member fenced off says so in its entry (``fenced``) until it is back: it takes no frames
meanwhile (the others park them for it: ``broker.cluster.absences``), and writes its entry
at once when it is back (``beat_now``).

A member cut off from NATS sees nobody's heartbeat, its own included: it takes nobody as
gone until its own entry is seen again, so a partition never makes it act for the others.
The bucket's age (``MISSED_BEATS`` x the interval of the member that made it) removes the
entry of a member killed for good, so members started later never see it.

Each heartbeat written tells ``on_renewed`` callbacks when its write began: the others
cannot take this member as gone before ``MISSED_BEATS`` intervals from then (what the
fencing of a member cut off from NATS is timed on).

A member taken as gone for its missed heartbeats is told to ``on_silent`` callbacks too
(its frames are parked from then on: ``broker.cluster.forward``).

Every member sees every departure: what acts on one (a dead node's wills, its sessions) must
make sure that only one member does it (compare-and-set).
"""

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Final

from broker.cluster.kv import KeyValue, Watch
from broker.cluster.link import ClusterLink
from broker.cluster.liveness import Heard
from nanoiot.errors import ClusterError
from nanoiot.members import Figures, Member, decode_member, encode_member
from nanoiot.tasks import cancel_all_and_wait, cancellable

__all__ = ["BUCKET", "MISSED_BEATS", "MemberRegistry"]

log = logging.getLogger(__name__)

BUCKET: Final = "members"
MISSED_BEATS: Final = 3

Gone = Callable[[Member], None]
# (loop time the write of this member's entry began, the run it wrote)
Renewed = Callable[[float, int], None]


class MemberRegistry:
    """The live members as the bucket says; this member's own entry if it has ``figures``
    (a workers' supervisor only watches: it holds no clients)."""

    def __init__(
        self,
        link: ClusterLink,
        bucket: KeyValue,
        interval: float,
        figures: Callable[[], Figures] | None = None,
        *,
        mqtt_port: int = 0,
    ) -> None:
        self.link = link
        self.bucket = bucket
        self.interval = interval
        self._figures = figures
        self._mqtt_port = mqtt_port
        self.started = link.started  # with the pid, tells this process from a restarted one
        self._host = socket.gethostname()
        self._live: dict[str, Member] = {}
        self._seen: dict[str, float] = {}  # loop time each live member's entry was last seen
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        self._callbacks: list[Gone] = []
        self._changes: list[Callable[[], None]] = []
        self._silences: list[Callable[[str], None]] = []
        self._awaited: dict[str, set[asyncio.Future[None]]] = {}  # ``until_live``, by name
        self._own_seen = 0.0  # loop time this member last saw its own entry written
        self.run = 0  # one more each time this member fenced itself off (a new run)
        self.fenced = False  # fenced off now (``broker.cluster.fence``): its entry says so
        self.renewed_at = 0.0  # loop time the last heartbeat that was written began
        # The heartbeat write under way, if one is: done when it ended, written or not.
        self.writing: asyncio.Future[None] | None = None
        self._now = asyncio.Event()  # a heartbeat is due at once (``beat_now``)
        self._renewals: list[Renewed] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._watch: Watch | None = None

    @property
    def name(self) -> str:
        return self.link.member

    def live(self) -> list[Member]:
        """The live members (this one included, once its entry came back), by name."""
        return [self._live[name] for name in sorted(self._live)]

    def is_live(self, name: str) -> bool:
        return name in self._live

    async def until_live(self, name: str, within: float) -> None:
        """Return once an entry of member ``name`` is seen (live again), or after ``within``
        seconds: a wait on a gone member that ends as soon as it is back."""
        if name in self._live:
            return
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._awaited.setdefault(name, set())
        waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await waiter
        finally:
            waiters.discard(waiter)
            if not waiters:
                self._awaited.pop(name, None)

    def heard(self, name: str) -> Heard | None:
        """Live member ``name``'s last heartbeat seen (``broker.cluster.liveness``)."""
        member = self._live.get(name)
        return None if member is None else Heard(self._seen[name], member.interval)

    def entry(self, name: str) -> Member | None:
        """The last entry of live member ``name``."""
        return self._live.get(name)

    def on_gone(self, callback: Gone) -> None:
        """Call ``callback(member)`` (its last entry) each time another member goes away."""
        self._callbacks.append(callback)

    def on_silent(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(name)`` when another member is taken as gone for its missed
        heartbeats, before the ``on_gone`` callbacks."""
        self._silences.append(callback)

    def on_renewed(self, callback: Renewed) -> None:
        """Call ``callback(began, run)`` after each write of this member's entry."""
        self._renewals.append(callback)

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after each entry this member applied (a beat, a departure)."""
        self._changes.append(callback)

    async def start(self) -> None:
        """Write this member's entry, then read the others' (all, before returning)."""
        loop = asyncio.get_running_loop()
        self._own_seen = self.renewed_at = loop.time()
        if self._figures is not None:
            await self.bucket.put(self.name, encode_member(self.me()))
        self.link.on_reconnected(self.beat_now)
        self._watch = watch = await self.bucket.watch()
        while (change := await watch.value()) is not None:
            self._apply(*change)
        self._tasks = [loop.create_task(self._follow(watch), name="cluster members watch")]
        if self._figures is not None:
            self._tasks.append(loop.create_task(self._beat(), name="cluster heartbeat"))

    async def stop(self, *, leave: bool = True) -> None:
        """No more heartbeats, nor following the others; ``leave``: the others see this
        member gone at once (its entry deleted). A member stopping cleanly leaves later
        (``leave``), once it stopped taking frames and answered those it took, so that a
        survivor that sees it gone finds nobody listening for it (``ClusterRouter.stop``,
        ``broker.cluster.silence``)."""
        tasks, self._tasks = self._tasks, []
        await cancel_all_and_wait(tasks)
        if self._watch is not None:
            await self._watch.stop()
            self._watch = None
        for timer in self._deadlines.values():
            timer.cancel()
        self._deadlines.clear()
        if leave:
            await self.leave()

    async def leave(self) -> None:
        """Delete this member's entry: the others take it as gone at once."""
        if self._figures is not None:
            try:
                await self.bucket.delete(self.name)
            except ClusterError as exc:
                log.info("%s (the others take this member as gone when it ages out)", exc)

    def me(self) -> Member:
        assert self._figures is not None
        return Member(
            name=self.name, host=self._host, pid=os.getpid(), started=self.started,
            interval=self.interval, figures=self._figures(), mqtt_port=self._mqtt_port,
            run=self.run, fenced=self.fenced,
        )  # fmt: skip

    def beat_now(self) -> None:
        """Write this member's entry at once, not at the next interval: the connection to
        NATS is back, or this member is back from fencing (the others park for it until its
        entry says so)."""
        self._now.set()

    async def _beat(self) -> None:
        """Write this member's entry every interval: each write begins one interval after
        the previous one began, not after it ended, so that a slow write does not push the
        next one towards the others' deadline; one that ended later than that is followed
        at once, and so is ``beat_now`` (the connection to NATS coming back: the others see
        this member again as soon as they can, a fenced member is back as soon as it can be;
        the fencing ended: the others stop parking for it as soon as they can)."""
        failing = False
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        due = loop.time()
        while True:
            # A cancellation that came as a NATS call completed can be lost in it (Python
            # 3.11's wait_for): it is still requested, and ends the beating here.
            if task is not None and task.cancelling():
                return
            due = max(due + self.interval, loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(due):
                    await self._now.wait()  # ``beat_now``: this member's entry at once
            self._now.clear()
            due = min(due, loop.time())
            began, me = loop.time(), self.me()
            self.writing = writing = loop.create_future()
            try:
                await self.bucket.put(self.name, encode_member(me))
            except ClusterError as exc:
                if not failing:  # once per outage, not every beat
                    log.warning("heartbeat not written: %s", exc)
                failing = True
            else:
                if failing:
                    log.info("heartbeat written again")
                failing = False
                self._renewed(began, me.run)
            finally:
                self.writing = None
                writing.set_result(None)

    def _renewed(self, began: float, run: int) -> None:
        self.renewed_at = max(self.renewed_at, began)
        for callback in self._renewals:
            try:
                callback(began, run)
            except Exception:
                log.exception("handling this member's heartbeat")

    async def _follow(self, watch: Watch) -> None:
        while True:
            change = await cancellable(watch.value())  # a stop's cancellation nats-py lost
            if change is not None:
                self._apply(*change)

    def _apply(self, key: str, value: bytes | None) -> None:
        self._applied(key, value)
        self._changed()

    def _changed(self) -> None:
        for callback in self._changes:
            callback()

    def _applied(self, key: str, value: bytes | None) -> None:
        if value is None:
            self._departed(key, "left")
            return
        try:
            member = decode_member(value)
        except ClusterError as exc:
            log.warning("%s/%s: %s (ignored)", self.bucket.bucket, key, exc)
            return
        loop = asyncio.get_running_loop()
        if key == self.name:
            self._own_seen = loop.time()
            if self._figures is not None and (member.pid, member.host) != (os.getpid(), self._host):
                log.error("another process writes member entries as %s: give each node its "
                          "own node_name", key)  # fmt: skip
        previous = self._live.get(key)
        if previous is not None and (previous.pid, previous.started) != (
            member.pid,
            member.started,
        ):
            self._tell(previous, "restarted")
        elif previous is not None and previous.run != member.run:
            self._tell(previous, f"fenced itself off (run {previous.run} ended)")
        self._live[key] = member
        self._seen[key] = loop.time()
        self._arm(key, member.interval * MISSED_BEATS)
        for waiter in self._awaited.get(key, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _arm(self, key: str, within: float) -> None:
        timer = self._deadlines.pop(key, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._deadlines[key] = loop.call_later(within, self._silent, key)

    def _silent(self, key: str) -> None:
        """``key`` missed its beats, unless this member is the one cut off from NATS."""
        self._deadlines.pop(key, None)
        member = self._live.get(key)
        if member is None:
            return
        # This member's own entry comes back every interval; once it did not for one and a
        # half, the silence is this member's own (cut off from NATS), not the others'.
        cut_off = asyncio.get_running_loop().time() - self._own_seen > self.interval * 1.5
        if key != self.name and self._figures is not None and cut_off:
            self._arm(key, member.interval)  # judge again later
            return
        if key != self.name:
            for callback in self._silences:
                try:
                    callback(key)
                except Exception:
                    log.exception("handling the silence of member %s", key)
        self._departed(key, "missed its heartbeats")
        self._changed()

    def _departed(self, key: str, why: str) -> None:
        member = self._live.pop(key, None)
        self._seen.pop(key, None)
        timer = self._deadlines.pop(key, None)
        if timer is not None:
            timer.cancel()
        if member is not None:
            self._tell(member, why)

    def _tell(self, member: Member, why: str) -> None:
        if member.name == self.name and member.pid == os.getpid():
            return  # this process is not gone: it stops hearing itself while cut off
        log.info("cluster member %s (%s, pid %d) %s", member.name, member.host, member.pid, why)
        for callback in self._callbacks:
            try:
                callback(member)
            except Exception:
                log.exception("handling the departure of member %s", member.name)
