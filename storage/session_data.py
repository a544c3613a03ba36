"""Persistent MQTT sessions as plain data: what the broker asks the store to write, and what
it reads back.

The broker (``broker.journal``) describes every change to a persistent session as one of the
writes below and hands a list of them to ``write_sessions`` (``storage.sessions``), which
applies them in order; a start-up reads the sessions back as ``StoredSession``s. Frozen
dataclasses with no behaviour: nothing here imports SQLAlchemy.
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class SaveSession:
    """Create or refresh the session row (a CONNECT with CleanSession 0): its client holds
    it, with this expiry interval (MQTT 5 §3.1.2.11.2; None: never, a 3.1/3.1.1 session's
    while ``persistent_session_expiry`` is 0)."""

    key: str
    device_id: uuid.UUID
    device_name: str
    client_id: str
    expiry_interval: int | None = None


@dataclass(frozen=True)
class SessionAway:
    """The session's client disconnected at ``at``: the session ends ``expiry_interval``
    seconds later (MQTT 5 §3.1.2.11.2; None: never)."""

    key: str
    expiry_interval: int | None
    at: datetime


@dataclass(frozen=True)
class DropSession:
    """Delete the session with its subscriptions and queue (CleanSession 1, §3.1.2.4)."""

    key: str


@dataclass(frozen=True)
class Subscribe:
    key: str
    topic_filter: str  # canonical form
    qos: int
    me_form: bool
    options: int = 0  # MQTT 5 subscription options bits 2-5 (§3.8.3.1)
    identifier: int | None = None  # MQTT 5 Subscription Identifier (§3.8.2.1.2)


@dataclass(frozen=True)
class Unsubscribe:
    key: str
    topic_filter: str


@dataclass(frozen=True)
class Enqueue:
    """A message for a persistent session; ``write_sessions`` returns its id. Written as it
    is when the commit runs: already sent (``packet_id``), or even PUBREC'd (``released``)."""

    key: str
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    packet_id: int | None = None
    attempted: bool = False
    released: bool = False
    properties: bytes | None = None  # MQTT 5, as on the wire with their length (§2.2.2)
    received_at: datetime | None = None  # its Message Expiry Interval counts from then
    message_id: int | None = None  # a QoS 2 message's cluster-wide id (unsigned 64 bits)


@dataclass(frozen=True)
class Acknowledge:
    """The client acknowledged these queued messages: delete them."""

    ids: tuple[int, ...]


@dataclass(frozen=True)
class MarkAttempted:
    """These queued messages are being sent: a later re-delivery carries DUP."""

    ids: tuple[int, ...]


@dataclass(frozen=True)
class MarkSent:
    """These messages went out with these packet ids (row id, packet id): after a restart
    they are re-sent with DUP and the same id (§4.4)."""

    sent: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class MarkReleased:
    """PUBREC came for these QoS 2 messages: PUBREL is what is re-sent (§4.3.3)."""

    ids: tuple[int, ...]


@dataclass(frozen=True)
class AwaitPubrel:
    """QoS 2 PUBLISHes these sessions' clients sent, routed and about to be PUBREC'd:
    (session key, packet id) pairs kept until their PUBREL (§4.3.3). One already kept (its
    PUBREL and a new PUBLISH with the id in between) stays, with nothing to route again."""

    ids: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class PubrelReceived:
    """PUBREL came for these (session key, packet id) pairs: the ids are free again."""

    ids: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class MarkUnrouted:
    """What routing again needs each of these QoS 2 messages, kept with its packet id
    (session key, packet id, opaque text; None: nothing to route again). An id no longer
    kept has nothing to mark."""

    records: tuple[tuple[str, int, str | None], ...]


@dataclass(frozen=True)
class KeepCompleted:
    """The cluster-wide ids of QoS 2 messages these sessions' clients completed (session
    key, slot, seq, message id): each replaces what its session kept in ``slot``; ``seq``
    counts the session's completions, so the highest is its last (a ring of its last few)."""

    ids: tuple[tuple[str, int, int, int], ...]


SessionWrite = (
    SaveSession | SessionAway | DropSession | Subscribe | Unsubscribe | Enqueue | Acknowledge
    | MarkAttempted | MarkSent | MarkReleased | AwaitPubrel | PubrelReceived | MarkUnrouted
    | KeepCompleted
)  # fmt: skip


@dataclass(frozen=True)
class StoredSubscription:
    topic_filter: str
    qos: int
    me_form: bool
    options: int = 0
    identifier: int | None = None


@dataclass(frozen=True)
class StoredMessage:
    id: int
    topic: str
    payload: bytes
    qos: int
    attempted: bool
    packet_id: int | None = None
    released: bool = False
    retain: bool = False
    properties: bytes | None = None
    received_at: datetime | None = None
    message_id: int | None = None  # as ``Enqueue.message_id``


@dataclass
class StoredSession:
    key: str
    device_id: uuid.UUID
    device_name: str
    client_id: str
    expiry_interval: int | None = None
    disconnected_at: datetime | None = None
    subscriptions: list[StoredSubscription] = field(default_factory=list)
    queued: list[StoredMessage] = field(default_factory=list)
    awaiting_pubrel: list[int] = field(default_factory=list)  # QoS 2 ids before PUBREL
    unrouted: dict[int, str] = field(default_factory=dict)  # of those ids: ``MarkUnrouted``
    completed: list[int] = field(default_factory=list)  # ``KeepCompleted``: message ids
    completions: int = 0  # the highest seq of those
