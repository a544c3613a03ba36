"""Acknowledgements a client connection holds until the store has committed their messages.

A PUBACK or PUBREC tells the client the server owns the message (MQTT 3.1.1 §4.3.2), so it
goes out only once what routing wrote is committed, and always in the order of the PUBLISHes
(§4.6): one not yet committed holds back every later one. While the store cannot be written
they wait at most ``ack_timeout`` seconds; then the connection closes without them and the
client sends those messages again on a new one (§4.4). A persistent session's PUBCOMP waits
in the same way for the release of its packet id, and every PUBREL of a stored message for
the release of the message (§4.3.3). A connection closed for a PUBREL that waited is counted
apart from one closed for a PUBACK / PUBREC: its client published nothing that is lost, it
was sent a message whose release could not be saved, and gets that PUBREL on its next
connection (§4.4).

In a cluster a SUBACK waits too, for the other members' route tables to hold its filters
(MQTT 3.1.1 and 5.0 §3.8.4, ``broker.cluster.routes_seen``): that wait is bounded below
``ack_timeout`` and never fails, so it never closes the connection. The connection is read on
meanwhile, so that SUBSCRIBEs a client sends one after another share the rounds of asking the
other members (one round trip for many, not one each); its answers go out in the order of
the packets they answer (§4.6), an UNSUBACK or a SUBACK with nothing to wait for behind the
SUBACKs held. At most ``cluster_max_subacks_waiting`` SUBACKs wait: then the connection is not
read until one went out.

Nor is a connection read while it holds as many answers as a client that keeps the rules can
make wait (``most_held``): a PUBREL costs the client 4 bytes and its PUBCOMP waits for the
commit even when the packet id is unknown (the answers keep the order of the packets, §4.6),
and nothing else bounded them. While the database was locked, one device's 12 MB of PUBRELs
had the broker hold 1.6 million PUBCOMPs (250 MB) until ``ack_timeout``.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from broker.backpressure import read_again, resume
from broker.journal import release_commit
from broker.mqtt.codes import Reason
from broker.mqtt.intake import TURN_BUDGET
from broker.mqtt.session import Outgoing
from nanoiot.errors import ClusterFullError

if TYPE_CHECKING:
    from broker.client import MqttClient

log = logging.getLogger("broker.client")  # logged as the connection it belongs to

# In an entry's QoS place: PUBCOMP, for a PUBREL whose packet id's release is to be committed;
# PUBREL, for a PUBREC of a stored message whose release is to be committed.
_PUBCOMP = 3
_PUBREL = 4
_SUBACK = 5  # a SUBACK, once the other members' route tables have its filters
_UNSUBACK = 6  # an UNSUBACK behind a SUBACK held

# In an entry's last place: the MQTT 5 reason code, for a PUBREL the message it releases, for
# a SUBACK its return codes.
_Code = int | Outgoing | list[int]


class HeldAcks:
    """One connection's acknowledgements waiting for a commit, oldest first."""

    __slots__ = ("_client", "_held", "_subacks", "_then", "_timer")

    def __init__(self, client: "MqttClient") -> None:
        self._client = client
        # (packet id, QoS, the commit, since when, MQTT 5 reason code, or a PUBREL's message).
        # Made by the first acknowledgement that has to wait: an empty deque is 760 bytes,
        # and most connections (idle devices, QoS 0, clean sessions) never hold one.
        self._held: deque[tuple[int, int, asyncio.Future[None] | None, float, _Code]] | None = None
        self._timer: asyncio.TimerHandle | None = None  # bounds the oldest's wait
        self._then: Callable[[], None] | None = None  # once all went out (``then``)
        self._subacks = 0  # SUBACKs held for the other members' route tables

    @property
    def holding(self) -> bool:
        """As many SUBACKs are held as may be, or as many answers as ``most_held``: the
        client is not read meanwhile."""
        if self._held and len(self._held) >= most_held(self._client):
            return True
        held = self._subacks
        return held > 0 and held >= self._client.broker.config.max_subacks_waiting

    def acknowledge(
        self,
        packet_id: int,
        qos: int,
        *,
        durable: "bool | asyncio.Future[None]",
        code: _Code = 0,
    ) -> None:
        """See ``MqttClient.acknowledge``; ``code`` is a PUBREL's message (``release``)."""
        client = self._client
        if isinstance(durable, asyncio.Future):
            pending: asyncio.Future[None] | None = durable
        else:
            pending = client.broker.store.pending_commit() if durable else None
        held = self._held
        if pending is None and not held:
            _answer(client, packet_id, qos, code)
            return
        # Messages of one batch share one future (a commit, a cluster frame's confirmation):
        # the release its first entry asked for takes every later one behind it, so a
        # callback per message would only run the same release again.
        follows = held is not None and bool(held) and held[-1][2] is pending
        loop = client._loop
        if held is None:
            held = self._held = deque()
        held.append((packet_id, qos, pending, loop.time(), code))
        if len(held) == most_held(client):  # not read until fewer wait (``holding``)
            client.broker.metrics.count_limit("max_awaiting_pubrel")
            log.debug("%s: %d answers wait for the store: reading paused",
                      client.label, len(held))  # fmt: skip
            client.tls.pause_reading()
        if pending is not None and not follows:
            pending.add_done_callback(self._release)
        if self._timer is None:
            self._timer = loop.call_later(client.broker.config.ack_timeout, self._overdue)

    def complete(self, packet_id: int, *, known: bool) -> None:
        """PUBCOMP for a persistent session's PUBREL, once the store has committed the
        packet id's release (§4.3.3: after PUBCOMP the client may use the id again), in
        order with the acknowledgements held before it."""
        code = 0 if known else Reason.PACKET_IDENTIFIER_NOT_FOUND
        self.acknowledge(packet_id, _PUBCOMP, durable=True, code=code)

    def release(self, message: Outgoing) -> None:
        """PUBREL for a stored QoS 2 message whose PUBREC came (now, or before: the client
        repeated it, or resumed its session, §4.4), once the store has committed its release
        (``release_commit``), in order with what is held before it."""
        pending = release_commit(message)
        durable = pending if pending is not None else False
        # The message, not only its packet id: the PUBREL goes only while that message is
        # in flight, not to a new one that took its id meanwhile (``Outbound.release``).
        self.acknowledge(message.packet_id, _PUBREL, durable=durable, code=message)

    def suback(self, packet_id: int, codes: list[int], seen: "asyncio.Future[None] | None") -> None:
        """SUBACK once ``seen`` is done (the other members' route tables have its filters,
        ``broker.cluster.routes_seen``; None: at once), behind the SUBACKs held. With as many
        held as may be, the client is not read until one went out (``reading``)."""
        if seen is None and not self._subacks:
            self._client.core.suback(packet_id, codes)
            return
        if seen is not None:
            self._subacks += 1
            if self.holding:
                self._client.tls.pause_reading()
        self.acknowledge(packet_id, _SUBACK, durable=seen or False, code=codes)

    def unsuback(self, packet_id: int, codes: list[int]) -> None:
        """UNSUBACK, behind the SUBACKs held (§4.6: the answers keep the packets' order)."""
        if not self._subacks:
            self._client.core.unsuback(packet_id, codes)
            return
        self.acknowledge(packet_id, _UNSUBACK, durable=False, code=codes)

    def then(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every acknowledgement held so far went out (at once if
        none is held): a DISCONNECT closes the connection after the answers it follows."""
        if not self._held:
            callback()
        else:
            self._then = callback

    def cancel(self) -> None:
        """The connection ended: stop bounding the wait."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release(self, done: "asyncio.Future[None] | None" = None) -> None:
        if done is not None and not done.cancelled():
            # Read now: its entries are acted on below once they come first, but a connection
            # closed meanwhile (``_overdue``) dropped them, and then nobody would read it.
            done.exception()
        client, held = self._client, self._held
        paused = self.holding
        while held and (held[0][2] is None or held[0][2].done()):
            packet_id, qos, pending, _, code = held.popleft()
            if qos == _SUBACK and pending is not None:  # its wait never fails (bounded)
                self._subacks -= 1
                pending = None
            if pending is not None and (pending.cancelled() or pending.exception() is not None):
                # Not the server's yet (another node did not confirm it): close without
                # acknowledging, so the client sends it again (§4.4).
                if not client.ended:
                    why = "cancelled" if pending.cancelled() else pending.exception()
                    log.warning("%s: a message could not be routed (%s): closing",
                                client.label, why)  # fmt: skip
                    client._end(will=False, reason=_unrouted(why))
                continue
            if not client.ended:
                _answer(client, packet_id, qos, code)
        if client.ended:
            return
        if paused and not self.holding and resume(client):  # not read while they waited
            client._receive(b"")
            if client.ended:
                return
        read_again(client)  # it may have stopped reading for these (MQTT 3.1/3.1.1)
        if client.ended:
            return
        client._flush()
        if held:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        then, self._then = self._then, None
        if then is not None:
            then()

    def _overdue(self) -> None:
        """The oldest acknowledgement waited ``ack_timeout`` for the store: close the
        connection without it, so the client sends the message again on a new one (§4.4)
        instead of the broker claiming a message it could not save (§4.3.2)."""
        self._timer = None
        client, held = self._client, self._held
        if client.ended or not held:
            return
        broker = client.broker
        timeout = broker.config.ack_timeout
        loop = client._loop
        due = held[0][3] + timeout - loop.time()
        if due > 0:  # the one that set the timer went meanwhile
            self._timer = loop.call_later(due, self._overdue)
            return
        problem = broker.store.status().problem or "the store did not answer"
        if held[0][1] == _PUBREL:
            # A subscriber's: what could not be saved is the release of a message sent to
            # it, which stays in flight; PUBREL goes again on the next connection (§4.4).
            broker.metrics.subscribers_closed_unsaved += 1
            what, then = "message releases", "the broker sends those PUBRELs again"
        else:
            broker.metrics.publishers_closed_unsaved += 1
            what, then = "messages", "the client sends those messages again"
        log.warning("closing %s: %d acknowledgements waited %g s for the store (%s); %s",
                    client.label, len(held), timeout, problem, then)  # fmt: skip
        held.clear()
        # 5.0 §3.14.2.1: 0x89 server busy (0x88, server unavailable, is for CONNACK only).
        unsaved = (Reason.SERVER_BUSY, f"the broker could not save {what}: {problem}")
        client._end(will=False, reason=unsaved)


def most_held(client: "MqttClient") -> int:
    """Answers one connection may have waiting before it is no longer read: what a client
    that keeps the rules can make wait, a PUBACK or PUBREC for each PUBLISH it may have
    unanswered and a PUBCOMP for each QoS 2 packet id awaiting PUBREL (``max_awaiting_pubrel``
    each), a PUBREL for each message in flight to it (``max_inflight_messages``) and the
    SUBACKs a cluster holds (``cluster_max_subacks_waiting``), and a turn's packets more
    (``TURN_BUDGET``): an MQTT 5 client past its Receive Maximum is still read, and told 0x93."""
    broker = client.broker
    limits = broker.limits
    return (
        2 * limits.max_awaiting_pubrel
        + limits.max_inflight
        + broker.config.max_subacks_waiting
        + TURN_BUDGET
    )


def _unrouted(why: object) -> tuple[int, str]:
    """What an MQTT 5 publisher is told as it is disconnected with a message not routed
    (5.0 §3.14.2.1): 0x97 quota exceeded when a cluster bound refused it, else 0x89 server
    busy (0x88, server unavailable, is for CONNACK only)."""
    full = isinstance(why, ClusterFullError)
    code = Reason.QUOTA_EXCEEDED if full else Reason.SERVER_BUSY
    return code, f"a message could not be routed: {why}"


def _answer(client: "MqttClient", packet_id: int, qos: int, code: _Code) -> None:
    if qos == _UNSUBACK:
        client.core.unsuback(packet_id, code)  # type: ignore[arg-type]
    elif isinstance(code, list):
        client.core.suback(packet_id, code)
    elif not isinstance(code, int):  # a PUBREL's message
        client.core.release(code)
    elif qos == _PUBCOMP:
        client.core.complete(packet_id, known=not code)
    else:
        client.core.acknowledge(packet_id, qos, code)


def with_commit(
    durable: "bool | asyncio.Future[None]", commit: "asyncio.Future[None] | None"
) -> "bool | asyncio.Future[None]":
    """What an acknowledgement waits for (``MqttClient.acknowledge``'s ``durable``) when it
    must wait for the store's ``commit`` as well: a future for other members' confirmations
    is joined with it, and fails as it fails (the commit itself never does)."""
    if not isinstance(durable, asyncio.Future):
        return True  # the commit pending when the acknowledgement is made
    if commit is None or commit is durable or commit.done():
        return durable
    joined: asyncio.Future[None] = durable.get_loop().create_future()

    def settle(_done: object) -> None:
        if joined.done():
            return
        if durable.cancelled():
            joined.cancel()
        elif durable.done() and (error := durable.exception()) is not None:
            joined.set_exception(error)
        elif durable.done() and commit.done():
            joined.set_result(None)

    durable.add_done_callback(settle)
    commit.add_done_callback(settle)
    return joined
