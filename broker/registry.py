"""Every session and every live connection, and take-over that cannot be raced.

- ``sessions``: by ``(device id, client id)``, connected or kept for a persistent client.
- ``live``: every authenticated, open connection by device (``broker.live_connections``,
  the base class).
- ``take_over``: MQTT 3.1.1 §3.1.4, a second connection for a session closes the first. It
  is serialised per key (a lock), and the old connection is closed (aborted if it does not
  read) and detached from the session before the new one's CONNACK, so concurrent connects
  for one key end with exactly one connection on the session, and none is ever left
  unreachable.
- MQTT 5 session expiry (§3.1.2.11.2): a session whose client went away ends after its
  expiry interval unless a client takes it first; the interval may be changed by the
  DISCONNECT (§3.14.2.2.2). A 3.1/3.1.1 persistent session has ``persistent_session_expiry``
  for its interval (3.1.1 §3.1.2.4 leaves its lifetime to the server), none if that is 0.
  Sessions read back from the store end their interval after their client left.
- In a cluster (``ownership``: ``broker.ownership``), a persistent session is held in memory
  by one member only, the one whose claim names it: a connect whose claim took the session
  from another member reads it fresh from the shared store (``moved_here``), and a member
  asked to give a session up forgets it after its store committed it (``hand_over``).
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from broker.device_queues import DeviceQueues
from broker.expiry_sweep import ExpirySweep
from broker.live_connections import LiveConnections
from broker.mqtt.limits import NEVER_EXPIRES
from broker.peer import SessionKey
from broker.repeats import LogLimiter
from broker.router import Router
from broker.session_store import SessionStore
from broker.session_table import Seats, SessionTable
from broker.sessions import BrokerSession
from broker.shared_bounds import SharedBounds
from broker.subscription_bytes import SubscriptionBytes
from nanoiot.errors import SessionQuotaExceeded

if TYPE_CHECKING:
    from broker.client import MqttClient
    from broker.cluster.resend import Unrouted
    from broker.restore import Restoration

log = logging.getLogger(__name__)


class Registry(LiveConnections):
    def __init__(self, router: Router, store: SessionStore) -> None:
        super().__init__()
        self.router = router
        self.store = store
        self.sessions = SessionTable()
        # A connect that would start a session past it is refused (None: no bound).
        self.max_sessions_per_device: int | None = None
        # In a cluster: the device's sessions on every member count (``broker.cluster.seats``).
        self.seats: Seats | None = None
        self._locks: dict[SessionKey, tuple[asyncio.Lock, int]] = {}
        self.restoration: Restoration | None = None  # while the previous run's come back
        # Why connects are refused now (CONNACK server unavailable), if they are: a cluster
        # member fenced off (``broker.cluster.fence``).
        self.refusing: str | None = None
        # Whether it is fenced off, fencing it first if due (``Fencing.fenced_now``): asked
        # before acting on what a client sent.
        self.fenced_now: Callable[[], bool] = lambda: False
        # Sessions ended by their expiry (5.0 §3.1.2.11.2), at start-up too: for /metrics.
        self.expired_count = 0
        # Their lines, limited per device (``Broker.device_lines``): a new client id and 1 s
        # of Session Expiry Interval at each connect wrote one a connect.
        self.expiry_lines = LogLimiter(log)
        # This process's bounds on shared subscriptions, which restored sessions may pass.
        self.shared_bounds: SharedBounds | None = None
        self.subscription_bytes: SubscriptionBytes | None = None  # and on all filters
        # Each device's sessions' queues together (``broker.device_queues``).
        self.device_queues: DeviceQueues | None = None
        # Takes expired messages out of the queues of sessions whose client is away.
        self.sweep: ExpirySweep | None = None

    # --- sessions ---------------------------------------------------------------------------

    async def take_over(
        self, client: "MqttClient", clean: bool, expiry: int | None = None
    ) -> tuple[BrokerSession, bool] | None:
        """The session for an admitted client and whether it was present (§3.2.2.2), with
        any previous connection on it closed and detached; None if the client ended while
        it waited its turn. ``expiry``: the client's session expiry interval (None: never).
        A 5.0 client's decides whether the session is kept (0: it ends with the connection,
        §3.1.2.11.2); a 3.1/3.1.1 client's CleanSession does (§3.1.2.4)."""
        persistent = not clean if client.core.v5 is None else bool(expiry)
        peer = client.peer
        assert peer is not None
        async with self._turn(peer.key):
            if self.restoration is not None:
                await self.restoration.claim(peer.key)  # its own session, never an empty one
            session = self.sessions.get(peer.key)
            old = session.client if session is not None else None
            if old is not None and old is not client:
                client.broker.device_lines(log).info(
                    peer.owner, "take-overs",
                    "%s connected again: closing its previous connection", peer.label,
                )  # fmt: skip
                assert session is not None  # its will only if this connect ends the session:
                await old.taken_over(will=session.ends_with_connect(clean))  # 5.0 §3.1.3.2.2
            ownership = self.ownership
            # In a cluster: closed on any other member, and the session read from the
            # store if another member held it.
            if ownership is not None and not client.ended and await ownership.claim(client, clean):
                session = await self.moved_here(peer.key, session)
                awaiting = ownership.awaiting_pubrel(peer.key)
                if session is not None:  # §4.3.3: a PUBLISH sent again is not routed again
                    self._awaiting_handed_over(session, awaiting)
                ownership.loaded(peer.key, session)  # the ids first, then their records
                if not ownership.holds(peer.key):
                    # A connect on another member took it meanwhile (and closed this client):
                    # the session is that member's, not to be kept here too.
                    if session is not None:
                        self.forget(session)
                    ownership.abandoned(peer.key)
                    return None
                await ownership.settled(peer.key, session)
            if client.ended:
                return None
            if session is not None and session.ends_with_connect(clean):
                self.end(session)  # §3.1.2.4: CleanSession 1 starts afresh
                session = None
            present = session is not None
            if session is None:
                await self._reserve(peer.key[0])
                if client.ended:  # while the cluster was asked: its seat is given back
                    if self.seats is not None:
                        self.seats.changed(peer.key[0])
                    return None
                session = BrokerSession(peer.key, peer.identity.device_name, persistent=persistent)
                self.sessions[peer.key] = session
                if self.device_queues is not None:
                    self.device_queues.join(session)
            session.cancel_timers()  # §3.1.3.2.2: no will once the session is taken again
            if session.persistent and not persistent:
                self.expiry_changed(session, 0)
            session.device_name = peer.identity.device_name
            session.receive_denied = peer.acl.receive_denied
            session.expiry, session.expiry_left = expiry, None
            if session.persistent:
                self.store.save_session(session)
            self.sessions.attach(session, client)
            return session, present

    async def _reserve(self, device_id: str) -> None:
        """A seat for one more session of the device, or ``SessionQuotaExceeded``: counted
        here, then across the cluster if there is one (a take-over, which finds the session
        here or in the shared store, takes none)."""
        limit = self.max_sessions_per_device
        if limit is None:
            return
        if self.sessions.held_by(device_id) >= limit:
            raise SessionQuotaExceeded(f"the device holds max_sessions_per_device ({limit})")
        if self.seats is not None:
            await self.seats.reserve(device_id, limit)

    def _awaiting_handed_over(self, session: BrokerSession, awaiting: set[int]) -> None:
        """The QoS 2 packet ids the member that gave the session up named in its answer.
        The store has them already, unless that member runs an earlier version, which kept
        them in memory only: those are stored now."""
        for packet_id in awaiting - session.awaiting_pubrel:
            session.awaiting_pubrel.add(packet_id)
            if session.persistent:
                self.store.pubrel_awaited(session, packet_id)

    @asynccontextmanager
    async def _turn(self, key: SessionKey) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def released(
        self, session: BrokerSession, client: "MqttClient", expiry: int | None = None
    ) -> None:
        """The client of ``session`` is gone: a clean session ends with it (§3.1.2.4), a kept
        one after ``expiry`` seconds (5.0 §3.1.2.11.2; None: never)."""
        if session.client is client:
            self.sessions.attach(session, None)
        if session.client is not None:
            return
        if not session.persistent:
            self.end(session)
            return
        session.expiry = expiry
        self.store.session_away(session)  # its expiry survives a restart
        if self.sweep is not None:  # what its client left queued expires meanwhile
            self.sweep.watch(session)
        if expiry is not None and expiry != NEVER_EXPIRES:
            loop = asyncio.get_running_loop()
            session.expiry_timer = loop.call_later(expiry, self._expired, session)

    def _expired(self, session: BrokerSession) -> None:
        session.expiry_timer = None
        if session.client is None and self.sessions.get(session.key) is session:
            self.expired_count += 1
            self.expiry_lines.info(f"device '{session.device_name}'", "session expiries",
                                   "session %s expired", session.store_key)  # fmt: skip
            self.end(session)

    def expiry_changed(self, session: BrokerSession, expiry: int) -> None:
        """A 5.0 client set its session expiry interval to 0 (in DISCONNECT, §3.14.2.2.2, or
        reconnecting): the session is no longer kept, in the store or after its client."""
        if expiry == 0 and session.persistent:
            self.store.drop_session(session)
            session.persistent = False

    def end(self, session: BrokerSession, *, will: bool = True) -> None:
        """Forget a session: its subscriptions, its messages, and its row in the store; a
        will waiting for its delay is published now (unless ``will`` is False)."""
        if session.expiry_timer is not None:
            session.expiry_timer.cancel()
            session.expiry_timer = None
        if will:
            session.will_now()
        else:
            session.cancel_timers()
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        if self.sweep is not None:
            self.sweep.drop(session)
        for topic_filter in session.subscriptions:
            self.router.unsubscribe(session, topic_filter)
        session.subscriptions.clear()
        gone = session.clear()
        for message in gone:
            self.store.message_done(message)
        self.router.session_ended(gone)
        if session.persistent:
            self.store.drop_session(session)

    async def moved_here(
        self, key: SessionKey, session: BrokerSession | None
    ) -> BrokerSession | None:
        """The session as the shared store has it, after another member gave it up: what
        this member had in memory is dropped first (it may be stale)."""
        if session is not None:
            self.forget(session)
        await self.store.flush()  # this member's own writes for it come first
        loaded = await self.store.load_one(key)
        if loaded is None or key in self.sessions:
            return self.sessions.get(key)
        self.restore([loaded])
        log.info("session %s moved here: %d in flight, %d queued", loaded.store_key,
                 len(loaded.inflight), len(loaded.queue))  # fmt: skip
        return self.sessions.get(key)

    async def adopt(self, key: SessionKey) -> bool:
        """Take in the stored session of a dead member (its client away); whether there
        was one."""
        async with self._turn(key):
            if key in self.sessions:
                return False
            return await self.moved_here(key, None) is not None

    async def hand_over(
        self,
        key: SessionKey,
        depart: Callable[[BrokerSession], None] | None = None,
        *,
        ends: bool = False,
    ) -> "tuple[list[int], dict[int, Unrouted] | None] | None":
        """Another member takes the session: forget it here once its client is gone, and
        return when the store has committed everything written for it (what its client's
        acknowledgements and this member's confirmations promised). The packet ids of the
        client's QoS 2 messages awaiting PUBREL (§4.3.3; in the store too, named for members
        of earlier versions, which read them only here) with the records of those whose
        routing failed (``broker.cluster.resend``), or None if it was not here.
        ``depart``: told of the session as it is forgotten. ``ends``: the connect that takes
        it ends it (Clean Start): a will waiting for its delay goes now (5.0 §3.1.3.2.2)."""
        if self.restoration is not None:  # not in memory yet: its page must skip it
            self.restoration.taken(key)
        session = self.sessions.get(key)
        given = None
        if session is not None and session.client is None:
            given = sorted(session.awaiting_pubrel), session.unrouted
            if depart is not None:
                depart(session)
            if ends:
                session.will_now()
            self.forget(session)
        await self.store.flush()
        if self.seats is not None:  # the connect that took it finds its seat free
            await self.seats.settle(key[0])
        return given

    def forget(self, session: BrokerSession) -> None:
        """Drop a session from memory only (its rows stay: another member takes it). No
        will: its client connected again elsewhere (5.0 §3.1.3.2.2). What it still held,
        arriving from another member, is refused (its publishers send it again, §4.3.2)."""
        if session.arrival is not None:
            session.arrival.refuse()
        session.cancel_timers()  # the expiry timer too
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        if self.sweep is not None:
            self.sweep.drop(session)
        for topic_filter in session.subscriptions:
            self.router.unsubscribe(session, topic_filter)
        session.subscriptions.clear()
        session.clear()

    def drop_device(self, device_id: str) -> int:
        """Forget every session of a deleted device (its rows went with it)."""
        gone = self.sessions.of_device(device_id)
        for session in gone:
            self.end(session, will=False)
        return len(gone)

    def restore(self, sessions: list[BrokerSession]) -> list[BrokerSession]:
        """Take in the persistent sessions read from the store, their clients away; one whose
        expiry interval has passed since its client left is ended instead (§3.1.2.11.2), the
        others expire when it will have. The queued messages whose Message Expiry Interval
        passed meanwhile are deleted, never counted (5.0 §3.3.2.3.3). The ones taken in."""
        kept: list[BrokerSession] = []
        loop = asyncio.get_running_loop()
        now = loop.time()
        for session in sessions:
            left = session.expiry_left
            if left is not None and left <= 0:
                self.expired_count += 1
                log.info("session %s expired while the broker was down", session.store_key)
                self.store.drop_session(session)
                continue
            if left is not None:
                session.expiry_timer = loop.call_later(left, self._expired, session)
            for message in session.purge_expired(now):
                self.store.message_done(message)
            kept.append(session)
            for topic_filter, sub in session.subscriptions.items():
                self.router.subscribe(session, topic_filter, sub)
            self.sessions[session.key] = session
            if self.sweep is not None:
                self.sweep.watch(session)
        if self.shared_bounds is not None:
            self.shared_bounds.restored(kept)  # kept whole (§4.1), even past them
        if self.subscription_bytes is not None:
            self.subscription_bytes.restored(kept)
        if self.device_queues is not None:
            self.device_queues.restored(kept)
        return kept
