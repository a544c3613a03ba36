"""One live connection per session across the cluster (MQTT 3.1.1 §3.1.4, take-over), and
which member holds each persistent session.

Each connect claims its session key (device id, client id) in the JetStream key-value bucket
``<cluster>_clients`` by compare-and-set, with this member's name as the value, before its
CONNACK, and whether the connect has Clean Start (``broker.cluster.claim_value``: a
survivor holding a dead member's delayed will for the session reads it). When the key named
another member, that member is asked
(``<cluster>.takeover.<member>``, request/reply) to close its connections on the session and
give the session up, and the CONNACK waits for its answer. Of two connects racing on two
members, the later compare-and-set wins and the earlier is closed: exactly one stays. A
member that does not answer within the request timeout is taken to be gone. The request
names the revision it replaced, so that it closes the connection that wrote it and never a
newer one; a request read before the answer to this member's own compare-and-set (NATS handed
both over at once) waits for that claim to be remembered, as it may name it. It says whether
the connect has Clean Start ("clean"): the connection closed has its will published only if
that ends the session, as on one member (``BrokerSession.ends_with_connect``).

The claim stays after the client disconnects: the member it names holds the session while
its client is away (it alone keeps it in memory, queues its messages and routes for it), and
restores it after its own restart (``owned``). Giving a session up (``_close``) is: close the
connection, drop the session from memory (its filters leave the route table when no other
session here uses them), wait until the store has committed everything written for it, then
answer, with the packet ids of the client's QoS 2 messages awaiting PUBREL (§4.3.3: the store
has them too; members of earlier versions learn them only from the answer). The claiming
member then reads the session from the shared store (``Registry.moved_here``), takes those
ids, and announces its filters before the CONNACK. A
claim that another member's take-over replaced while the session was being read leaves the
session to that member (``holds``). A session adopted from a gone member (``adopt``) and
taken from here before the gone member's parked frames were all given to it (from the
adopter's claim, while it is still read, until its replay ended) takes them along: the answer
names that member and a pin on its frames, and the claiming member reads them for it
(``Owed.handing_over``, ``Replays.taken_with``).

A session that ended with its connection (Clean Session, or a 5.0 expiry of 0) has its
claim deleted at that connect's revision (a newer claim stays) when the buckets are compacted
(``broker.cluster.compaction`` purges the marker left); without compaction it stays.

If NATS cannot be reached the connect goes on without the claim (a device keeps connecting
while NATS is away), with what this member has, logged; exclusivity across members then
returns with NATS.
"""

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from broker.cluster.adoption import adopt, read_holders
from broker.cluster.claim_value import claim_value, holder_of
from broker.cluster.frames import to_key
from broker.cluster.handover import Handovers
from broker.cluster.kv import KeyValue
from broker.cluster.link import ClusterLink
from broker.cluster.replay import Replays
from broker.cluster.resend import Unrouted, handed_over, read_handed_over, taken_over
from broker.cluster.routes import RouteAnnouncer
from broker.cluster.silence import UntilBack
from broker.cluster.wills import Wills
from broker.peer import SessionKey, store_key
from nanoiot.errors import ClusterConflictError, ClusterError, ClusterUnavailableError

if TYPE_CHECKING:
    from broker.client import MqttClient
    from broker.registry import Registry
    from broker.sessions import BrokerSession

__all__ = ["BUCKET", "SessionClaims"]

log = logging.getLogger(__name__)

BUCKET: Final = "clients"
_ATTEMPTS: Final = 5  # compare-and-set rounds lost to other members before giving up
_REMEMBERED: Final = 100_000  # claims kept before those of ended connections are dropped
# Sessions nobody claimed (stored before the cluster) claimed this many at a time as they are
# restored: one after the other, 5,000 took 3.1 s on a 2-core machine, 64 at a time 2.3 s (the
# NATS client's CPU per request is most of it, not the round trip); the window bounds what
# this member asks of NATS at once.
_CLAIM_WINDOW: Final = 64


class SessionClaims:
    def __init__(
        self,
        link: ClusterLink,
        bucket: KeyValue,
        registry: "Registry",
        announcer: RouteAnnouncer | None = None,
    ) -> None:
        self.link = link
        self.bucket = bucket
        self.registry = registry
        self.announcer = announcer
        self.handed_over = 0  # persistent sessions given up to another member
        self.adopted = 0  # persistent sessions of dead members taken in
        self.wills: Wills | None = None  # where connects keep their wills for survivors
        self.handovers: Handovers | None = None  # what was routed to a moving session
        self.replays: Replays | None = None  # what was parked for a gone member's sessions
        self._restored: list[BrokerSession] = []  # restored here, waiting for their replay
        # Done once this member's sessions are restored at start-up.
        self._restored_all: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Whether a member is known to be gone (``broker.cluster.members``): its claims are
        # taken without asking it.
        self.is_gone: Callable[[str], bool] = lambda _member: False
        # Until a gone member is live again, or the seconds given at most (its heartbeat).
        self.until_back: UntilBack = lambda _member, within: asyncio.sleep(within)
        self._holders: dict[str, str] | None = None  # kv key -> member, read at start-up
        # Sessions handed over with QoS 2 messages awaiting PUBREL: their packet ids, until
        # the connect that claimed them takes them (right after its claim).
        self._awaiting: dict[SessionKey, set[int]] = {}
        self._unrouted: dict[SessionKey, dict[int, Unrouted]] = {}  # ``broker.cluster.resend``
        self.taken_away = 0  # connections closed here for a connect on another member
        # Session -> the revision of this member's last claim and the connection that made
        # it: a take-over request closes that connection only if it overwrote that claim,
        # never a newer connection here whose own claim comes later.
        self._claimed: dict[SessionKey, tuple[int, MqttClient]] = {}
        self._claiming: dict[SessionKey, asyncio.Event] = {}  # set once claimed (``_close``)
        # Whether a clean session's claim is deleted when it ends: with compaction only, which
        # purges the delete markers (``broker.cluster.compaction``).
        self.drop_ended = False
        self._dropping: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.link.subscribe(self.link.subject("takeover", self.link.member), self._close)

    async def claim(self, client: "MqttClient", clean: bool) -> bool:
        """``client`` holds its session now; the member that held it closed its connection
        (its will published if ``clean``, the connect's Clean Start, ends the session) and
        gave the session up. True if the session was not this member's before."""
        assert client.peer is not None
        key = client.peer.key
        member = self.link.member
        self._claiming[key] = asyncio.Event()  # connects on one session take turns (Registry)
        try:
            previous, revision = await self._swap(key, claim_value(member, clean))
            self._remember(key, revision, client)
        except ClusterError as exc:
            log.warning("session %s not claimed in the cluster: %s", store_key(key), exc)
            if self.wills is not None:  # no survivor would publish its will
                self.wills.unkept(client)
            return False
        finally:
            self._claiming.pop(key).set()
        if self.wills is not None:
            await self.wills.written(client, revision)
        if previous is None or not previous[0]:
            return True  # nobody held it, or a claim naming no member (``read_claim``)
        if previous[0] == member:
            if self.wills is not None:  # a dead member's will waiting here decides now
                self.wills.claimed_again(key)
            return False
        request = json.dumps(
            {"key": list(key), "revision": previous[1], "member": member, "clean": clean}
        ).encode()
        subject = self.link.subject("takeover", previous[0])
        if self.handovers is not None:
            self.handovers.arriving(key, previous[0])
        if self.is_gone(previous[0]):
            # Not waited for: a dead member never answers. A member that only stalled reads
            # the request when it runs again (NATS kept it) and gives the session up then.
            log.info("session %s was held by member %s, which is gone", store_key(key),
                     previous[0])  # fmt: skip
            with contextlib.suppress(ClusterError):
                await self.link.publish(subject, request)
            await self._from_gone(key, previous[0])
            return True
        try:
            answer = await self.link.request(subject, request)
        except ClusterUnavailableError as exc:
            log.info("member %s did not answer for session %s (%s): taken as gone",
                     previous[0], store_key(key), exc)  # fmt: skip
            await self._from_gone(key, previous[0])
            return True
        awaiting, unrouted, parked = read_handed_over(answer)
        if parked is not None and self.replays is not None:
            # Its former member had not given it a gone member's parked frames yet.
            await self.replays.taken_with(key, *parked)
            if self.handovers is not None:
                self.handovers.arrivals.from_gone(key, parked[0], answered=True)
        if awaiting:
            self._awaiting[key] = awaiting
        if unrouted:
            self._unrouted[key] = unrouted
        return True

    async def _from_gone(self, key: SessionKey, member: str) -> None:
        """Taken from gone ``member``: its parked frames pinned, given (``Replays``)."""
        if self.replays is not None:
            await self.replays.pin_taken(key, member)
        if self.handovers is not None:
            self.handovers.arrivals.from_gone(key, member)

    def restored(self, sessions: list["BrokerSession"]) -> None:
        """This member's own sessions, restored (at start or after fencing): what was
        parked for it while it was away is theirs (``broker.cluster.replay``)."""
        if self.replays is not None:
            self.replays.hold(sessions)
            self._restored += sessions

    def restoring(self) -> "asyncio.Future[None] | None":
        """Done once this member's own sessions are restored (at start-up, or after it
        fenced itself off); None if they are."""
        if not self._restored_all.done():
            return self._restored_all
        restoration = self.registry.restoration
        return restoration.pending() if restoration is not None else None

    def restoration_done(self) -> None:
        if not self._restored_all.done():
            self._restored_all.set_result(None)
        if self.announcer is not None:
            self.announcer.drop_leftovers()
        if self.replays is not None:
            restored, self._restored = self._restored, []
            self.replays.start(self.link.member, restored, purge=True)

    def holds(self, key: SessionKey) -> bool:
        return key in self._claimed

    def claimed_at(self, key: SessionKey) -> int | None:
        """The revision of this member's last claim of ``key`` (None: none it knows of)."""
        claimed = self._claimed.get(key)
        return None if claimed is None else claimed[0]

    def awaiting_pubrel(self, key: SessionKey) -> set[int]:
        return self._awaiting.pop(key, set())

    def ended(self, client: "MqttClient") -> None:
        if self.drop_ended and client.peer is not None:
            # Once its end is complete: a session that ended with it is gone from memory.
            asyncio.get_running_loop().call_soon(self._drop_ended, client, client.peer.key)
        if self.wills is not None and client.peer is not None:
            # Decided once the connection's end is complete (its will published, or waiting
            # for its delay: MQTT 5 §3.1.3.2.2).
            asyncio.get_running_loop().call_soon(self._will_ended, client, client.peer.key)

    def _drop_ended(self, client: "MqttClient", key: SessionKey) -> None:
        """The claim of ``client``'s session goes if the session ended with the connection
        (Clean Session, or 5.0 expiry 0): nobody holds it. Deleted at this connection's own
        revision: a newer claim (another connect, here or elsewhere) stays."""
        claimed = self._claimed.get(key)
        if claimed is None or claimed[1] is not client or key in self.registry.sessions:
            return  # taken over, connected again, or a session that lives on
        del self._claimed[key]
        task = asyncio.get_running_loop().create_task(self._delete_claim(key, claimed[0]))
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)

    async def _delete_claim(self, key: SessionKey, revision: int) -> None:
        try:
            await self.bucket.delete(to_key(store_key(key)), revision)
        except ClusterConflictError:
            pass  # claimed again meanwhile: that claim stays
        except ClusterError as exc:  # NATS away: the claim stays, as before compaction
            log.info("claim of ended session %s not deleted: %s", store_key(key), exc)

    def will_due(self, client: "MqttClient", publish: Callable[[], None]) -> None:
        if self.wills is None:
            publish()
        else:
            self.wills.due(client, publish)

    def _will_ended(self, client: "MqttClient", key: SessionKey) -> None:
        """The kept will goes once its connection's will is settled: now, or when one
        waiting for its delay is published or dropped (until then a survivor may publish it
        if this member dies)."""
        wills = self.wills
        assert wills is not None
        session = self.registry.sessions.get(key)
        if session is not None and session.pending_will is not None:
            session.will_settled = lambda: wills.ended(client)
        else:
            wills.ended(client)

    async def owned(self, keys: list[SessionKey]) -> set[SessionKey]:
        """Of these stored sessions, those whose claim names this member; one nobody
        claimed (stored before the cluster, or its claim lost) is claimed now, by the
        first member to ask."""
        if self._holders is None:  # one pass over the bucket, not a request per session
            self._holders = await read_holders(self.bucket)
        holders = self._holders
        unclaimed = [key for key in keys if to_key(store_key(key)) not in holders]
        for first in range(0, len(unclaimed), _CLAIM_WINDOW):
            window = unclaimed[first : first + _CLAIM_WINDOW]
            found = await asyncio.gather(*map(self._first_claim, window), return_exceptions=True)
            for key, holder in zip(window, found, strict=True):
                if isinstance(holder, BaseException):
                    raise holder  # the page is read again: a claim made stays this member's
                if holder is not None:
                    holders[to_key(store_key(key))] = holder
        member = self.link.member
        return {key for key in keys if holders.get(to_key(store_key(key))) == member}

    async def _first_claim(self, key: SessionKey) -> str | None:
        """The holder of a session whose claim was not there: this member, unless another
        member claimed it first (None: nobody, its claim deleted meanwhile)."""
        kv_key = to_key(store_key(key))
        try:
            await self.bucket.create(kv_key, self.link.member.encode())
            return self.link.member
        except ClusterConflictError:
            entry = await self.bucket.get(kv_key)
            return holder_of(entry.value) if entry is not None else None

    def read_holders_again(self) -> None:
        """The next ``owned`` reads the claims afresh (a restoration after fencing)."""
        self._holders = None

    async def adopt(self, gone: str) -> int:
        """Take the sessions dead member ``gone`` held (``broker.cluster.adoption``)."""
        return await adopt(self, gone)

    def loaded(self, key: SessionKey, session: "BrokerSession | None") -> None:
        unrouted = self._unrouted.pop(key, None)
        if session is not None and unrouted:  # its client's resend routes them again
            taken_over(session, unrouted, self.registry.store)
        if self.handovers is not None:
            self.handovers.loaded(session)

    async def settled(self, key: SessionKey, session: "BrokerSession | None") -> None:
        if self.handovers is not None:
            await self.handovers.arrived(key, session)
        elif self.announcer is not None:  # its own filters: not all those of a restore
            await self.announcer.written_for(session.subscriptions if session else ())

    def abandoned(self, key: SessionKey) -> None:
        if self.handovers is not None:
            self.handovers.abandoned(key)

    async def _swap(self, key: SessionKey, value: bytes) -> tuple[tuple[str, int] | None, int]:
        """Write ``value`` by compare-and-set: the (member, revision) it replaced, if any, and
        the revision written; a gone member's parked frames pinned first (``pin_taken``)."""
        kv_key = to_key(store_key(key))
        for _ in range(_ATTEMPTS):
            entry = await self.bucket.get(kv_key)
            holder = holder_of(entry.value) if entry is not None else ""
            if holder and self.replays is not None and self.is_gone(holder):
                await self.replays.pin_taken(key, holder)
            try:
                if entry is None:
                    return None, await self.bucket.create(kv_key, value)
                written = await self.bucket.update(kv_key, value, entry.revision)
                return (holder, entry.revision), written
            except ClusterConflictError:
                continue  # another member wrote meanwhile: read again
        raise ClusterConflictError(f"{_ATTEMPTS} compare-and-set rounds lost")

    def _remember(self, key: SessionKey, revision: int, client: "MqttClient") -> None:
        claimed = self._claimed
        if len(claimed) >= _REMEMBERED:
            for stale in [k for k, (_, c) in claimed.items() if c.ended]:
                del claimed[stale]
        claimed[key] = (revision, client)

    async def _close(self, payload: bytes, _reply: str | None) -> bytes:
        """Another member's claim replaced ours at ``revision``: close the connection that
        made it, and give the session up (committed in the store, gone from memory)."""
        self.registry.fenced_now()  # after a stall: fenced first, its clients closed, no will
        request = json.loads(payload)
        device_id, client_id = request["key"]
        key = (str(device_id), str(client_id))
        if (claiming := self._claiming.get(key)) is not None:
            # NATS may hand this request over before the answer to this member's own claim
            # (both read at once): the request may name that claim, known once remembered.
            await claiming.wait()
        claimed = self._claimed.get(key)
        if claimed is not None and claimed[0] > int(request["revision"]):
            return b"0"  # a newer connection here claimed it since: it stays
        self._claimed.pop(key, None)
        if self.wills is not None:  # a dead member's will waiting here decides now
            self.wills.claimed_again(key)
        # The same rule as a take-over within one member. A request without "clean" (from a
        # member of an earlier version) publishes the will, as that version did.
        session = self.registry.sessions.get(key)
        ends = session is None or session.ends_with_connect(request.get("clean") is not False)
        if claimed is not None and not claimed[1].ended:
            taken, peer = claimed[1], claimed[1].peer
            message = "%s connected on another node: closing this connection"
            if peer is None:
                log.info(message, taken.label)
            else:  # as a take-over on one member: a few a device, then a count
                taken.broker.device_lines(log).info(peer.owner, "take-overs", message, taken.label)
            await claimed[1].taken_over(will=ends)
            self.taken_away += 1
        handovers, member = self.handovers, request.get("member")
        depart = (
            None
            if handovers is None or not isinstance(member, str)
            else functools.partial(handovers.depart, member=member)
        )
        # Whether it is here or still being read, it takes along what it was not given yet.
        parked = await self.replays.owed.handing_over(key) if self.replays is not None else None
        given = await self.registry.hand_over(key, depart, ends=ends)
        if given is not None:
            self.handed_over += 1
            log.info("session %s handed over to another node", store_key(key))
        return handed_over(*(given or ([], None)), parked)
