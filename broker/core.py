"""NanoIoT's broker: the protocol core (``broker.mqtt``) behind a TLS listener, with
authentication before any session is touched.

``Broker.open`` is the TLS listener's ``on_open``: each connection gets an ``MqttClient``
(``broker.client``) fed synchronously by the transport. The broker holds what all clients
share: the authenticator and ACL, the session registry (take-over, kicks), the router with
its subscription trie, the retained messages, the session store, and the metrics.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from auth.acl import Acl, CompiledAcl, Identity
from auth.decision import Decision, store_unavailable
from broker.auth_throttle import LIMIT, AuthThrottle
from broker.authn import Authenticator, ConnectRequest
from broker.client import MqttClient
from broker.device_queues import DeviceQueues
from broker.last_will import DelayedWill
from broker.metrics import BrokerMetrics
from broker.mqtt.codes import Reason
from broker.mqtt.limits import Limits
from broker.peer import Peer
from broker.registry import Registry
from broker.repeats import LimitedLoggers, LogLimiter
from broker.restore import Restoration
from broker.retained import RetainedStore, RetainLimits
from broker.router import LocalRouter, Message, Router
from broker.session_store import MemorySessionStore, SessionStore
from broker.sessions import BrokerSession
from broker.shared_bounds import SharedBounds
from broker.slowed_hosts import SlowingPolicy
from broker.telemetry import AuthLog
from broker.tls_connection import TlsConnection
from broker.unadmitted import UnadmittedBytes

log = logging.getLogger(__name__)

# Compiled ACLs kept for reconnecting identities. The rules are fixed for the broker's
# lifetime and a CompiledAcl is immutable, so connections of one identity can share one.
_ACL_CACHE_SIZE = 4096
# Devices whose credentials changed recently, for connects whose lookup ran meanwhile.
_CHANGES_KEPT = 10_000


@dataclass(frozen=True)
class BrokerConfig:
    strict_client_id: bool = False
    connect_timeout: float = 10.0
    ack_timeout: float = 10.0  # seconds a PUBACK/PUBREC may wait for the store
    auth_timeout: float = 2.0  # seconds a CONNECT waits for its credential lookup
    max_outgoing_buffer: int = 1024 * 1024
    # Bytes all connections not admitted yet may hold together (``broker.unadmitted``).
    max_unadmitted_bytes: int = 64 * 1024 * 1024
    max_subscriptions: int = 100
    # What one session's filters, and all of one device's sessions' here, are counted as
    # (``broker.subscription_bytes``).
    max_subscription_bytes: int = 512 * 1024
    max_subscription_bytes_per_device: int = 1024 * 1024
    max_topic_levels: int = 128  # of a subscription's filter (each level a trie node)
    max_share_name_length: int = 128  # characters of a shared subscription's share name
    max_shared_subscription_bytes: int = 256 * 1024  # of the groups' names (SharedSubscriptions)
    max_shared_subscription_bytes_per_device: int = 16 * 1024  # of those its sessions are in
    max_sessions_per_device: int | None = None
    max_unsaved_session_changes: int | None = None  # waiting for the store, in all
    max_subacks_waiting: int = 16  # of a connection, for a cluster's route tables (acks)
    # Refused connects per host before it is slowed, and its rate (``broker.auth_throttle``).
    auth_throttle: SlowingPolicy = field(default_factory=SlowingPolicy)
    limits: Limits = field(default_factory=Limits)
    retain: RetainLimits = field(default_factory=RetainLimits)


class Broker:
    def __init__(
        self,
        authenticator: Authenticator,
        acl: Acl,
        auth_log: AuthLog,
        config: BrokerConfig | None = None,
        *,
        store: SessionStore | None = None,
        router: Callable[[LocalRouter], Router] | None = None,
    ) -> None:
        """``router``: what routes beyond this broker (a cluster's), around the local one."""
        self.authenticator = authenticator
        self.acl = acl
        self.auth_log = auth_log
        self.config = config or BrokerConfig()
        self.limits = self.config.limits
        self.metrics = BrokerMetrics()
        self.unadmitted = UnadmittedBytes(
            self.config.max_unadmitted_bytes,
            lambda: self.metrics.count_limit("max_unadmitted_bytes"),
        )
        # Lines a client can cause before it is admitted (a first packet that is no CONNECT,
        # no CONNECT in time) or by breaking the protocol, at its own connection rate: as the
        # auth log's refusals, the first auth_log_repeats per host and reason in each
        # interval, then one summary line (broker.repeats).
        self.client_log = LogLimiter(
            logging.getLogger("broker.client"),
            interval=auth_log.policy.interval,
            repeats=auth_log.policy.repeats,
        )
        # Lines written once per connection of an authenticated device, which it can repeat
        # by connecting again (take-overs, keep-alive expiries, kicks): the same bound, per
        # device and kind of line.
        self.device_lines = LimitedLoggers(
            interval=auth_log.policy.interval, repeats=auth_log.policy.repeats
        )
        # Refused connects per host: past the bound, the listener drops the host's new
        # connections over its rate before their TLS handshake.
        self.auth_throttle = AuthThrottle(
            self.config.auth_throttle,
            self.device_lines(logging.getLogger("broker.auth_throttle")),
            lambda: self.metrics.count_limit(LIMIT),
        )
        self.store: SessionStore = store or MemorySessionStore()
        local = LocalRouter(self.store, self.limits, self.metrics)
        self.router: Router = router(local) if router is not None else local
        self.shared = local.shared  # this process's shared subscriptions (their bounds)
        self.subscription_bytes = held = local.subscription_bytes
        held.max_subscriptions = self.config.max_subscriptions
        held.max_bytes = self.config.max_subscription_bytes
        held.max_bytes_per_device = self.config.max_subscription_bytes_per_device
        self.registry = Registry(self.router, self.store)
        self.registry.max_sessions_per_device = self.config.max_sessions_per_device
        self.registry.expiry_lines = self.device_lines(logging.getLogger("broker.registry"))
        self.registry.subscription_bytes = held
        self.registry.device_queues = DeviceQueues(self.limits)
        self.registry.sweep = self.sweep = local.away.sweep
        self.registry.shared_bounds = SharedBounds(
            self.shared,
            self.config.max_shared_subscription_bytes,
            self.config.max_shared_subscription_bytes_per_device,
        )
        self.retained = RetainedStore(self.config.retain)
        self._acls: dict[Identity, CompiledAcl] = {}
        # Decides a client again once a certificate it presented expired (``broker.
        # cert_expiry``): the change-feed follower's, set when it starts.
        self.certificate_due: Callable[[MqttClient], None] | None = None
        self._changes = 0  # generation of credential changes seen (revocation follower)
        self._changed: dict[str | None, int] = {}  # device id (None: all) -> generation
        gauges = self.metrics.gauges
        gauges.connected_devices = lambda: len(self.registry.live)
        gauges.connected_clients = self.registry.client_count
        gauges.sessions = lambda: len(self.registry.sessions)
        gauges.sessions_expired = lambda: self.registry.expired_count
        gauges.subscriptions = lambda: self.router.subscription_count
        gauges.retained = lambda: len(self.retained)
        gauges.decisions = lambda: self.auth_log.counts
        gauges.store_writable = lambda: self.store.status().writable
        gauges.store_unsaved = lambda: self.store.status().unsaved
        gauges.store_failures = lambda: self.store.status().failures
        gauges.unadmitted_bytes = lambda: self.unadmitted.held

    # --- connections ----------------------------------------------------------------------

    def open(self, connection: TlsConnection) -> MqttClient:
        """A TLS handshake completed: the receiver of that connection's bytes."""
        return MqttClient(self, connection)

    async def decide(self, request: ConnectRequest) -> Decision:
        """Authenticate; again if the device's credentials changed during the lookup, so a
        connect racing its own revocation is never admitted on the stale answer."""
        for _ in range(3):
            started = self._changes
            with self.metrics.timing_lookup():
                decision = await self._authenticate(request)
            holder = decision.holder
            if holder is None or not self._changed_since(holder.device_id, started):
                break
        return decision

    async def _authenticate(self, request: ConnectRequest) -> Decision:
        """A store that does not answer within ``auth_timeout`` cannot vouch for anyone:
        CONNACK 3 (MQTT 3.1.1 §3.2.2.3) then, so the device retries, rather than a connect
        that hangs for as long as the database does. The bound is the store's: a password's
        argon2 check after its lookup is this machine's CPU work (bounded by the password
        gate and ``connect_timeout``), and a busy machine is no reason to refuse."""
        limit = self.config.auth_timeout
        try:
            return await self.authenticator.authenticate(request, limit)
        except TimeoutError:
            return store_unavailable(f"the database is not answering (no reply in {limit:g} s)")

    def _changed_since(self, device_id: str, generation: int) -> bool:
        return (
            self._changed.get(device_id, -1) > generation
            or self._changed.get(None, -1) > generation
        )

    def note_changes(self, device_ids: set[str] | None) -> None:
        """Credentials of these devices (None: possibly any) changed: connects whose lookup
        started earlier look again (``decide``)."""
        self._changes += 1
        if len(self._changed) > _CHANGES_KEPT:
            self._changed.clear()
            self._changed[None] = self._changes
        for device_id in device_ids if device_ids is not None else (None,):
            self._changed[device_id] = self._changes

    def acl_for(self, identity: Identity) -> CompiledAcl:
        """``acl.for_identity``, compiled once per identity (a bounded cache: emptied when
        full, so a fleet larger than it costs what it did without one)."""
        acl = self._acls.get(identity)
        if acl is None:
            if len(self._acls) >= _ACL_CACHE_SIZE:
                self._acls.clear()
            acl = self._acls[identity] = self.acl.for_identity(identity)
        return acl

    # --- revocation and administration ------------------------------------------------------

    def kick_device(
        self, device_id: str, reason: str, which: Callable[[Peer], bool] | None = None
    ) -> int:
        """Close the device's live connections (those ``which`` selects), without wills."""
        return self.registry.kick(device_id, reason, which)

    def forget_device(self, device_id: str) -> None:
        """A deleted device: its sessions and retained messages go (its rows went already)."""
        sessions = self.registry.drop_device(device_id)
        retained = self.retained.forget_device(device_id)
        if sessions or retained:
            log.info("device %s deleted: %d sessions, %d retained messages dropped",
                     device_id, sessions, retained)  # fmt: skip

    def waiting_wills(self, device_ids: set[str] | None) -> list[tuple[BrokerSession, DelayedWill]]:
        """The sessions of these devices (None: any) whose client is away and whose 5.0 will
        waits for its delay, each with that will. Only these devices' sessions are looked at
        (the table's per-device index): a change batch costs what it touches."""
        table = self.registry.sessions
        sessions = (
            table.values()
            if device_ids is None
            else [s for device_id in device_ids for s in table.of_device(device_id)]
        )
        return [(s, will) for s in sessions if isinstance(will := s.pending_will, DelayedWill)]

    def drop_will(self, session: BrokerSession, will: DelayedWill, reason: str) -> None:
        """Never publish ``will``, ``session``'s waiting will: its device may no longer
        publish. Nothing if the session has another by now (its client came and went)."""
        if session.pending_will is not will:
            return
        session.drop_will()
        log.info("will of session %s dropped: %s", session.store_key, reason)

    def live_peers(self, device_ids: set[str] | None = None) -> list[Peer]:
        """The live connections' peers, of these devices only (None: all), found by the
        registry's device index rather than among every connection."""
        if device_ids is None:
            clients: Iterable[MqttClient] = self.registry.live_clients()
        else:
            live = self.registry.live
            clients = [c for device_id in device_ids for c in live.get(device_id, ())]
        return [c.peer for c in clients if c.peer is not None]

    @property
    def live(self) -> dict[str, set[MqttClient]]:
        """Device id -> its live connections."""
        return self.registry.live

    def clients(self) -> Iterator[MqttClient]:
        return self.registry.live_clients()

    def publish_system(self, topic: str, payload: bytes) -> None:
        """Publish (retained) one of the broker's own ``$SYS`` figures."""
        self.retained.retain(topic, payload, 0, None)
        self.router.publish(Message(topic, payload, 0, True))

    def start_restoring(self) -> Restoration:
        """Restore the persistent sessions of the previous run in the background (the
        listener is open already; ``broker.restore``)."""
        restoration = self.registry.restoration = Restoration(self.registry, self.store)
        restoration.start()
        return restoration

    def restoring(self) -> "asyncio.Future[None] | None":
        """Done once the previous run's sessions are all restored; None when they are."""
        restoration = self.registry.restoration
        return restoration.pending() if restoration is not None else None

    def close_all(self) -> None:
        """Close every live connection (shutdown: their wills are not published), and
        sweep no more (the store closes next)."""
        self.sweep.stop()
        for client in list(self.registry.live_clients()):
            client.kick("the broker is shutting down", Reason.SERVER_SHUTTING_DOWN)
