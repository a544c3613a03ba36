"""What the broker knows about the client behind a session: who it is and what it may do.

amqtt keys sessions by client id alone, so a client id is all another client needs to take
over a session (facts.md §2, T5). We key sessions by ``<device id>/<client id>`` instead and
hang a ``Peer`` on the amqtt ``Session`` (``session.attributes``), so every override can ask
"whose session is this?" without a lookup.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from amqtt.session import Session

from auth.acl import CompiledAcl, Identity
from auth.decision import Decision
from broker.authn import ConnectRequest
from broker.transport import TlsConnection

_KEY = "nanoiot.peer"


@dataclass(eq=False)
class Peer:
    """One authenticated client of a session (replaced when the session is resumed)."""

    identity: Identity
    decision: Decision
    request: ConnectRequest
    acl: CompiledAcl
    client_id: str  # as the client sent it, or as assigned when it sent none
    connection: TlsConnection
    # Canonical filters this session subscribed to in the `v1/devices/me/...` form; messages
    # matching them go out in that form again (auth.acl.to_device_form).
    me_filters: set[str] = field(default_factory=set)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    kicked_because: str | None = None

    @property
    def device_id(self) -> str:
        return self.identity.device_id

    @property
    def label(self) -> str:
        """How logs name this client."""
        kind = "application" if self.identity.application else "device"
        return f"{kind} '{self.identity.device_name}' (client id '{self.client_id}')"


def session_key(identity: Identity, client_id: str) -> str:
    """The broker-internal session id: a session belongs to one device (§3.1.3.1 lets the
    server decide how client ids map to sessions; ours are per device)."""
    return f"{identity.device_id}/{client_id}"


def peer_of(session: Session | None) -> Peer | None:
    if session is None:
        return None
    attributes: dict[str, Any] = session.attributes
    peer = attributes.get(_KEY)
    return peer if isinstance(peer, Peer) else None


def attach_peer(session: Session, peer: Peer) -> None:
    session.attributes[_KEY] = peer
