"""What the registry asks of a cluster (``broker.cluster.sessions``): which member holds which
session, so that a persistent session is held in memory by one member only
(``Registry.ownership``; None on a single node).

It must not import the cluster package: the broker runs without it.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from broker.peer import SessionKey
from broker.sessions import BrokerSession

if TYPE_CHECKING:
    from broker.client import MqttClient

__all__ = ["Ownership"]


class Ownership(Protocol):
    """Which member of a cluster holds which session (``broker.cluster.sessions``)."""

    async def claim(self, client: "MqttClient", clean: bool) -> bool:
        """Make this member the session's only holder, any connection on another member
        closed (with its will if ``clean``, the connect's Clean Start, ends the session:
        ``BrokerSession.ends_with_connect``) and its session there given up; True if this
        member did not hold it before (its copy here, if any, is not to be trusted)."""
        ...

    async def owned(self, keys: list[SessionKey]) -> set[SessionKey]:
        """Of these stored sessions, the ones this member holds (or now claimed)."""
        ...

    def restored(self, sessions: list[BrokerSession]) -> None:
        """These sessions of this member's were restored from the store (what was kept for
        them while it was away is given to them: ``broker.cluster.replay``)."""
        ...

    def restoration_done(self) -> None:
        """Every session of this member's is restored."""
        ...

    def will_due(self, client: "MqttClient", publish: Callable[[], None]) -> None:
        """``client``'s will falls due: ``publish`` it, once the cluster will not publish
        it again (``broker.cluster.wills``)."""
        ...

    def loaded(self, key: SessionKey, session: BrokerSession | None) -> None:
        """The session this member claimed was read from the shared store (it may have
        been routed to on the member it left meanwhile: ``broker.cluster.handover``)."""
        ...

    async def settled(self, key: SessionKey, session: BrokerSession | None) -> None:
        """Once the other members can see this member's subscriptions made so far, and
        what was routed to the session on the member it left is here."""
        ...

    def abandoned(self, key: SessionKey) -> None:
        """Another member took the claimed session while it was being read."""
        ...

    def ended(self, client: "MqttClient") -> None:
        """A connection ended here (its will, if any, is this member's business)."""
        ...

    def holds(self, key: SessionKey) -> bool:
        """Whether this member's last claim of ``key`` still stands (no other member took
        the session since)."""
        ...

    def awaiting_pubrel(self, key: SessionKey) -> set[int]:
        """The packet ids of the client's QoS 2 messages the member that gave the session up
        had received and not seen released (once; empty if none)."""
        ...
