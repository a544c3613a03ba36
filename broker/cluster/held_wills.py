"""Wills a member holds back while it cannot write the wills bucket (``broker.cluster.wills``).

While this member cannot write the bucket (NATS lost, before it fences itself off or comes
back), a will that falls due on it is published exactly once whichever way the outage ends:

- its entry is in the bucket: the entry is deleted first and the will published once that
  delete succeeded (or found a newer connection's entry). A delete that fails holds the will
  back (``keep``): retried on each heartbeat this run writes (NATS back before the fencing:
  published here, its entry gone); dropped here when this member fences itself off, since
  the entry stays for the departure of the run that ended, which publishes it (by a
  survivor, or by this member once back). Whoever removes the entry publishes the will.
- its connect could not claim its session or keep its will (``orphan``): no survivor knows
  of it, so it is this member's alone. It is held until a heartbeat of this member is
  written again (NATS back), then published, after the fencing too: a connection the
  fencing closes (without its will, 0x9C) has its will held the same way (``fenced``), a
  5.0 will with a delay waiting what is left of it from the fencing (``_late``). If its
  client connects again meanwhile, to any member (a claim of its session other than this
  member's last one before the fencing, or an adoption of it), the will is decided as a
  survivor decides one: published at once if that connect had Clean Start (the session
  ends), dropped if not (§3.1.3.2.2), unless that connect came once the delay had ended
  while this member was fenced off: the will was due then, and is published late
  (``taken_on_in_time``: when NATS wrote the claim against when the delay ended).

Either way such a will is in no session's waiting will while held, so a revocation does not
drop it then (``broker.revocation``): just before it is published it is decided again, as a
survivor decides a dead member's (``broker.cluster.will_decision``), and dropped if its
device would be refused now (revoked, disabled, deleted).

What is held is bounded (``cluster_max_held_wills``); past it a will is dropped and counted.

What must not import: the broker's client module at run time (its clients are only read).
"""

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from broker.cluster.claim_value import came_back, connect_revision, holder_of, is_adoption
from broker.cluster.frames import to_key
from broker.cluster.kv import KeyValue
from broker.cluster.survivor import Survivor
from broker.cluster.will_entries import StoredWill, ends_session, stored_will
from broker.peer import SessionKey, store_key
from nanoiot.errors import ClusterError

if TYPE_CHECKING:
    from broker.client import MqttClient

__all__ = ["HeldWills", "taken_on_in_time"]

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[object, object, object]], None]


class HeldWills:
    """The wills held back here (at most ``max_held``), published once NATS is back."""

    def __init__(
        self,
        claims: KeyValue,
        member: str,
        survivor: Survivor,
        publish: Callable[[StoredWill], None],
        spawn: Spawn,
    ) -> None:
        self.claims = claims
        self.member = member  # the value of the claims this member makes
        self.survivor = survivor  # decides a will again (``refusal``) and counts refusals
        self.publish = publish
        self._spawn = spawn
        self.max_held = 1000
        self.dropped = 0  # wills dropped past ``max_held``
        # The revision of this member's last claim of a session (None: none it knows of).
        self.claimed_at: Callable[[SessionKey], int | None] = lambda _key: None
        self._held: dict[str, tuple[int, Callable[[], None]]] = {}  # kv key: entry to delete
        self._orphans: list[Callable[[], None]] = []  # wills no survivor knows of

    def keep(
        self,
        kv_key: str,
        revision: int,
        publish: Callable[[], None],
        client: "MqttClient | None" = None,
    ) -> None:
        """The delete of the entry ``kv_key`` (at ``revision``) failed: ``publish`` held
        until it is deleted once NATS is back. ``client``: the connection whose will it is,
        held for the first time (held again, ``publish`` decides it already)."""
        if client is not None:
            publish = self._decided_first(client, publish)
        self._hold(lambda _: self._held.update({kv_key: (revision, publish)}), publish, kv_key)

    def orphan(self, client: "MqttClient", publish: Callable[[], None]) -> None:
        """``client``'s will, which no survivor knows of, fell due: held until NATS is back."""
        self._hold(self._orphans.append, self._decided_first(client, publish), client.label)

    def _decided_first(
        self, client: "MqttClient", publish: Callable[[], None]
    ) -> Callable[[], None]:
        """``publish``, once ``client``'s will is decided again (``_refused``): held, it is
        in no session, out of a revocation's reach (a device revoked while NATS was lost)."""
        will = None if self.survivor.refusal is None else stored_will(client, 0)
        return publish if will is None else functools.partial(self._spawn_decided, will, publish)

    def taken(self) -> tuple[list[Callable[[], None]], dict[str, tuple[int, Callable[[], None]]]]:
        """NATS is back: the orphans to publish, and the entries to delete then publish."""
        orphans, self._orphans = self._orphans, []
        held, self._held = self._held, {}
        return orphans, held

    def fenced(self, unkept: Iterable["MqttClient"]) -> None:
        """The fencing closes the ``unkept`` connections without their wills, which no
        departure knows of: held until this member is back. Each with the revision of the
        claim this member made for its session last (its connect could not make one), if
        any: a later claim is its client coming back (``_late``). The held wills whose entry
        stays go to the departure of the run that ended."""
        now, wall = asyncio.get_running_loop().time(), time.time()
        for client in unkept:
            peer = client.peer
            since = None if peer is None else self.claimed_at(peer.key)
            will = None if client.ended else stored_will(client, since or 0)
            if will is not None:
                will = replace(will, due=wall + will.delay) if will.delay else will
                publish = functools.partial(self._spawn_late, will, now)
                self._hold(self._orphans.append, publish, client.label)
        self._held.clear()

    def _hold(
        self, keep: Callable[[Callable[[], None]], object], publish: Callable[[], None], what: str
    ) -> None:
        if len(self._held) + len(self._orphans) < self.max_held:
            keep(publish)
            return
        self.dropped += 1
        log.warning("will of %s dropped: %d held already while NATS is lost", what, self.max_held)

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
