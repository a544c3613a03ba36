"""The broker's session: the core's ``Session`` with the device it belongs to and its client.

Sessions are keyed by ``(device id, client id)`` (``broker.peer.SessionKey``), so a client id
alone never reaches another device's session. ``client`` is the live connection using the
session, or None while its client is away (a persistent session keeps its subscriptions and
messages meanwhile, MQTT 3.1.1 §3.1.2.4).
"""

import asyncio
import collections
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from broker.mqtt.session import Session
from broker.peer import SessionKey, store_key
from nanoiot.errors import ClusterUnavailableError

if TYPE_CHECKING:
    from broker.client import MqttClient
    from broker.router import Message

Group = tuple[str, str]  # a shared subscription: (share name, topic filter)
# A message held for an arriving session, and the shared subscription it is for (None: for
# its plain subscriptions).
Held = tuple["Message", Group | None]


class Arrival:
    """A session moved here from another member, for the moments when its messages come by
    two ways: routed here directly by members whose route tables show this member's filters,
    and sent on by the member it left for those routed with older tables
    (``broker.cluster.handover``).

    Until every member's barrier came (``held`` is a list), whatever reaches the session is
    held, one copy of each (by cluster id), and then given to it sorted by id: an id is its
    first routing member's, then a count, so each publisher's messages come in the order they
    were published (MQTT 3.1.1 §4.6). A shared subscription's copy is held too, with its group:
    the routing member chooses the old member or the new one for each message (MQTT 5.0
    §4.8.2), so a copy sent on may come after a later one that came directly; it is never
    a second copy (one member gets a group's copy), so it is not counted. After that, a late
    copy is still told apart: ``visible`` is the first route table revision with this
    member's filters (None until written); a message routed before it is counted. At most
    ``max_ids`` ids are counted (the oldest are forgotten) and held."""

    __slots__ = ("_ids", "_order", "_sorted", "held", "max_ids", "released", "visible")

    def __init__(self, max_ids: int) -> None:
        self.visible: int | None = None
        self.max_ids = max_ids
        self.held: list[Held] | None = []
        self.released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sorted = True  # ``held`` is in order (nothing came since the last sort)
        self._ids: set[int] = set()
        self._order: collections.deque[int] = collections.deque()

    def first(self, message: "Message") -> bool:
        """Whether the session had no copy of ``message`` yet (one routed to this member
        after its filters were visible reaches it once, and is not counted)."""
        if not message.id or (self.visible is not None and message.routed_at >= self.visible):
            return True
        return self._count(message.id)

    def first_sent_on(self, message: "Message") -> bool:
        """Whether a copy the member left sent on is the session's first: one its router had
        routed after this member's filters were visible came here directly too."""
        if self.visible is not None and message.routed_at >= self.visible:
            return False
        return self._count(message.id) if message.id else True

    def hold(
        self, message: "Message", sent_on: bool, group: Group | None = None
    ) -> "asyncio.Future[None]":
        """Keep ``message`` (unless the session has it) until ``release``, for the shared
        subscription ``group`` if given; the future of its release."""
        assert self.held is not None
        if group is not None:
            first = True  # the group's only copy (§4.8.2), whichever way it came
        else:
            first = self.first_sent_on(message) if sent_on else self.first(message)
        if first and len(self.held) < self.max_ids:
            self.held.append((message, group))
            self._sorted = False
        return self.released

    def refuse(self) -> None:
        """The session moves on to another member before what is held was given to it: the
        held messages are refused (their publishers are not acknowledged and send them
        again, to its new member; MQTT 3.1.1 §4.3.2), never acknowledged and dropped."""
        if self.held is None:
            return
        self.held = None
        if not self.released.done():
            self.released.set_exception(ClusterUnavailableError("the session moved on"))
            self.released.exception()  # retrieved: a parked copy's has nobody waiting

    def release(self, most: int | None = None) -> list[Held]:
        """The messages held, in each publisher's order; from now on none is. With
        ``most``, the first ``most`` of them only while more are held: the rest stays held,
        and what comes meanwhile is held with it, in its place in that order (a large
        backlog is given a part at a time, ``broker.cluster.releasing``)."""
        held = self.held or []
        if not self._sorted:
            held.sort(key=_by_id)
            self._sorted = True
        if most is not None and len(held) > most:
            first = held[:most]
            del held[:most]
            return first
        self.held = None
        return held

    def _count(self, message_id: int) -> bool:
        if message_id in self._ids:
            return False
        self._ids.add(message_id)
        self._order.append(message_id)
        if len(self._order) > self.max_ids:
            self._ids.discard(self._order.popleft())
        return True


def _by_id(held: Held) -> int:
    return held[0].id


@dataclass(slots=True)
class Unrouted:
    """What routing again a persistent session's QoS 2 message needs while other members'
    confirmations of it are awaited, or after one failed (``broker.cluster.resend``): its
    cluster-wide id, and the member each shared subscription's copy was sent to. The store
    keeps it with the message's packet id (``stored``)."""

    message_id: int
    groups: dict[Group, str] = field(default_factory=dict)  # shared subscription -> member
    # The routing not confirmed nor failed yet: what a PUBLISH sent again meanwhile waits for.
    pending: "asyncio.Future[None] | None" = field(default=None, compare=False)

    def as_list(self) -> list[Any]:
        groups = [[*group, member] for group, member in self.groups.items()]
        return [self.message_id, groups]

    @classmethod
    def from_list(cls, found: Any) -> "Unrouted":
        """Raises ValueError or TypeError on what ``as_list`` did not make."""
        message_id, groups = found
        return cls(int(message_id), {(str(n), str(f)): str(m) for n, f, m in groups})

    def stored(self) -> str | None:
        """As the store keeps it; None once there is nothing to route again (0: the message
        was routed on this member alone)."""
        return json.dumps(self.as_list()) if self.message_id else None

    @classmethod
    def read(cls, stored: str) -> "Unrouted | None":
        """One the store kept (None: garbled)."""
        try:
            return cls.from_list(json.loads(stored))
        except (ValueError, TypeError):
            return None


def connect_ends(clean: bool, persistent: bool) -> bool:
    """Whether a connect with Clean Start ``clean`` ends a session that is ``persistent`` or
    not (``BrokerSession.ends_with_connect``, the rule; this, for a session known only by
    what it was: a dead member's, ``broker.cluster.survivor``)."""
    return clean or not persistent


class BrokerSession(Session):
    __slots__ = (
        "arrival",
        "brought",
        "client",
        "completions",
        "device_name",
        "expiry",
        "expiry_left",
        "expiry_timer",
        "pending_will",
        "receive_denied",
        "since",
        "subscription_bytes",
        "unrouted",
        "will_settled",
        "will_timer",
    )

    key: SessionKey

    def __init__(self, key: SessionKey, device_name: str, *, persistent: bool) -> None:
        super().__init__(key, persistent=persistent)
        self.device_name = device_name  # for the `me` form of topics while its client is away
        self.client: MqttClient | None = None
        # Topics its client's ACL denies it (``CompiledAcl.receive_denied``): routing skips
        # them even through a granted wider filter. Set whenever a client takes the session.
        self.receive_denied: re.Pattern[str] | None = None
        # The end of a session whose client is away (5.0 §3.1.2.11.2), and a 5.0 will
        # waiting for its delay (§3.1.3.2.2); a client taking the session cancels both.
        self.expiry_timer: asyncio.TimerHandle | None = None
        # The expiry interval of its last client (None: never, a 3.1/3.1.1 client's while
        # persistent_session_expiry is 0), kept with the session in the store; and, for one
        # read back from it while away, the seconds it has left.
        self.expiry: int | None = None
        self.expiry_left: float | None = None
        self.will_timer: asyncio.TimerHandle | None = None
        self.pending_will: Callable[[], None] | None = None  # publishes it
        # Called once when a will waiting for its delay is published or dropped (a cluster
        # keeps it for survivors meanwhile: ``broker.cluster.wills``).
        self.will_settled: Callable[[], None] | None = None
        # Moved here from another member of a cluster moments ago (``broker.cluster.handover``).
        self.arrival: Arrival | None = None
        # When it came to this process (made, restored, or moved here from another member),
        # on the monotonic clock; and, in a cluster, its QoS 2 messages whose routing other
        # members have not confirmed (yet, or ever), by packet id (``broker.cluster.resend``).
        self.since = time.monotonic()
        self.unrouted: dict[int, Unrouted] | None = None
        # The cluster-wide ids of the QoS 2 messages it was read back from the store with
        # (restored here, taken over, adopted), queued, in flight, or among the last it
        # completed: a copy of one routed again (``broker.cluster.resend``) is not given to
        # it (§4.3.3: delivered once), nor after it completed that one here. At most its
        # queue and window as restored and ``cluster_qos2_completed_kept``.
        self.brought: set[int] | None = None
        # What its topic filters are counted as (``broker.subscription_bytes``).
        self.subscription_bytes = 0
        # How many such messages with a cluster-wide id it completed, as the store counts
        # them: the store keeps the ids of the last few (``SessionStore.message_completed``).
        self.completions = 0

    def ends_with_connect(self, clean: bool) -> bool:
        """Whether a connect with Clean Start (3.1.1: CleanSession) ``clean`` ends this
        session rather than taking it on (§3.1.2.4; 5.0 §3.1.2.11.2: one whose expiry is 0
        ends with its connection). A connection it takes over has its will published only
        then: 5.0 §3.1.3.2.2 [MQTT-3.1.3-9], a connection to the session before the Will
        Delay Interval passed (0 passes only once the old connection is closed, after the
        new one came) means no will; 3.1.1 §3.1.2.5 leaves a take-over out of the will's
        causes, and Mosquitto (07-will-takeover) does the same for it. The one rule for a
        take-over on one member (``Registry.take_over``) and across a cluster
        (``broker.cluster.sessions``, and ``broker.cluster.survivor`` for a will of a dead
        member's session: ``connect_ends``)."""
        return connect_ends(clean, self.persistent)

    def cancel_timers(self) -> None:
        for timer in (self.expiry_timer, self.will_timer):
            if timer is not None:
                timer.cancel()
        self.expiry_timer = self.will_timer = self.pending_will = None
        self.will_done()

    def drop_will(self) -> None:
        """The will waiting for its delay is never published (its device was revoked)."""
        if self.will_timer is not None:
            self.will_timer.cancel()
        self.will_timer = self.pending_will = None
        self.will_done()

    def will_now(self) -> None:
        """The session ends: a will still waiting for its delay goes now (5.0 §3.1.3.2.2:
        at the end of the delay or of the session, whichever comes first)."""
        publish = self.pending_will
        if self.will_timer is not None:
            self.will_timer.cancel()
        self.will_timer = self.pending_will = None
        if publish is not None:
            publish()
        self.will_done()

    def will_done(self) -> None:
        """The will that waited for its delay is published, or will never be."""
        settled, self.will_settled = self.will_settled, None
        if settled is not None:
            settled()

    @property
    def device_id(self) -> str:
        return self.key[0]

    @property
    def client_id(self) -> str:
        return self.key[1]

    @property
    def store_key(self) -> str:
        return store_key(self.key)
