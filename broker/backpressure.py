"""When the broker stops reading a connection: an MQTT 3.1 or 3.1.1 publisher while
``max_awaiting_pubrel`` of its QoS 1/2 messages wait for their PUBACK / PUBREC, and any
client whose read brought more than one turn's work (``take_turns``).

The broker answers such a PUBLISH only once the store has committed the message (§4.3.2,
``broker.acks``), and these versions have no Receive Maximum (MQTT 5's bound, which a client
is told and which closes it past it). Nor may the broker close a 3.1.1 client for not
waiting: nothing in 3.1.1 asks it to. So the protocol core stops at the bound
(``Connection.window_full``), the socket is no longer read, and TCP holds the client back:
what it sent waits in the kernel's buffers, not in the broker. Each acknowledgement that goes
out reads on. Keep-alive does not run out meanwhile (``broker.keep_alive``), and starts
again once reading does (§3.1.2.10: the client was not read, not silent).

Fairness: the event loop runs one callback at a time, and a read hands the client's whole
buffer to the protocol core at once. A read of 256 KB of one-filter SUBSCRIBEs kept every
other client waiting for a quarter of a second or more. The core stops after a turn's budget
(``Connection.turn_over``); the socket is then paused and the rest handled in a later loop
turn (``call_soon``), after what other connections have ready, until it is done and reading
resumes.

A client that does not read what it is sent is not read either (``hold_unread``): each of
its packets may ask for an answer (PINGRESP, PUBCOMP, PUBREC...), and a client sending them
without reading the answers had the broker hold 72 MB of them after 78 MB of PINGREQ. Past
``max_outgoing_buffer`` bytes not yet taken by its socket, reading stops until the socket's
buffer drains; as with the other reasons, TCP then holds the client back.

A connection may be held back for more than one reason at a time (``reading`` names them all:
these three, and the restore of the previous run's sessions, ``broker.connecting``). Whatever
ends one calls ``resume``, which reads the socket again only once none holds: the first to
end must not read a client another still holds back. Keep-alive does not run out while a
connection is not read, whatever the reason (``broker.keep_alive``).

Works on ``broker.client.MqttClient``'s state, as ``broker.connecting`` does.
"""

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.client import MqttClient

log = logging.getLogger("broker.client")  # logged as the connection it belongs to


def hold_back(client: "MqttClient") -> None:
    """Stop reading ``client``'s socket: its unanswered messages fill the window."""
    if client._full:
        return
    client._full = True
    client.broker.metrics.publishers_paused += 1
    log.debug("%s: %d messages await their acknowledgement (max_awaiting_pubrel): "
              "reading paused", client.label, client.broker.limits.max_awaiting_pubrel)  # fmt: skip
    client.tls.pause_reading()


def read_again(client: "MqttClient") -> None:
    """Acknowledgements went out (``broker.acks``): read on if the window has room, first
    what the last read brought beyond it."""
    if not client._full or client.ended or client.core.window_full:
        return
    client._full = False
    if resume(client):  # else its turn (``_next_turn``) or the restore (``restored``) reads it
        client._receive(b"")


def take_turns(client: "MqttClient") -> None:
    """The core left work for a later turn: stop reading until it is done."""
    if client._turn is not None:
        return
    client.tls.pause_reading()
    client._turn = client._loop.call_soon(_next_turn, client)


def _next_turn(client: "MqttClient") -> None:
    client._turn = None
    if client.ended:
        return
    client._receive(b"")  # may take another turn, or fill the window
    if client.ended:
        return
    client._flush()
    hold_unread(client)
    resume(client)


def hold_unread(client: "MqttClient") -> None:
    """Stop reading ``client`` while more than ``max_outgoing_buffer`` bytes wait for its
    socket (it does not read its answers), until the socket's buffer drains."""
    if client._unread is not None or client.ended:
        return
    if client.tls.buffered() <= client.broker.config.max_outgoing_buffer:
        return
    client.broker.metrics.count_limit("max_outgoing_buffer")
    client.tls.pause_reading()
    client._unread = client._loop.create_task(_read_when_drained(client))


async def _read_when_drained(client: "MqttClient") -> None:
    await client.tls.writer.drain()  # returns once the socket's buffer drained, or it closed
    client._unread = None
    resume(client)


def reading(client: "MqttClient") -> bool:
    """Whether the broker reads what ``client`` sends: no reason not to holds. The reasons,
    each cleared by what ends it before it calls ``resume``: its unanswered messages fill the
    window (``_full``: ``hold_back``, ``read_again``), the rest of a read waits for its turn
    (``_turn``: ``take_turns``, ``_next_turn``), it does not read what it is sent
    (``_unread``: ``hold_unread``), it is not admitted yet with more than a packet sent, or
    the previous run's sessions are being restored (``_paused``: ``broker.client``,
    ``broker.connecting``), or as many of its answers as may be wait for the store or its
    SUBACKs for the other members of a cluster (``HeldAcks.holding``). Keep-alive does not
    run meanwhile (``broker.keep_alive``)."""
    return not (
        client._full
        or client._turn is not None
        or client._paused
        or client._unread is not None
        or client._acks.holding
    )


def resume(client: "MqttClient") -> bool:
    """One reason not to read ``client`` ended: read its socket again unless another still
    holds (the first to end must not read a client another one holds back). True if it
    reads again."""
    if client.ended or not reading(client):
        return False
    client.core.last_received = client._loop.time()  # §3.1.2.10: not read, not silent
    client.tls.resume_reading()
    return True
