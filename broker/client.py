"""One MQTT client connection: the transport's receiver, driving the protocol core.

The TLS transport hands every decrypted read to ``data_received`` synchronously; the core
(``broker.mqtt.connection``) turns it into events, handled here in arrival order (MQTT 3.1.1
§4.6), and what the core wrote in the meantime goes out in one write. No task runs per
connection or per packet: only the CONNECT phase is asynchronous (authentication looks up
the store, take-over may wait for the previous connection), as one task that runs within
the connect timeout and is cancelled when the client goes away (``broker.connecting``).
An MQTT 3.1/3.1.1 client with ``max_awaiting_pubrel`` messages whose PUBACK / PUBREC waits
for the store is not read until one goes out (``broker.backpressure``; 5.0 has its Receive
Maximum instead).

A connection ends once (``_end``): by DISCONNECT, by a protocol violation or limit, keep-alive
expiry (``broker.keep_alive``), take-over, a kick (revocation: no will), a refusal, or the
network. An MQTT 5 client is told why first, in a DISCONNECT with a reason code and string
(5.0 §3.14.2.1): 0x98 on a kick, 0x8E on take-over, 0x8D on keep-alive expiry, 0x97 or 0x93
on a limit, the violation's own code (``broker.faults``). Its will is published when the
standard says so (§3.1.2.5), after its Will Delay Interval for a 5.0 client (§3.1.3.2.2,
``broker.last_will``), its session released (a clean session ends with it, §3.1.2.4; a kept
one after its expiry interval), and it leaves the live table.
"""

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from broker import backpressure, connecting, faults, inbound, unadmitted
from broker.acks import HeldAcks
from broker.connection_limit import host_of
from broker.last_will import publish_will
from broker.mqtt.codes import Reason
from broker.mqtt.connection import Connection
from broker.mqtt.events import (
    ConnectionRefused,
    DuplicateReceived,
    Event,
    LimitExceeded,
    MessageCompleted,
    MessageDropped,
    MessageReleased,
    MessageSent,
    ProtocolViolation,
    PublishReleased,
    PubrelAgain,
)
from broker.mqtt.packets import Connect, Disconnect, Publish, Subscribe, Unsubscribe
from broker.mqtt.properties import Property
from broker.mqtt.session import Outgoing
from broker.peer import Peer
from broker.sessions import BrokerSession
from broker.tls_connection import TlsConnection
from nanoiot.text import printable

if TYPE_CHECKING:
    from broker.core import Broker

log = logging.getLogger(__name__)

TAKEOVER_GRACE: Final = 1.0  # seconds an old connection gets to close before it is aborted


class MqttClient:
    """One connection's state and the broker's handle on it. ``broker.connecting``,
    ``broker.acks`` and ``broker.last_will`` work on that state too."""

    __slots__ = (
        "_acks", "_auth", "_batched", "_cert_timer", "_denied", "_full", "_loop", "_out_held",
        "_out_wait", "_paused", "_stash", "_timer", "_turn", "_unread", "auth_counted", "broker",
        "core", "ended", "peer", "session", "tls",
    )  # fmt: skip

    def __init__(self, broker: "Broker", tls: TlsConnection) -> None:
        self.broker = broker
        self.tls = tls
        self._loop = asyncio.get_running_loop()
        self.core = Connection(broker.limits, self._loop.time())
        self.peer: Peer | None = None
        self.session: BrokerSession | None = None
        self.ended = False
        self.auth_counted = False  # by the authentication throttle, or excused from it
        self._auth: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(
            broker.config.connect_timeout, connecting.timed_out, self
        )
        self._acks = HeldAcks(self)  # acknowledgements waiting for a commit
        self._cert_timer: asyncio.TimerHandle | None = None  # ``broker.cert_expiry``
        self._denied: set[str] | None = None  # topics whose refusal was logged
        # The reasons it is not read (``backpressure.reading``), each cleared by what ends it:
        # not admitted yet with more than a packet sent, or the sessions are restored; its
        # unanswered QoS 1/2 messages fill the window; it does not take what it was sent.
        self._paused = False
        self._full = False
        self._unread: asyncio.Task[None] | None = None  # ``backpressure.hold_unread``
        self._turn: asyncio.Handle | None = None  # the rest of a read, in a later loop turn
        self._stash: list[bytes] | None = None  # what arrives while sessions are restored
        # Output waiting for the commit that records the packet ids it carries.
        self._out_wait: asyncio.Future[None] | None = None
        self._out_held: list[bytes] = []
        self._batched = 0  # bytes given in a batch, not written yet (``deliver``, ``flush``)

    @property
    def label(self) -> str:
        if self.peer is not None:
            return self.peer.label
        return "%s:%d" % self.tls.remote  # noqa: UP031 - host and port

    # --- the transport's receiver -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.ended:
            return
        if self.broker.registry.fenced_now() and self.ended:
            return  # read after a stall that fenced this member off: it closed this connection
        self.broker.metrics.bytes_in += len(data)
        if not unadmitted.hold(self, len(data)):
            return  # closed: past max_unadmitted_bytes
        if self._stash is not None:
            self._stash.append(data)  # read once the sessions are restored
            self.core.last_received = self._loop.time()  # it is not idle (§3.1.2.10)
            return
        if self._turn is not None:  # read before the pause took: its turn comes
            self.core.keep(data)
            return
        self._receive(data)
        if self.ended:
            return
        self._flush()
        backpressure.hold_unread(self)
        unadmitted.pause_past_connect(self)

    def connection_lost(self) -> None:
        self.broker.registry.fenced_now()  # a stall that fences this member: no will here
        self._end(will=True)  # §3.1.2.5: unless DISCONNECT came first

    def _receive(self, data: bytes) -> None:
        core, now = self.core, self._loop.time()
        if self._acks.holding:  # read before the pause took: the rest once answers went
            core.keep(data)
            return
        core.new_turn()
        events = core.receive_data(data, now)
        while events:
            self._handle(events)
            if self.ended:
                return
            if not core.more_to_read or self._acks.holding:
                break
            events = core.receive_data(b"", now)
        if core.window_full:
            backpressure.hold_back(self)
        elif core.turn_over and core.more_to_read and not self._acks.holding:
            backpressure.take_turns(self)

    # --- events, in order ---------------------------------------------------------------------

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if self.ended:
                return
            if isinstance(event, Publish):
                inbound.publish(self, event, self._loop.time())
            elif isinstance(event, MessageCompleted):
                message, session = event.message, self.session
                if message.stored is not None and session is not None:  # its row goes
                    self.broker.store.message_completed(session, message)
            elif isinstance(event, MessageSent):
                self._sent(event.message)
            elif isinstance(event, MessageReleased):
                message = event.message
                self.broker.store.message_released(message)
                if message.stored is not None:  # its PUBREL once that is committed
                    self._acks.release(message)
            elif isinstance(event, Subscribe):
                inbound.subscribe(self, event)
            elif isinstance(event, Unsubscribe):
                inbound.unsubscribe(self, event)
            else:
                self._handle_rare(event)

    def _handle_rare(self, event: Event) -> None:
        if isinstance(event, Connect):
            self._auth = self._loop.create_task(connecting.run(self, event), name="mqtt connect")
            self._auth.add_done_callback(self._admitted)
        elif isinstance(event, Disconnect):
            self._disconnected(event)
            # The core dropped the will (§3.14.4). The answers to what came before the
            # DISCONNECT go out first, in order (§4.6), at most ``ack_timeout`` later.
            self._acks.then(lambda: self._end(will=True))
        elif isinstance(event, PublishReleased):
            # PUBCOMP waits for the id's release to be committed: before that, a restart
            # would take a new PUBLISH with this id for the one just released (§4.3.3).
            session = self.session
            if session is not None and event.known:
                self.broker.store.pubrel_received(session, event.packet_id)
            if session is not None and session.unrouted:  # nothing is sent again now
                session.unrouted.pop(event.packet_id, None)
            self._acks.complete(event.packet_id, known=event.known)
        elif isinstance(event, PubrelAgain):  # once its release is committed, as the first
            self._acks.release(event.message)
        elif isinstance(event, DuplicateReceived):
            inbound.publish_again(self, event.packet_id, event.publish, self._loop.time())
        elif isinstance(event, MessageDropped):
            self.broker.metrics.count_limit(event.limit)
            self.broker.store.message_done(event.message)
        elif isinstance(event, LimitExceeded):
            faults.limit_exceeded(self, event)
        elif isinstance(event, ProtocolViolation):
            faults.violated(self, event)
        elif isinstance(event, ConnectionRefused):
            faults.refused(self, event)

    def _disconnected(self, packet: Disconnect) -> None:
        """5.0 §3.14.2.2.2: the DISCONNECT may change the session expiry interval."""
        expiry = packet.properties.get(Property.SESSION_EXPIRY_INTERVAL)
        v5, session = self.core.v5, self.session
        if not isinstance(expiry, int) or v5 is None or session is None:
            return
        v5.session_expiry = min(expiry, self.broker.limits.max_session_expiry)
        self.broker.registry.expiry_changed(session, v5.session_expiry)

    # --- the CONNECT phase (``broker.connecting``) --------------------------------------------

    def _admitted(self, task: "asyncio.Task[None]") -> None:
        """The CONNECT phase is over: a finished task is half a KiB an idle client keeps."""
        if self._auth is task:
            self._auth = None

    def _expiry(self) -> int | None:
        """The session's expiry interval: the negotiated one for 5.0 (§3.1.2.11.2); for 3.1 and
        3.1.1, whose session is kept by CleanSession 0 (§3.1.2.4), ``persistent_session_expiry``
        (None: it stays until a clean one replaces it)."""
        if (v5 := self.core.v5) is not None:
            return v5.session_expiry
        return self.broker.limits.persistent_session_expiry or None

    # --- what the broker does with this client ------------------------------------------------

    def deliver(self, message: Outgoing, later: "set[MqttClient] | None" = None) -> None:
        """Send a message from a subscription (or its queue's turn); ``later``: see ``flush``."""
        broker = self.broker
        if not message.qos:  # in a batch, what it was given there counts as written
            if self.tls.buffered() + self._batched > broker.config.max_outgoing_buffer:
                broker.metrics.count_drop()  # §4.3.1: at most once; it does not read
                return
        elif self.session is not None and len(self.session.inflight) >= broker.limits.max_inflight:
            broker.metrics.count_limit("max_inflight_messages")  # it waits in the queue
        events = self.core.publish(message, self._loop.time())
        broker.metrics.messages_out += 1
        if events:
            self._handle(events)
        if later is None:
            self._flush()
        else:
            later.add(self)
            self._batched += message.size

    def can_send_now(self, qos: int) -> bool:
        """Whether a message at ``qos`` would go out at once: not behind messages waiting in
        the session's queue or a full in-flight window, nor (QoS 0) dropped because the client
        does not drain its output (what a batch gave it counted as written, as ``deliver``)."""
        session = self.session
        if session is None or session.queue:
            return False
        if qos:
            return len(session.inflight) < self.core.window  # 5.0: the client's Receive Maximum
        return self.tls.buffered() + self._batched <= self.broker.config.max_outgoing_buffer

    def acknowledge(
        self,
        packet_id: int,
        qos: int,
        *,
        durable: "bool | asyncio.Future[None]",
        code: int = 0,
    ) -> None:
        """PUBACK / PUBREC for a message this client sent, once what routing it wrote is
        committed (§4.3.2: the server owns it then), and always in the order of the PUBLISHes
        (§4.6). ``durable``: True to wait for the store's commit, or a future of everything
        to wait for (in a cluster, other nodes' confirmations too). ``code``: the MQTT 5
        reason code (0x87 for a refused topic, §3.4.2.1). While the store cannot be written
        the acknowledgement waits, at most ``ack_timeout`` seconds (``broker.acks``)."""
        self._acks.acknowledge(packet_id, qos, durable=durable, code=code)

    def log_denied(self, what: str, topic: str) -> None:
        """Log a refused topic once per client and topic as logged (cut: a topic may be 64
        KiB, and 100 of them were kept for as long as the connection lasted), at most 100
        different ones, and as the host's other refusals, a few a minute (one SUBSCRIBE may
        carry 100 filters, and a device may connect again at once)."""
        denied = self._denied
        if denied is None:
            denied = self._denied = set()
        shown = printable(topic)
        if shown not in denied and len(denied) < 100:
            denied.add(shown)
            self.broker.client_log.info(
                host_of(self.tls.remote[0]), "topics refused",
                "%s may not %s '%s'", self.label, what, shown,
            )  # fmt: skip

    def kick(self, reason: str, code: int = Reason.ADMINISTRATIVE_ACTION) -> None:
        """Close this connection without its will (revocation, disable, delete: 5.0 reason
        0x98 administrative action, §3.14.2.1)."""
        if self.peer is not None:
            self.peer.kicked_because = reason
        message = "disconnecting %s: %s"
        if self.peer is None:
            log.info(message, self.label, reason)
        else:  # one a device, then a count: it may be kicked at each connect (a limit)
            self.broker.device_lines(log).info(
                self.peer.owner, "kicks", message, self.label, reason
            )  # fmt: skip
        self._end(will=False, reason=(code, reason))

    async def taken_over(self, *, will: bool = True) -> None:
        """Another connection takes this one's session (§3.1.4): end now (with the will if
        ``will``), and make sure the socket is gone soon even if the client stopped reading."""
        taken = (Reason.SESSION_TAKEN_OVER, "another connection took the session")
        self._end(will=will, reason=taken)
        if self.tls.buffered():
            self.tls.abort()
            return
        try:
            async with asyncio.timeout(TAKEOVER_GRACE):
                await self.tls.wait_closed()
        except TimeoutError:
            self.tls.abort()

    def _sent(self, message: Outgoing) -> None:
        """A QoS 1/2 message got its packet id. For a persistent session it leaves only once
        the store has it, so that after a crash it comes back with its id and DUP (§4.4):
        this connection's output waits for that commit (PUBACKs do so anyway)."""
        if message.stored is None:
            return  # not in the store (a clean session's): nothing to record
        store = self.broker.store
        store.message_sent(message)
        # Not while the store is away: the subscriber still gets its messages then (each is
        # in the store, or its publisher has not been acknowledged), only without its id.
        pending = store.pending_attempt()
        if pending is not None and pending is not self._out_wait:
            self._out_wait = pending
            pending.add_done_callback(self._release_output)

    def _release_output(self, done: "asyncio.Future[None]") -> None:
        if done is not self._out_wait:
            return  # a later commit is awaited
        self._out_wait = None
        held, self._out_held = self._out_held, []
        if held and not self.ended:
            self._write(b"".join(held))
        if not self.ended:
            self._flush()

    def _flush(self) -> None:
        data = self.core.data_to_send()
        if data:
            if self._out_wait is not None:
                self._out_held.append(data)
            else:  # ``_write``, inline: every answer and delivery comes this way
                self.broker.metrics.bytes_out += len(data)
                self.tls.write(data)

    def flush(self) -> None:
        """What ``deliver(..., later)`` left waiting: written once per batch."""
        self._batched = 0
        self._flush()

    def _write(self, data: bytes) -> None:
        self.broker.metrics.bytes_out += len(data)
        self.tls.write(data)

    def _end(self, *, will: bool, reason: tuple[int, str] | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        if reason is not None:
            self.core.disconnect(*reason)  # 5.0 §3.14: a 5.0 client reads why
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        if self._cert_timer is not None:
            self._cert_timer.cancel()
            self._cert_timer = None
        self._acks.cancel()
        if self._unread is not None:
            self._unread.cancel()
        auth = self._auth
        if auth is not None and not auth.done() and auth is not asyncio.current_task():
            auth.cancel()
        self._flush()  # a refusal's CONNACK, a last SUBACK before DISCONNECT
        self.core.close()
        session, self.session = self.session, None
        broker = self.broker
        if session is not None:
            broker.registry.released(session, self, self._expiry())
        broker.registry.ended(self)
        connecting.ended(self)  # if it was not admitted: what it held, and the throttle's
        last_will = self.core.will
        if will and session is not None and last_will is not None and self.peer is not None:
            publish_will(self, session, self.peer, last_will)
        self.tls.close()
