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

While this member cannot write the bucket (NATS lost), a will that falls due on it is held
back and published once NATS is back, exactly once, decided again first as a survivor decides
a dead member's will (``broker.cluster.held_wills``).

A will waiting for its delay on its member (the connection ended, MQTT 5 §3.1.3.2.2) keeps
its entry until it is published or dropped there (``BrokerSession.will_settled``), so that a
survivor publishes it if the member dies meanwhile.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Final

from broker.cluster.departure import DEPARTURES_KEPT, Live
from broker.cluster.frames import to_key
from broker.cluster.held_wills import HeldWills, taken_on_in_time
from broker.cluster.kv import KeyValue
from broker.cluster.survivor import Survivor
from broker.cluster.will_entries import StoredWill, delete_will, encode_will, stored_will
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
        self._unkept: dict[SessionKey, MqttClient] = {}  # connects whose will is not kept
        self._tasks: set[asyncio.Task[object]] = set()
        # While this member cannot write the bucket: the wills held back.
        member = incarnation.split(".", 1)[0]  # the value of the claims it makes
        self.held = HeldWills(claims, member, self.survivor, self._publish, self._spawn)

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
    def max_held(self) -> int:
        return self.held.max_held

    @max_held.setter
    def max_held(self, max_held: int) -> None:
        self.held.max_held = max_held

    @property
    def held_dropped(self) -> int:
        return self.held.dropped

    @property
    def claimed_at(self) -> Callable[[SessionKey], int | None]:
        return self.held.claimed_at

    @claimed_at.setter
    def claimed_at(self, claimed_at: Callable[[SessionKey], int | None]) -> None:
        self.held.claimed_at = claimed_at

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
            self.held.orphan(client, publish)
            return
        written = self._written.get(peer.key)
        if written is None or written[1] is not client:
            publish()
            return
        del self._written[peer.key]
        self._spawn(self._delete_then_publish(self._key(peer.key), written[0], publish, client))

    def back(self) -> None:
        """A heartbeat of this run was written: NATS is back, what was held goes out, and
        undecided departures are tried again."""
        self.survivor.try_again()
        orphans, held = self.held.taken()
        for publish in orphans:
            publish()
        for kv_key, (revision, publish) in held.items():
            self._spawn(self._delete_then_publish(kv_key, revision, publish))

    async def _delete_then_publish(
        self,
        kv_key: str,
        revision: int,
        publish: Callable[[], None],
        client: "MqttClient | None" = None,
    ) -> None:
        """``publish`` once the entry ``kv_key`` is gone; held if NATS cannot delete it
        (``client``: the connection whose will it is, held for the first time)."""
        run = self.incarnation
        try:
            await self.bucket.delete(kv_key, revision)
        except ClusterConflictError:
            pass  # a newer connection's entry: no departure publishes this will
        except ClusterError as exc:
            if run == self.incarnation:  # else fenced meanwhile: the run's departure does
                log.info("will held back until NATS is back: %s", exc)
                self.held.keep(kv_key, revision, publish, client)
            return
        publish()

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
        self.held.fenced(self._unkept.values())
        self._unkept.clear()
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

    def _publish(self, will: StoredWill) -> None:
        self.publish(will)  # as set when the will goes out (it may be set after ``__init__``)

    def _key(self, key: SessionKey) -> str:
        return f"{self.incarnation}.{to_key(store_key(key))}"
