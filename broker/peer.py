"""Who an authenticated client is and what it may do, as admission decided it.

A ``Peer`` is made once per connection, after authentication and before any session is
touched (sessions belong to devices, so a client id alone never reaches another device's
session: keys are ``(device id, client id)``). The change-feed follower decides a live
peer again from its ``request`` when its device or credentials change.
"""

from dataclasses import dataclass

from auth.acl import CompiledAcl, Identity, to_canonical
from auth.decision import Decision
from broker.authn import ConnectRequest
from nanoiot.text import printable

SessionKey = tuple[str, str]  # (device id, client id)


@dataclass(eq=False, slots=True)  # one per connection
class Peer:
    identity: Identity
    decision: Decision
    request: ConnectRequest
    acl: CompiledAcl
    client_id: str  # as the client sent it, or as assigned when it sent none
    kicked_because: str | None = None

    @property
    def device_id(self) -> str:
        return self.identity.device_id

    @property
    def key(self) -> SessionKey:
        return (self.identity.device_id, self.client_id)

    @property
    def owner(self) -> str:
        """The device (or application) as logs name it, whatever its client id: the key of
        the lines it can repeat by connecting again (``Broker.device_lines``)."""
        kind = "application" if self.identity.application else "device"
        return f"{kind} '{self.identity.device_name}'"

    @property
    def label(self) -> str:
        """How logs name this client. The client id is the client's own text (MQTT 3.1.1
        §3.1.3.1 and 5.0 §3.1.3.1 allow any UTF-8 but U+0000): escaped, so that a newline in it
        cannot forge a log line nor an escape sequence rewrite the operator's terminal."""
        kind = "application" if self.identity.application else "device"
        return f"{kind} '{self.identity.device_name}' (client id '{printable(self.client_id)}')"

    def canonical(self, topic: str) -> str:
        """A topic or filter as the client wrote it, in the broker's canonical form."""
        identity = self.identity
        return topic if identity.application else to_canonical(topic, identity.device_name)


def store_key(key: SessionKey) -> str:
    """The session's key in the store: ``<device id>/<client id>`` (a device id has no '/')."""
    return f"{key[0]}/{key[1]}"
