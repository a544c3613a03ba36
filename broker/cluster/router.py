"""Routing across the cluster: the ``Router`` of a node that joined one (``broker.router``).

Interest-based: a message goes to this member's own subscribers (``LocalRouter``) and, once
per member, to each other member whose route table entry matches its topic
(``broker.cluster.routes``), in one frame per member and loop turn
(``broker.cluster.forward``). A member receiving a frame gives its messages to its own
subscribers only, so nothing is forwarded twice (``broker.cluster.frames_in``). A shared
subscription gets one copy cluster-wide: served on this member if it has members of the group
here, else by one other member in turn. ``$SYS`` topics stay on their node: each node
publishes its own figures.

Why a replicated route table rather than NATS subjects mapped from topics: the publishing
member must know which members it waits for before a QoS 1/2 acknowledgement, which a
subject's anonymous fan-out does not tell; one frame per member and turn also needs the
members named; and MQTT topics may hold what NATS subjects may not (``.``, spaces, empty
levels), and ``#`` also matches its parent level. The measured cost is in docs/scaling.md.
"""

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from broker.cluster.absences import Absences
from broker.cluster.compaction import Compaction
from broker.cluster.confirmations import all_of
from broker.cluster.forward import Forwarder
from broker.cluster.frames import Group
from broker.cluster.frames_in import FramesIn
from broker.cluster.handover import Handovers
from broker.cluster.kv import KeyValue
from broker.cluster.link import ClusterLink
from broker.cluster.members import BUCKET as MEMBERS
from broker.cluster.members import MISSED_BEATS, MemberRegistry
from broker.cluster.metrics import ClusterCollector
from broker.cluster.parked import ParkedFrames
from broker.cluster.replay import Replays
from broker.cluster.resend import DeliveredIds, Unrouted, route_again, route_first
from broker.cluster.retained import BUCKET as RETAINED
from broker.cluster.retained import RetainedReplica
from broker.cluster.routes import BUCKET, RouteAnnouncer, RouteTable
from broker.cluster.routes_seen import SEEN_WITHIN, RoutesSeen, at_most
from broker.cluster.seats import BUCKET as DEVICES
from broker.cluster.seats import DeviceSeats
from broker.cluster.sessions import BUCKET as CLIENTS
from broker.cluster.sessions import SessionClaims
from broker.cluster.shared_turns import SharedTurns
from broker.cluster.view import answer_where
from broker.cluster.will_entries import incarnation
from broker.cluster.wills import BUCKET as WILLS
from broker.cluster.wills import DEPARTURES, DEPARTURES_KEPT, Wills
from broker.mqtt.session import Outgoing, Subscription
from broker.peer import SessionKey
from broker.retained import RetainedStore
from broker.router import LocalRouter, Message
from broker.session_store import SessionStore
from broker.sessions import BrokerSession
from broker.will_routing import publish_stored_will
from nanoiot.errors import ClusterError
from nanoiot.members import Figures

if TYPE_CHECKING:
    from broker.registry import Registry

__all__ = ["ClusterRouter"]

log = logging.getLogger(__name__)

_SYSTEM = "$SYS/"
_SETTLE_WITHIN = 5.0  # seconds a stopping member waits for its wills' entries to go


def _first(name: str, members: MemberRegistry) -> bool:
    """Whether ``name`` is the lowest-named live member (not fenced off: cut off from NATS)."""
    return name <= min((m.name for m in members.live() if not m.fenced), default=name)


class ClusterRouter:
    def __init__(
        self,
        local: LocalRouter,
        link: ClusterLink,
        store: SessionStore,
        max_buffer: int,
        handover_window: float = 10.0,
        max_parked: int = 64 * 1024 * 1024,
        qos2_ids_kept: int = 100_000,
        replay_wait: float = 60.0,
        compaction: tuple[float, float] = (0.0, 1800.0),
    ) -> None:
        self.local = local
        self.link = link
        self.store = store
        self.table = RouteTable()
        self.forwarder = Forwarder(
            link, max_buffer, lambda member: self.absences.gone(member), replay_wait
        )
        self.absences = Absences(self.forwarder, link.member)
        self.parked = ParkedFrames(link, max_parked)
        self.replays: Replays | None = None
        self.delivered = DeliveredIds(qos2_ids_kept)  # QoS 2 ids (``broker.cluster.resend``)
        self.announcer: RouteAnnouncer | None = None
        self.routes_seen: RoutesSeen | None = None  # what a SUBACK waits for
        self.handovers: Handovers | None = None
        self._handover_window = handover_window
        # Cluster-wide message ids: this process's random half, then a count (a repeat
        # after 2**32 messages is far outside the moments ids are compared in).
        self._id_base = secrets.randbits(32) << 32
        self._count = 0
        self.retained: RetainedReplica | None = None
        self.claims: SessionClaims | None = None
        self.members: MemberRegistry | None = None
        self.wills: Wills | None = None
        self._pairs: set[tuple[str, SessionKey]] = set()  # (filter, session) subscribed here
        self._turns = SharedTurns()  # whose turn it is among each group's members
        self.forwarded = 0  # messages sent to other members (one per member)
        self.routed_again = 0  # QoS 2 messages sent again (``broker.cluster.resend``)
        self.frames_in = FramesIn(self, max_buffer)  # what the others send here
        self._compaction_every, self._markers_kept = compaction  # seconds
        self.compaction: Compaction | None = None
        self.seats: DeviceSeats | None = None  # max_sessions_per_device, cluster-wide
        self._devices: KeyValue | None = None

    async def start(self, retained: RetainedStore, registry: "Registry") -> None:
        """Learn the others' routes and the cluster's retained messages, listen for frames
        and take-overs, before any client connects."""
        bucket = await self.link.key_value(BUCKET)
        self.announcer = RouteAnnouncer(bucket, self.link.member, self.table)
        self.routes_seen = RoutesSeen(self.link, self.announcer, self._member_names)
        await self.routes_seen.start()  # before its table is read (``routes_seen``)
        await self.parked.start()
        self.forwarder.parking = self.parked
        await self.forwarder.start()
        await self.frames_in.take()
        await self.announcer.start()
        self.handovers = Handovers(
            self.link, self.forwarder, self.announcer, self.local, self._handover_window,
            self._member_names,
        )  # fmt: skip
        self.handovers.registry = registry
        self.replays = Replays(self.parked, self.announcer, self.local, self._handover_window)
        self.replays.registry = registry
        self.absences.replays = self.replays
        self.handovers.arrivals.replays = self.replays
        await self.handovers.start()
        self.retained = RetainedReplica(await self.link.key_value(RETAINED), retained)
        count = await self.retained.start()
        clients = await self.link.key_value(CLIENTS)
        self.claims = SessionClaims(self.link, clients, registry, self.announcer)
        self.claims.handovers = self.handovers
        self.claims.replays = self.replays
        self.wills = self.claims.wills = Wills(
            await self.link.key_value(WILLS),
            await self.link.key_value(DEPARTURES, ttl=DEPARTURES_KEPT),
            clients,
            incarnation(self.link.member, os.getpid(), self.link.started, 0),
            functools.partial(publish_stored_will, self, retained),
        )
        self.wills.adopt = self.claims.adopt
        await self.claims.start()
        registry.ownership = self.claims
        self._devices = devices = await self.link.key_value(DEVICES)
        self.compaction = Compaction(
            self.link.client, [bucket, clients, devices], self._compaction_every,
            self._markers_kept,
        )  # fmt: skip
        self.compaction.watched = {bucket.bucket}  # its markers noted by the table's watch
        self.claims.drop_ended = self.compaction.start()
        log.info("cluster: %d routes of %d other members, %d retained messages",
                 len(self.table), len(self.table.members()), count)  # fmt: skip

    async def start_members(
        self,
        interval: float,
        figures: Callable[[], Figures],
        mqtt_port: int,
        registry: "Registry",
    ) -> MemberRegistry:
        """This member's entry in the members bucket, its heartbeat, and the others'; and
        its answers to where devices are connected (``broker.cluster.view``)."""
        await answer_where(self.link, registry)
        bucket = await self.link.key_value(MEMBERS, ttl=interval * MISSED_BEATS)
        members = MemberRegistry(self.link, bucket, interval, figures, mqtt_port=mqtt_port)
        await members.start()
        self.members = members
        await self._caught_up()  # its entry written: no SUBACK elsewhere passes it over
        if self.routes_seen is not None:  # the others just started, asked before read
            self.routes_seen.entries = bucket.keys_now
        if self.wills is not None:  # a dead member's clients' wills, by one survivor
            wills = self.wills
            members.on_gone(wills.member_gone)
            wills.live = lambda process: any(  # a departure's creator (``departure.owner``)
                incarnation(m.name, m.pid, m.started, 0) == process for m in members.live()
            )
            wills.survivor.every = interval  # a settler looked at on each heartbeat
        if self.claims is not None:  # its claims are taken without asking it
            self.claims.is_gone = lambda name: not members.is_live(name)
            self.claims.until_back = members.until_live
        if self.handovers is not None and self.replays is not None:  # lagging barriers
            self.handovers.arrivals.heard = self.replays.heard = members.heard
        members.on_silent(self.forwarder.silent)  # its frames parked, not waited for
        if self.compaction is not None:  # one member purges: the lowest-named live one
            self.compaction.first = functools.partial(_first, self.link.member, members)
        if self._devices is not None:  # a device's sessions counted on every member
            self.seats = DeviceSeats(self._devices, members, registry.sessions.held_by)
            registry.sessions.changed = self.seats.changed
            registry.seats = self.seats
            for device_id in {key[0] for key in registry.sessions}:
                self.seats.changed(device_id)
            self.seats.start()
        self.absences.watch(members)  # parking ends; frames parked for it while away
        self.link.on_reconnected(self.absences.back_on_nats)
        return members

    async def _caught_up(self) -> None:
        """Until this member's table is as of the routes bucket's last revision now, read
        once its heartbeat entry is written, before any client connects: a SUBACK elsewhere
        that did not ask this member (its entry not in the members bucket yet when asked
        for) came for a route written before that read (``broker.cluster.routes_seen``)."""
        if self.announcer is None:
            return
        try:
            last = await self.announcer.bucket.last_revision()
            async with asyncio.timeout(SEEN_WITHIN):
                await self.announcer.reached(last)
        except (ClusterError, TimeoutError) as exc:  # NATS away: no write comes meanwhile
            log.warning("cluster: route table not caught up before taking clients (%s)",
                        type(exc).__name__)  # fmt: skip

    def _member_names(self) -> set[str]:
        """Every other member this one knows of: live, or with routes."""
        live = {m.name for m in self.members.live()} if self.members is not None else set()
        return live | self.table.members()

    async def stop(self) -> None:
        """Leave the cluster in an order that no survivor can catch half-way: its heartbeat
        stops, it stops taking frames (NATS answers their senders that nobody listens, and
        they park them), routes and answers those NATS sent it before, its store commits
        what its sessions wrote, and only then it deletes its members entry. A survivor that
        sees it gone (the entry deleted) and asks whether anything listens for it
        (``broker.cluster.silence``) finds nobody, and adopts its persistent sessions at once,
        as this member left them."""
        if self.compaction is not None:
            await self.compaction.stop()
        if self.seats is not None:  # its entry's deletion makes its seats count no more
            await self.seats.stop()
        if self.handovers is not None:
            await self.handovers.stop()
        if self.replays is not None:
            await self.replays.stop()
        if self.wills is not None:  # its connections closed: their wills' entries go first
            await self.wills.settle(_SETTLE_WITHIN)
        members, self.members = self.members, None
        if members is not None:  # its entry stays until it answered what it took
            await members.stop(leave=False)
        if self.wills is not None:  # no departure of another member starts here now
            await self.wills.stop()
        await self.frames_in.stop()  # routed first: what NATS sent
        await self.forwarder.stop()  # answers the frames taken (``broker.cluster.forward``)
        if members is not None:
            await self._committed()
            await members.leave()
        if self.routes_seen is not None:
            await self.routes_seen.stop()
        if self.announcer is not None:
            await self.announcer.stop()
        if self.retained is not None:
            await self.retained.stop()

    async def _committed(self) -> None:
        """Wait, at most ``_SETTLE_WITHIN`` seconds, until the store committed what this
        member's sessions wrote (their clients closed, their frames routed): the survivor that
        adopts them once it sees this member gone reads them there (``SessionClaims.adopt``)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SETTLE_WITHIN):
                await self.store.flush()

    def collector(self) -> ClusterCollector:
        """This member's cluster figures for ``/metrics``."""
        return ClusterCollector(self)

    @property
    def subscription_count(self) -> int:
        return self.local.subscription_count

    def subscribe(self, session: BrokerSession, topic_filter: str, sub: Subscription) -> None:
        self.local.subscribe(session, topic_filter, sub)
        pair = (topic_filter, session.key)
        if pair not in self._pairs and self.announcer is not None:
            self._pairs.add(pair)
            # A session restored or read from the store has no client yet: its entries are
            # written after those of the clients here (a connect waits for its own only,
            # ``ClusterSessions.settled``).
            self.announcer.add(topic_filter, later=session.client is None)

    def unsubscribe(self, session: BrokerSession, topic_filter: str) -> None:
        self.local.unsubscribe(session, topic_filter)
        pair = (topic_filter, session.key)
        if pair in self._pairs and self.announcer is not None:
            self._pairs.discard(pair)
            self.announcer.remove(topic_filter)

    def seen(self, filters: list[str], within: float) -> "asyncio.Future[None] | None":
        """Once the other members' route tables have ``filters`` (MQTT 3.1.1 and 5.0 §3.8.4:
        the SUBACK promises their messages, ``broker.cluster.routes_seen``), at most
        ``within`` seconds: a route NATS cannot take now is written later."""
        seen = self.routes_seen
        waiting = seen.seen_for(filters) if seen is not None else None
        return None if waiting is None else at_most(waiting, within)

    def publish_qos2(
        self, message: Message, session: BrokerSession, packet_id: int
    ) -> "bool | asyncio.Future[None]":
        return route_first(self, message, session, packet_id)

    def publish_again(
        self, message: Message, session: BrokerSession, packet_id: int
    ) -> "bool | asyncio.Future[None] | None":
        return route_again(self, message, session, packet_id)

    def publish(
        self, message: Message, record: Unrouted | None = None
    ) -> "bool | asyncio.Future[None]":
        """``record``: filled in with what routing it again would need."""
        self._count = count = (self._count + 1) & 0xFFFFFFFF
        message.id = self._id_base | count
        announcer = self.announcer
        if announcer is not None:
            message.routed_at = announcer.revision
        local = self.local
        durable = local.publish(message)
        topic = message.topic
        if topic.startswith(_SYSTEM):
            return durable
        plain = self.table.members_for(topic)
        groups = self._choose_for_groups(topic)
        if record is not None:
            record.message_id = message.id
            record.groups = {group: member for member, gs in groups.items() for group in gs}
            self.delivered.first(message.id, time.monotonic())
        handovers = self.handovers
        sent_on = (
            handovers.send_on_published(message, groups)
            if handovers is not None and handovers.departures
            else None
        )
        if local.waits:  # held for a session arriving here
            sent_on = (sent_on or []) + local.waits
            local.waits.clear()
        if not plain and not groups and not sent_on:
            return durable
        confirmations = sent_on or []
        if plain or groups:
            members = set(plain).union(groups) if groups else plain
            self.forwarded += len(members)
            confirmed = self.forwarder.forward(members, message, plain, groups)
            if confirmed is not None:
                confirmations.append(confirmed)
        if not confirmations:
            return durable
        committed = self.store.pending_commit() if durable else None
        if committed is not None:
            confirmations.append(committed)
        combined = all_of(confirmations)
        assert combined is not None
        return combined

    def _choose_for_groups(self, topic: str) -> dict[str, list[Group]]:
        """member -> the shared subscriptions it gets this message for: one member per
        group cluster-wide (MQTT 5.0 §4.8.2, ``broker.cluster.shared_turns``)."""
        remote = self.table.groups_for(topic)
        if not remote:
            return {}
        local = self.local.shared
        here = {(g.name, g.topic_filter) for g in local.match(topic)} if local.groups else ()
        moved = self.handovers.moved_groups if self.handovers is not None else None
        now = asyncio.get_running_loop().time() if moved else 0.0
        return self._turns.choose(remote, here, moved, now, self.forwarder.parked)

    def deliver(self, message: Message) -> bool:
        return self.local.deliver(message)

    def session_ended(self, gone: list[Outgoing]) -> None:
        """Shared subscription copies an ended session left go to another member of the
        group on this node (5.0 §4.8.2); a group with none here has them no more."""
        self.local.session_ended(gone)
