"""Fencing: a member cut off from NATS gives its clients and sessions up before the others
may take it as gone, and takes up its part again once it is a member again.

A member the others take as gone (``broker.cluster.members``) has its clients' wills
published and its persistent sessions adopted by a survivor (``broker.cluster.wills``,
``broker.cluster.sessions``). A member still running but cut off from NATS would otherwise
keep serving the same clients and sessions: two members holding one session, a will
published while its client is connected. So a member that could not write its heartbeat for
long enough fences itself off first:

- it ends its run: its heartbeats carry the next ``run`` from now on, so the others take the
  run that ended as gone whether or not they noticed the silence (``Member.run``);
- it closes its connections without their wills (MQTT 5 reason 0x9C, use another server:
  their devices connect to another member); the wills stay in the cluster for the departure
  of the ended run, which publishes each once;
- it drops its sessions from memory, their rows kept for the member that takes them, and
  waits until its store committed everything it acknowledged; their routes stay in the
  cluster's table until it is back and restored what is still its own (a session nobody took
  while it was away: what is published for it meanwhile is parked, never acknowledged
  unrouted), as at start-up (``RouteAnnouncer.keep``);
- it stops the replays of parked frames it has under way, which purge nothing then
  (``Replays.fenced``): one still reading what is parked late would read what the others
  park for it from now on, for sessions it no longer holds;
- it stops listening for frames, refusing those already in its sockets, until it is back:
  the others park them, and it reads them back once its sessions are restored. Refused, a
  frame's publisher would send again what may have reached a session the survivor took (a
  QoS 2 message delivered twice). Its heartbeats say it is fenced off (``Member.fenced``),
  so the others park for it until one says it is back, not as soon as its new run is seen
  (``broker.cluster.absences``);
- it refuses connections (CONNACK 3 / 5.0 0x88, server unavailable) until it is back.

It is back when a heartbeat of its new run is written: it settles its ended runs (their
departure done, by itself or by the survivor that took it on), listens for frames again,
restores the sessions whose claims still name it, as at start-up, accepts connections
again, and writes its heartbeat at once, no longer fenced: the others take frames for it
from then on. It listens before it is back (the others' barriers for the replay of what they
parked come directly), so a frame from a member that never parked for it (one that sent it
nothing while it did not listen, and did not take it as gone) may come before it is: that
frame waits until it is back, then for its sessions' restoration, as at start-up, rather than
be refused (its publisher disconnected). Refusing it is not needed: it reaches only the
sessions this member restores (their claims name it, no survivor's), and what reaches them is
held with what was parked for them, one copy a message (``broker.cluster.replay``).

When: the others take a member as gone ``MISSED_BEATS`` of its intervals after the last
write of its entry they saw, on their own clocks; that write reached NATS after this member
began it. Counted from when the last write that succeeded began, nobody acts before
``MISSED_BEATS`` intervals (``seen_gone_at``), so this member fences itself one interval
earlier (``FENCE_AFTER_BEATS``): that interval is left for closing its connections and
committing its store, and covers the difference in clock rates and a late timer.

Only for what it knows: a heartbeat write still under way then, with NATS connected (a
slow write, or one begun late after a blocked event loop), may yet reach NATS in time. The
fencing waits for it until half an interval before the others may act (``last_chance``)
and does not happen if it was written; half an interval is left then for closing the
connections. A write that failed, or NATS known lost, fences at once.

A member whose process was stopped (SIGSTOP) or whose event loop was blocked past that
deadline reads what waited in its sockets (frames the others parked since, a take-over of a
session a survivor gave to its device, clients' packets) before its timer runs: every entry
point asks ``fenced_now`` first, which fences at once (no await) if it is due.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from broker.cluster.members import MISSED_BEATS, MemberRegistry
from broker.cluster.sessions import SessionClaims
from broker.cluster.will_entries import incarnation
from broker.cluster.wills import Wills
from broker.mqtt.codes import Reason
from broker.restore import Restoration
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_all_and_wait

if TYPE_CHECKING:
    from broker.cluster.router import ClusterRouter
    from broker.core import Broker

__all__ = [
    "FENCE_AFTER_BEATS", "Fencing", "fence_deadline", "last_chance", "must_fence", "seen_gone_at",
]  # fmt: skip

log = logging.getLogger(__name__)

FENCE_AFTER_BEATS: Final = MISSED_BEATS - 1
# Seconds a member back from fencing waits for the survivor that took its ended run on
# (publishing its wills, adopting its sessions) before it restores what is still its own.
SETTLE_WITHIN: Final = 30.0
REFUSAL: Final = "this node is cut off from the cluster"


def seen_gone_at(renewed: float, interval: float) -> float:
    """The earliest time another member may take this one as gone, when its last heartbeat
    written began at ``renewed`` (this member's loop time)."""
    return renewed + MISSED_BEATS * interval


def fence_deadline(renewed: float, interval: float) -> float:
    """When this member fences itself off if no heartbeat written began after ``renewed``:
    one interval before ``seen_gone_at``."""
    return renewed + FENCE_AFTER_BEATS * interval


def last_chance(renewed: float, interval: float) -> float:
    """Until when a heartbeat write under way at ``fence_deadline`` is waited for: half an
    interval before ``seen_gone_at``."""
    return seen_gone_at(renewed, interval) - interval / 2


def must_fence(now: float, renewed: float, interval: float) -> bool:
    return now >= fence_deadline(renewed, interval)


class Fencing:
    """This member's fencing: timed on its heartbeats (``MemberRegistry.on_renewed``)."""

    def __init__(
        self, members: MemberRegistry, wills: Wills, claims: SessionClaims, broker: "Broker"
    ) -> None:
        self.members = members
        self.wills = wills
        self.claims = claims
        self.broker = broker
        self.fencings = 0  # times this member fenced itself off
        self._renewed = members.renewed_at  # when the last heartbeat of this run began
        self._ended: list[str] = []  # runs ended by fencing, not settled yet
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()  # one change of state at a time
        self._tasks: set[asyncio.Task[None]] = set()
        self._rejoining: asyncio.Task[None] | None = None
        self._restoration: Restoration | None = None
        self.router: ClusterRouter | None = None  # takes frames again when it is back
        wills.claimed_at = claims.claimed_at  # a held will's client connecting again

    @property
    def fenced(self) -> bool:
        """Whether this member is fenced off: its heartbeats say so (``Member.fenced``)."""
        return self.members.fenced

    def start(self) -> None:
        self.members.on_renewed(self._heartbeat)
        self._arm()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await cancel_all_and_wait(self._tasks)
        if self._restoration is not None:
            await self._restoration.stop()

    def collect(self) -> Iterator[Metric]:
        """``/metrics``: whether this member is fenced off now, and how often it was."""
        yield GaugeMetricFamily(
            "nanoiot_cluster_fenced",
            "1 while this member is fenced off the cluster (cut off from NATS): it refuses "
            "connections and holds no sessions",
            value=int(self.fenced),
        )
        yield CounterMetricFamily(
            "nanoiot_cluster_fencings",
            "Times this member fenced itself off the cluster",
            value=self.fencings,
        )

    def _heartbeat(self, began: float, run: int) -> None:
        if run != self.members.run:
            return  # written before this member fenced itself off: that run is over
        self._renewed = max(self._renewed, began)
        self._arm()
        if not self.fenced:
            self.wills.back()  # NATS is back: the wills held meanwhile go out
        else:  # others' departures settled here, marked done (a member back waits for it)
            self.wills.mark_again()
        now = asyncio.get_running_loop().time()
        # A write that began too long ago (sent when NATS came back) would fence this member
        # again at once: the next one, begun on time, brings it back.
        stale = must_fence(now, self._renewed, self.members.interval)
        if self.fenced and self._rejoining is None and not stale:
            self._rejoining = self._spawn(self._rejoin())

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        deadline = fence_deadline(self._renewed, self.members.interval)
        self._timer = asyncio.get_running_loop().call_at(deadline, self._due)

    def _due(self) -> None:
        self._timer = None
        self._spawn(self._fence())

    def _spawn(self, work: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name="cluster fencing")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def fenced_now(self) -> bool:
        """Whether this member is fenced off, fencing it first if it is due and its timer has
        not run yet. Asked before acting on what comes in (a frame, a client's packets or its
        connection's end, a take-over request): after its process was stopped (SIGSTOP) or
        its event loop blocked, the loop reads what waits in its sockets before it runs its
        timers, and the others may have taken this run as gone meanwhile (a survivor holds
        its sessions, published its wills). Past ``fence_deadline`` it fences itself off
        before anything of that is acted on, unless a heartbeat write under way may still
        reach NATS in time (``_write_under_way``; the timer waits for it)."""
        if self.fenced:
            return True
        now = asyncio.get_running_loop().time()
        interval = self.members.interval
        if not must_fence(now, self._renewed, interval):
            return False
        writing = self.members.writing is not None and self.members.link.connected
        if writing and now < last_chance(self._renewed, interval):
            return False
        self._fence_now(now)
        return True

    async def _fence(self) -> None:
        if self.fenced:
            return
        await self._write_under_way()
        now = asyncio.get_running_loop().time()
        if not self.fenced and must_fence(now, self._renewed, self.members.interval):
            self._fence_now(now)

    def _fence_now(self, now: float) -> None:
        """Fence this member off: at once (no await), so that nothing read after this is
        routed into a session it held, nor ends a connection with its will."""
        self.members.fenced = True
        registry = self.broker.registry
        registry.refusing = REFUSAL
        self.fencings += 1
        self._ended.append(self.wills.incarnation)
        self.members.run += 1
        self.wills.fenced(
            incarnation(self.members.name, os.getpid(), self.members.started, self.members.run)
        )
        clients = list(registry.live_clients())
        log.warning(
            "fenced off the cluster: no heartbeat written for %.1f s (the others may take "
            "this node as gone after %g s): closing %d connections, giving up %d sessions, "
            "refusing connections until NATS is back", now - self._renewed,
            MISSED_BEATS * self.members.interval, len(clients), len(registry.sessions),
        )  # fmt: skip
        if self.claims.announcer is not None:
            # Its routes stay until it restored what is still its own (``RouteAnnouncer.keep``):
            # what is published meanwhile for a session nobody took must not match no route.
            self.claims.announcer.keep()
        for client in clients:
            client.kick(REFUSAL, Reason.USE_ANOTHER_SERVER)
        for session in list(registry.sessions.values()):
            registry.forget(session)  # its rows stay: another member adopts it
        if self.router is not None and self.router.replays is not None:
            self.router.replays.fenced()  # none reads on into this absence (``replay``)
        self._spawn(self._give_up_sessions())

    async def _write_under_way(self) -> None:
        """Wait for a heartbeat write under way while NATS is connected, at most until
        ``last_chance``: if it is written, there is no need to fence."""
        writing = self.members.writing
        if writing is None or not self.members.link.connected:
            return
        deadline = last_chance(self._renewed, self.members.interval)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(writing)  # the heartbeat's own, not to be cancelled

    async def _give_up_sessions(self) -> None:
        """The rest of the fencing, before any rejoining (``_lock``)."""
        async with self._lock:
            registry = self.broker.registry
            if registry.restoration is not None:
                await registry.restoration.stop()  # nothing more comes in from the store
            for session in list(registry.sessions.values()):
                registry.forget(session)  # restored meanwhile
            if self.router is not None:  # parked by their senders from now on
                await self.router.frames_in.stop_until_back()
            await self.broker.store.flush()  # what was acknowledged is there for it

    async def _rejoin(self) -> None:
        # Frames taken as it listens again wait until it is back (or not: refused then).
        rejoined = asyncio.get_running_loop().create_future()
        try:
            async with self._lock:
                if not self.fenced:
                    return
                try:
                    for run in list(self._ended):
                        await self.wills.run_ended(run, SETTLE_WITHIN)
                        self._ended.remove(run)
                except ClusterError as exc:
                    log.warning("not back in the cluster yet: %s", exc)  # next heartbeat
                    return
                try:
                    if self.router is not None:  # before the restore: parked ones replayed
                        await self.router.frames_in.take(rejoined)
                except ClusterError as exc:
                    log.warning("not back in the cluster yet: %s", exc)  # next heartbeat
                    return
                self.claims.read_holders_again()
                if self._restoration is not None:
                    await self._restoration.stop()
                self._restoration = self.broker.start_restoring()
                self.members.fenced = False
                self.members.beat_now()  # the others park for it until they see it back
                self.broker.registry.refusing = None
                self.wills.back()  # the wills of connects it could not keep
                log.info("back in the cluster as run %d: accepting connections, restoring "
                         "the sessions this node still holds", self.members.run)  # fmt: skip
                self._arm()  # fences again at once if the heartbeats stopped meanwhile
        finally:
            self._rejoining = None
            rejoined.set_result(None)
