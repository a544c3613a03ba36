"""Wills that outlive their node: a dead member's clients' wills published by a survivor.

A client's will (MQTT 3.1.1 §3.1.2.5) is published by its member when the connection ends
without DISCONNECT. A member killed outright publishes nothing, so each connect that carries
a will writes it, before its CONNACK, to the JetStream key-value bucket ``<cluster>_wills``
under ``<run>.<session>`` (``<session>``: the claim's key; ``<run>``: ``<member>.<pid>``, with
``-<n>`` after the member's n-th fencing, ``incarnation``), with the revision of the
session's claim in ``<cluster>_clients``. The entry is deleted when the connection's will is
settled (its member published it, or the client said DISCONNECT), at the revision written, so
that a newer connection's entry stays.

When the member registry (``broker.cluster.members``) reports a member gone, every survivor
tries to create ``<run>`` in ``<cluster>_departures``; the one that succeeds (a
compare-and-set: exactly one, as the entry names it: ``broker.cluster.departure``; while that
is unknown, tried again after each heartbeat written, for ``DEPARTURE_TRIED`` seconds at
most) reads that run's will entries and publishes each: their
connections ended without DISCONNECT when the member died (§3.1.2.5; a connection taken over
before had its will published by its member). A 5.0 will with a delay waits for it first:
the smaller of the Will Delay Interval and the session expiry interval, counted from when the
death was noticed; if the session's claim changes meanwhile (its client connected again),
it is published at once if that connect ended the session (Clean Start, as the claim says:
``broker.cluster.claim_value``), and dropped if it took the session on (§3.1.3.2.2); an
adoption's claim is not its client connecting again, whoever adopted the session. Then
the entry is deleted, and the same survivor adopts the dead member's persistent sessions
(``SessionClaims.adopt``), unless the member came back, and marks the departure done
(``broker.cluster.survivor``, which also says what happens to a departure whose survivor dies
before it is done).

A member that fences itself off (``broker.cluster.fence``: cut off from NATS) closes its
connections without their wills and keeps their entries: its run ends there, and the wills
are settled by that run's departure, like a dead member's. It does not delete them when the
connections end (``fenced``), and writes new ones under its next run. When it is back it
tries to create that departure itself (``run_ended``: a cluster of one has no survivor); if
a survivor won, it waits until that survivor marked it done, so that it never restores a
session the survivor is adopting. Either way each will is published once.

While this member cannot write the bucket (NATS lost, before it fences itself off or comes
back), a will that falls due on it is published exactly once whichever way the outage ends:

- its entry is in the bucket: the entry is deleted first and the will published once that
  delete succeeded (or found a newer connection's entry). A delete that fails holds the will
  back: retried on each heartbeat this run writes (NATS back before the fencing: published
  here, its entry gone); dropped here when this member fences itself off, since the entry
  stays for the departure of the run that ended, which publishes it (by a survivor, or by
  this member once back). Whoever removes the entry publishes the will.
- its connect could not claim its session or keep its will (``unkept``): no survivor knows
  of it, so it is this member's alone. It is held until a heartbeat of this member is
  written again (NATS back), then published, after the fencing too: a connection the
  fencing closes (without its will, 0x9C) has its will held the same way, a 5.0 will with a
  delay waiting what is left of it from the fencing (``_late``). If its client connects
  again meanwhile, to any member (a claim of its session other than this member's last one
  before the fencing, or an adoption of it), the will is decided as a survivor decides
  one: published at once if that connect had Clean Start (the session ends), dropped if
  not (§3.1.3.2.2), unless that connect came once the delay had ended while this member
  was fenced off: the will was due then, and is published late (``taken_on_in_time``:
  when NATS wrote the claim against when the delay ended).

Either way such a will is in no session's waiting will while held, so a revocation does not
drop it then (``broker.revocation``): just before it is published it is decided again, as a
survivor decides a dead member's (``broker.cluster.will_decision``), and dropped if its
device would be refused now (revoked, disabled, deleted).

What is held is bounded (``cluster_max_held_wills``); past it a will is dropped and counted.

A will waiting for its delay on its member (the connection ended, MQTT 5 §3.1.3.2.2) keeps
its entry until it is published or dropped there (``BrokerSession.will_settled``), so that a
survivor publishes it if the member dies meanwhile.
"""

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from broker.cluster.claim_value import came_back, connect_revision, holder_of, is_adoption
from broker.cluster.departure import DEPARTURES_KEPT, Live
from broker.cluster.frames import to_key
from broker.cluster.kv import KeyValue
from broker.cluster.survivor import Survivor
from broker.cluster.will_entries import (
    StoredWill,
    delete_will,
    encode_will,
    ends_session,
    stored_will,
)
from broker.peer import SessionKey, store_key
from nanoiot.errors import ClusterConflictError, ClusterError
from nanoiot.members import Member
from nanoiot.tasks import cancel_all_and_wait

if TYPE_CHECKING:
    from broker.client import MqttClient

__all__ = [
    "BUCKET", "DEPARTURES", "DEPARTURES_KEPT", "StoredWill", "Wills", "taken_on_in_time",
]  # fmt: skip

log = logging.getLogger(__name__)

BUCKET: Final = "wills"
DEPARTURES: Final = "departures"


class Wills:
    """The wills of this member's connections as the cluster keeps them, and (its
    ``survivor``) those of the departures this member settles."""

    def __init__(
        self,
        bucket: KeyValue,
        departures: KeyValue,
        claims: KeyValue,
        incarnation: str,
        publish: Callable[[StoredWill], None],
    ) -> None:
        self.survivor = Survivor(bucket, departures, claims, incarnation, publish)
        self.bucket = bucket
        self.claims = claims
        self.incarnation = incarnation  # this run's prefix (``incarnation``)
        self.publish = publish
        self._written: dict[SessionKey, tuple[int, MqttClient]] = {}
        self.member = incarnation.split(".", 1)[0]  # the value of the claims it makes
        # While this member cannot write the bucket: wills held back (at most max_held), and
        # those dropped past it.
        self.max_held = 1000
        self.held_dropped = 0
        # The revision of this member's last claim of a session (None: none it knows of).
        self.claimed_at: Callable[[SessionKey], int | None] = lambda _key: None
        self._unkept: dict[SessionKey, MqttClient] = {}  # connects whose will is not kept
        self._held: dict[str, tuple[int, Callable[[], None]]] = {}  # kv key: entry to delete
        self._orphans: list[Callable[[], None]] = []  # wills no survivor knows of
        self._tasks: set[asyncio.Task[object]] = set()

    # What the survivor is told and says, as the cluster's other parts reach it here.
    @property
    def adopt(self) -> Callable[[str], Awaitable[object]] | None:
        return self.survivor.adopt

    @adopt.setter
    def adopt(self, adopt: Callable[[str], Awaitable[object]] | None) -> None:
        self.survivor.adopt = adopt

    @property
    def live(self) -> Live:
        return self.survivor.live

    @live.setter
    def live(self, live: Live) -> None:
        self.survivor.live = live

    @property
    def creator(self) -> bytes:
        return self.survivor.creator

    @property
    def published(self) -> int:
        return self.survivor.published

    @property
    def refused(self) -> int:
        return self.survivor.refused

    def member_gone(self, member: Member) -> None:
        self.survivor.member_gone(member)

    def claimed_again(self, key: SessionKey) -> None:
        self.survivor.claimed_again(key)

    async def run_ended(self, run: str, within: float) -> None:
        await self.survivor.run_ended(run, within)

    def mark_again(self) -> None:
        self.survivor.mark_again()

    async def written(self, client: "MqttClient", claim: int) -> None:
        """Keep ``client``'s will where a survivor finds it (before its CONNACK)."""
        will = stored_will(client, claim)
        if will is None:
            return
        try:
            revision = await self.bucket.put(self._key(will.key), encode_will(will))
        except ClusterError as exc:
            log.warning("will of %s not kept in the cluster: %s", client.label, exc)
            self.unkept(client)
            return
        self._written[will.key] = (revision, client)

    def unkept(self, client: "MqttClient") -> None:
        """``client``'s connect could not claim its session or keep its will: its will is
        this member's alone (held until NATS is back, if it falls due before)."""
        if client.peer is not None and client.core.will is not None and not client.ended:
            self._unkept[client.peer.key] = client

    def due(self, client: "MqttClient", publish: Callable[[], None]) -> None:
        """``client``'s will falls due here (§3.1.2.5): ``publish`` it once its entry is
        gone, so that no departure publishes it again; held while that cannot be known."""
        peer = client.peer
        if peer is None:
            publish()
            return
        if self._unkept.get(peer.key) is client:
            del self._unkept[peer.key]
            will = None if self.survivor.refusal is None else stored_will(client, 0)
            if will is not None:  # decided again once NATS is back, before it goes out
                publish = functools.partial(self._spawn_decided, will, publish)
            self._hold(self._orphans.append, publish, client.label)
            return
        written = self._written.get(peer.key)
        if written is None or written[1] is not client:
            publish()
            return
        del self._written[peer.key]
        self._spawn(self._delete_then_publish(self._key(peer.key), written[0], publish))

    def back(self) -> None:
        """A heartbeat of this run was written: NATS is back, what was held goes out, and
        undecided departures are tried again."""
        self.survivor.try_again()
        orphans, self._orphans = self._orphans, []
        held, self._held = self._held, {}
        for publish in orphans:
            publish()
        for kv_key, (revision, publish) in held.items():
            self._spawn(self._delete_then_publish(kv_key, revision, publish))

    async def _delete_then_publish(
        self, kv_key: str, revision: int, publish: Callable[[], None]
    ) -> None:
        run = self.incarnation
        try:
            await self.bucket.delete(kv_key, revision)
        except ClusterConflictError:
            pass  # a newer connection's entry: no departure publishes this will
        except ClusterError as exc:
            if run == self.incarnation:  # else fenced meanwhile: the run's departure does
                log.info("will held back until NATS is back: %s", exc)
                self._hold(lambda _: self._held.update({kv_key: (revision, publish)}),
                           publish, kv_key)  # fmt: skip
            return
        publish()

    def _hold(
        self, keep: Callable[[Callable[[], None]], object], publish: Callable[[], None], what: str
    ) -> None:
        if len(self._held) + len(self._orphans) < self.max_held:
            keep(publish)
            return
        self.held_dropped += 1
        log.warning("will of %s dropped: %d held already while NATS is lost", what, self.max_held)

    def _fenced_orphans(self) -> None:
        """The fencing closes these connections without their wills, which no departure
        knows of: held until this member is back. Each with the revision of the claim this
        member made for its session last (its connect could not make one), if any: a later
        claim is its client coming back (``_late``)."""
        now, wall = asyncio.get_running_loop().time(), time.time()
        for client in self._unkept.values():
            peer = client.peer
            since = None if peer is None else self.claimed_at(peer.key)
            will = None if client.ended else stored_will(client, since or 0)
            if will is not None:
                will = replace(will, due=wall + will.delay) if will.delay else will
                publish = functools.partial(self._spawn_late, will, now)
                self._hold(self._orphans.append, publish, client.label)
        self._unkept.clear()

    def _spawn_late(self, will: StoredWill, fenced_at: float) -> None:
        self._spawn(self._late(will, fenced_at))

    def _spawn_decided(self, will: StoredWill, publish: Callable[[], None]) -> None:
        self._spawn(self._decided(will, publish))

    async def _decided(self, will: StoredWill, publish: Callable[[], None]) -> None:
        if not await self._refused(will):
            publish()

    async def _refused(self, will: StoredWill) -> bool:
        """Whether ``will``'s connection would be refused now (a will held here is in no
        session, out of a revocation's reach): then dropped, counted with the survivor's."""
        decide = self.survivor.refusal
        refusal = None if decide is None else await decide(will)
        if refusal is not None:
            self.survivor.refused += 1
            log.warning("will of session %s dropped: %s", store_key(will.key), refusal)
        return refusal is not None

    async def _late(self, will: StoredWill, fenced_at: float) -> None:
        """Publish the will of a connection the fencing closed, once what is left of its
        delay passed, or at once when its client connects again with Clean Start, which ends
        the session; dropped if its client connects again without before the delay ended
        (§3.1.3.2.2, ``taken_on_in_time``), or if its device would be refused now
        (``_refused``)."""
        kv_key = to_key(store_key(will.key))
        try:
            left = will.delay - (asyncio.get_running_loop().time() - fenced_at)
            claim = await self._claim_after(kv_key, will.claim, left) if will.delay else None
        except ClusterError as exc:
            log.warning("will of session %s not published: %s", store_key(will.key), exc)
            return
        if claim is not None and taken_on_in_time(*claim, will.due):
            log.info("will of session %s dropped: its client took the session on before its "
                     "delay ended", store_key(will.key))  # fmt: skip
            return
        if not await self._refused(will):
            self.publish(will)

    async def _claim_after(
        self, kv_key: str, since: int, within: float
    ) -> tuple[bytes, float | None] | None:
        """The claim of a connect of the session's client after its claim at revision
        ``since`` (0: not known), within ``within`` seconds, and when NATS wrote it; None if
        none came. Not known, a claim this member made before (for an earlier connection)
        is not one, nor an adoption of it (``claim_value``): a survivor took the session,
        not its client. Of claims made while this member was fenced off, the last is known
        (the bucket keeps one value a key)."""
        watch = await self.claims.watch(kv_key)
        try:
            value = None
            while (change := await watch.value()) is not None:
                value = change[1]  # the claim as it is: the last given
            if value is not None:
                if not since and (holder_of(value) == self.member or is_adoption(value)):
                    since = connect_revision(value, watch.revision)
                elif came_back(value, watch.revision, since):
                    return value, watch.written_at
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(within, 0.0)):  # the Will Delay Interval itself
                    while True:
                        change = await watch.value()
                        value = None if change is None else change[1]
                        if value is not None and came_back(value, watch.revision, since):
                            return value, watch.written_at
        finally:
            await watch.stop()
        return None

    def ended(self, client: "MqttClient") -> None:
        """The connection ended: its member took care of its will."""
        peer = client.peer
        if peer is None:
            return
        if self._unkept.get(peer.key) is client:
            del self._unkept[peer.key]
        written = self._written.get(peer.key)
        if written is None or written[1] is not client:
            return
        del self._written[peer.key]
        self._spawn(delete_will(self.bucket, self._key(peer.key), written[0]))

    def fenced(self, run: str) -> None:
        """This member fenced itself off: the entries of its connections stay for the
        departure of the run that ends (their connections are closed without their wills);
        those it writes from now on are under ``run``. Held wills whose entry stays go to
        that departure too; the wills of connects it could not keep stay held."""
        self._fenced_orphans()
        self._held.clear()
        self._written.clear()
        self.incarnation = run

    async def settle(self, within: float) -> None:
        """Wait, at most ``within`` seconds, for what this member has under way: above all
        the deletes of the wills of connections it just closed, so that when it leaves the
        cluster (a clean stop) its departure finds none of them to publish."""
        waits: list[Awaitable[object]] = [self.survivor.settle(within)]
        if self._tasks:
            waits.append(asyncio.wait(set(self._tasks), timeout=within))
        await asyncio.gather(*waits)

    async def stop(self) -> None:
        await self.survivor.stop()
        await cancel_all_and_wait(self._tasks)

    def _spawn(self, work: Coroutine[object, object, object]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _key(self, key: SessionKey) -> str:
        return f"{self.incarnation}.{to_key(store_key(key))}"


def taken_on_in_time(claim: bytes, written_at: float | None, due: float | None) -> bool:
    """Whether the connect that made ``claim``, written to NATS at ``written_at`` (seconds
    since the epoch), cancels a delayed will due at ``due``: it took the session on (no Clean
    Start) before the delay ended ([MQTT-3.1.3-9]). One made once the will was due does not:
    the will went when the delay passed, whichever came first of that and the session's end
    (5.0 §3.1.3.2.2). The times are two hosts' clocks, the NATS server's and this member's,
    kept in step (NTP) as a survivor's ``due`` assumes. An adoption's claim says when the
    adoption was written, not the connect it names: its Clean Start alone decides."""
    if ends_session(claim):
        return False
    if written_at is None or due is None or is_adoption(claim):
        return True
    return written_at < due
