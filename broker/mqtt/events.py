"""What a connection tells the broker, besides the packets it must act on.

``Connection.receive_data`` and the connection's commands return a list of events in the
order things happened. The packets a broker acts on are events themselves (``Connect``,
``Publish``, ``Subscribe``, ``Unsubscribe``, ``Disconnect``); the classes here are the rest.
"""

from dataclasses import dataclass

from broker.mqtt.packets import Connect, Disconnect, Publish, Subscribe, Unsubscribe
from broker.mqtt.session import Outgoing


# Not frozen, as the hot path makes one per packet: a frozen dataclass's __init__ sets
# each field through object.__setattr__, four times the cost. Nothing changes one once made.
@dataclass(slots=True)
class MessageSent:
    """A QoS 1 or 2 message went out for the first time, with its packet id."""

    message: Outgoing


@dataclass(frozen=True, slots=True)
class MessageReleased:
    """PUBREC came for a QoS 2 message: PUBREL was sent, PUBCOMP is awaited (§4.3.3). For a
    stored message PUBREL is not sent yet: only once the store committed the release
    (``Outbound.release``), so that no PUBLISH of it is sent after a PUBREL (§4.3.3), not
    even by a server that read the session from the store after a crash."""

    message: Outgoing


@dataclass(frozen=True, slots=True)
class PubrelAgain:
    """A stored QoS 2 message released before is owed its PUBREL again: its client repeated
    the PUBREC, or resumed the session (§4.4). Not sent yet: like the first, only once the
    store committed the release (``MessageReleased``)."""

    message: Outgoing


# Not frozen: see MessageSent.
@dataclass(slots=True)
class MessageCompleted:
    """The client acknowledged a message: PUBACK for QoS 1, PUBCOMP for QoS 2."""

    message: Outgoing


@dataclass(frozen=True, slots=True)
class MessageDropped:
    """A message left the session's queue unsent: ``limit`` is the limit it hit."""

    message: Outgoing
    limit: str


@dataclass(frozen=True, slots=True)
class DuplicateReceived:
    """A QoS 2 PUBLISH came again before its PUBREL (§4.3.3): acknowledge it with PUBREC,
    deliver nothing (unless the broker could not route it the first time, which it tells
    from the packet id: ``publish`` is the PUBLISH as sent again)."""

    packet_id: int
    publish: Publish | None = None


@dataclass(frozen=True, slots=True)
class PublishReleased:
    """PUBREL came from the client of a persistent session: the packet id, kept since its
    QoS 2 PUBLISH (§4.3.3), is free again, in the store too (``known``; not known: sent
    again, its first release went before). The broker answers PUBCOMP (``complete``) once
    the store has committed the release: after PUBCOMP the client may use the id for a new
    message, which a store still holding it would take for this one sent again."""

    packet_id: int
    known: bool = True


@dataclass(frozen=True, slots=True)
class LimitExceeded:
    """The client went past a limit that only closing its connection can enforce."""

    limit: str
    detail: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The client broke the protocol; the connection is closed (3.1.1 §4.8). ``connected``:
    whether its CONNECT had been received."""

    reason: str
    code: int
    connected: bool


@dataclass(frozen=True, slots=True)
class ConnectionRefused:
    """The CONNECT was answered with ``return_code`` and the connection is done (§3.1.4)."""

    reason: str
    return_code: int


Event = (
    Connect | Publish | Subscribe | Unsubscribe | Disconnect | MessageSent | MessageReleased
    | MessageCompleted | MessageDropped | DuplicateReceived | PublishReleased | PubrelAgain
    | LimitExceeded | ProtocolViolation | ConnectionRefused
)  # fmt: skip
