"""NanoIoT's broker: amqtt's engine, with authentication before any session is touched.

``NanoIoTBroker.serve`` runs one TLS connection from CONNECT to close:

1. read CONNECT (``broker.connect``), 2. authenticate (``broker.authn``) and answer a refusal
with its CONNACK code, 3. only then find or create the session, keyed by device and client id
(``broker.peer``), 4. CONNACK, then amqtt's message loop, without its four tasks
(``broker.message_loop``). Topic rules and the ``me`` mapping are in ``broker.routing``.
Everything amqtt-specific that we override is listed in ``tests/broker/test_amqtt_pins.py``,
which fails when amqtt changes under us.
"""

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable

from amqtt.broker import Broker
from amqtt.session import Session

from auth.acl import Acl, CompiledAcl, Identity, to_canonical
from auth.certificate import common_name
from auth.decision import ConnackCode, Decision, Reason, deny
from broker.authn import Authenticator, ConnectRequest
from broker.connect import Connect, ConnectRefused, read_connect, send_connack
from broker.delivery import DEFAULT_MAX_OUTGOING_BUFFER
from broker.framing import DEFAULT_MAX_PACKET_SIZE
from broker.handler import DeviceHandler, keep_alive_timeout
from broker.message_loop import LeanMessageLoop
from broker.metrics import BrokerMetrics
from broker.peer import Peer, attach_peer, peer_of, session_key
from broker.persistence import PersistenceMixin
from broker.routing import RoutingMixin
from broker.session_state import DeviceSession
from broker.telemetry import AuthLog
from broker.transport import TlsConnection

log = logging.getLogger(__name__)

_AMQTT_CONFIG = {
    # One external listener: TLS is ours (broker.transport); amqtt only sees plain streams.
    "listeners": {"default": {"type": "external"}},
    # No plugins: authentication and topic rules are overrides, not amqtt plugins, so no
    # default plugin (amqtt's anonymous auth among them) can ever come back.
    "plugins": {},
}
_TAKEOVER_GRACE = 5.0
# Compiled ACLs kept for reconnecting identities. The rules are fixed for the broker's
# lifetime and a CompiledAcl is immutable, so connections of one identity can share one.
_ACL_CACHE_SIZE = 4096


class NanoIoTBroker(PersistenceMixin, RoutingMixin, LeanMessageLoop, Broker):  # type: ignore[misc]  # amqtt is untyped
    def __init__(
        self,
        authenticator: Authenticator,
        acl: Acl,
        auth_log: AuthLog,
        *,
        strict_client_id: bool = False,
        connect_timeout: float = 10.0,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        max_outgoing_buffer: int = DEFAULT_MAX_OUTGOING_BUFFER,
    ) -> None:
        super().__init__(dict(_AMQTT_CONFIG))
        self.authenticator = authenticator
        self.acl = acl
        self.auth_log = auth_log
        self.strict_client_id = strict_client_id
        self.connect_timeout = connect_timeout
        self.max_packet_size = max_packet_size
        self.max_outgoing_buffer = max_outgoing_buffer
        self.live: defaultdict[str, dict[str, Peer]] = defaultdict(dict)  # device id -> key -> peer
        self._acls: dict[Identity, CompiledAcl] = {}
        self.metrics = BrokerMetrics()
        self.metrics.observe(
            lambda: len(self.live),
            lambda: self.auth_log.counts,
            connected_clients=lambda: sum(map(len, self.live.values())),
        )

    # --- one connection ---------------------------------------------------------------

    async def serve(self, connection: TlsConnection) -> None:
        """Handle one client from CONNECT to close (the TLS listener's on_connection)."""
        reader, writer = connection.reader, connection.writer
        try:
            connect = await read_connect(reader, writer, self.connect_timeout, self.max_packet_size)
        except ConnectRefused as refused:
            if refused.violation:
                self.metrics.count_violation()
            log.info("refused %s:%d: %s", *connection.remote, refused)
            return
        request = ConnectRequest(
            certificate=connection.peer_certificate,
            chain=connection.peer_chain,
            username=connect.username,
            password=connect.password,
            client_id=connect.client_id,
            remote=connection.remote[0],
        )
        with self.metrics.timing_lookup():
            decision = await self.authenticator.authenticate(request)
        admitted = self._admit(decision, connect, request, connection)
        if isinstance(admitted, Decision):
            self.auth_log.refused(admitted, request)
            await send_connack(writer, admitted.connack)
            return
        self.auth_log.allowed(decision, request, admitted.client_id)
        await self._run_session(admitted, connect)

    def _admit(
        self,
        decision: Decision,
        connect: Connect,
        request: ConnectRequest,
        connection: TlsConnection,
    ) -> Peer | Decision:
        """The peer for an authenticated client, or the refusal: the decision itself, or a
        client id or will topic this identity may not use."""
        holder = decision.holder
        if not decision.allowed or holder is None:
            return decision
        identity = Identity(
            holder.device_id, holder.device_name, _common_name(connection), holder.application
        )
        client_id = self._client_id(connect, identity)
        if client_id is None:
            return deny(
                Reason.CLIENT_ID_MISMATCH,
                f"client id '{connect.client_id}' is not the device name '{holder.device_name}'",
                holder=holder, fingerprint=decision.fingerprint,
            )  # fmt: skip
        acl = self._acl_for(identity)
        if connect.will_topic is not None and not acl.can_publish(
            identity_topic(identity, connect.will_topic)
        ):
            return deny(
                Reason.WILL_NOT_ALLOWED, f"will topic '{connect.will_topic}' is not allowed",
                holder=holder, fingerprint=decision.fingerprint,
            )  # fmt: skip
        return Peer(identity, decision, request, acl, client_id, connection)

    def _acl_for(self, identity: Identity) -> CompiledAcl:
        """``acl.for_identity``, compiled once per identity (a bounded cache: emptied when
        full, so a fleet larger than it costs what it did without one)."""
        acl = self._acls.get(identity)
        if acl is None:
            if len(self._acls) >= _ACL_CACHE_SIZE:
                self._acls.clear()
            acl = self._acls[identity] = self.acl.for_identity(identity)
        return acl

    def _client_id(self, connect: Connect, identity: Identity) -> str | None:
        if self.strict_client_id and not identity.application:
            if connect.client_id in ("", identity.device_name):
                return identity.device_name
            return None
        return connect.client_id or f"auto-{secrets.token_hex(8)}"

    async def _run_session(self, peer: Peer, connect: Connect) -> None:
        key = session_key(peer.identity, peer.client_id)
        await self._take_over(key)
        session, present = self._session_for(key, connect, peer)
        handler = DeviceHandler(
            self.plugins_manager, loop=self._loop, max_packet_size=self.max_packet_size
        )
        handler.route = self.route  # QoS 0 and 1 PUBLISH skip amqtt's queues (broker.delivery)
        handler.defer_puback = self.defer_puback  # queued messages durable first
        handler.max_outgoing_buffer = self.max_outgoing_buffer  # broker.delivery
        handler.on_drop = self.metrics.count_drop
        handler.on_violation = self.metrics.count_violation
        self.live[peer.device_id][key] = peer
        try:
            session.transitions.connect()
            handler.attach(session, peer.connection.reader, peer.connection.writer)
            self._sessions[key] = (session, handler)
            await send_connack(
                peer.connection.writer, ConnackCode.ACCEPTED, session_present=present
            )
            await handler.start()
            await self._publish_session_retained_messages(session)
            for topic_filter, qos in self.subscriptions_of(session):
                await self._publish_retained_messages_for_subscription((topic_filter, qos), session)
            await self._client_message_loop(session, handler)
        finally:
            if self.live[peer.device_id].get(key) is peer:
                del self.live[peer.device_id][key]
                if not self.live[peer.device_id]:
                    del self.live[peer.device_id]
            if session.transitions.is_connected():
                session.transitions.disconnect()
            current = self._sessions.get(key)
            if session.clean_session and current is not None and current[0] is session:
                await self._delete_session(key)
            peer.connection.close()
            peer.finished.set()

    async def _take_over(self, key: str) -> None:
        """MQTT 3.1.1 §3.1.4: a second connection for a live session closes the first."""
        existing = self._sessions.get(key)
        old = peer_of(existing[0]) if existing else None
        if old is None or old.finished.is_set():
            return
        log.info("%s connected again: closing its previous connection", old.label)
        old.connection.close()
        try:
            await asyncio.wait_for(old.finished.wait(), _TAKEOVER_GRACE)
        except TimeoutError:
            log.warning("previous connection of %s did not finish in time", old.label)

    def _session_for(self, key: str, connect: Connect, peer: Peer) -> tuple[Session, bool]:
        """The session to use, after authentication (MQTT 3.1.1 §3.1.2.4), with ``peer`` and
        this connection's parameters on it (never the previous connection's: T5)."""
        existing = self._sessions.get(key)
        if connect.clean_session or existing is None:
            if existing is not None:
                self._drop_session_now(key)
            session = DeviceSession()  # amqtt's Session, lighter state machine
            session.client_id = key
            present = False
        else:
            session, present = existing[0], True
        attach_peer(session, peer)
        _refresh(session, connect, peer.identity)
        self.session_opened(key, session, peer, connect.clean_session)  # broker.persistence
        return session, present

    def _drop_session_now(self, key: str) -> None:
        session, _ = self._sessions.pop(key)
        for topic_filter in list(self._subscriptions):
            self._del_subscription(topic_filter, session)
            if not self._subscriptions[topic_filter]:
                del self._subscriptions[topic_filter]
        session.clear_queues()

    # --- revocation ---------------------------------------------------------------------

    def kick_device(
        self, device_id: str, reason: str, which: Callable[[Peer], bool] | None = None
    ) -> int:
        """Close the device's live connections (those ``which`` selects), without their wills."""
        peers = [p for p in self.live.get(device_id, {}).values() if which is None or which(p)]
        for peer in peers:
            peer.kicked_because = reason
            session = self._sessions.get(session_key(peer.identity, peer.client_id))
            if session is not None:
                session[0].will_flag = False
            log.info("disconnecting %s: %s", peer.label, reason)
            peer.connection.close()
        return len(peers)

    def live_peers(self) -> list[Peer]:
        return [peer for peers in self.live.values() for peer in peers.values()]


def identity_topic(identity: Identity, topic: str) -> str:
    """A topic as the client wrote it, in the broker's canonical form."""
    return topic if identity.application else to_canonical(topic, identity.device_name)


def _refresh(session: Session, connect: Connect, identity: Identity) -> None:
    session.clean_session = connect.clean_session
    session.will_flag = connect.will_topic is not None
    session.will_topic = (
        identity_topic(identity, connect.will_topic) if connect.will_topic is not None else None
    )
    session.will_message = connect.will_message
    session.will_qos = connect.will_qos
    session.will_retain = connect.will_retain
    session.keep_alive = keep_alive_timeout(connect.keep_alive)
    session.username = connect.username
    session.password = None  # never kept: the decision is made
    session.ssl_object = None


def _common_name(connection: TlsConnection) -> str | None:
    cert = connection.peer_certificate
    return common_name(cert.subject) if cert is not None else None
