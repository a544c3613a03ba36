"""Every live connection by device: what a revocation must reach.

``live`` holds every authenticated, open connection by device, from the moment it is
admitted (before its CONNACK) until it ends, so that a revocation reaches all of them
(``kick``). The base of ``broker.registry.Registry``, which adds the sessions they are on.
In a cluster (``ownership``: ``broker.ownership``) a connection's end and its will go
through the member's ownership of its session.

Imports the client for its type only.
"""

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from broker.ownership import Ownership
from broker.peer import Peer

if TYPE_CHECKING:
    from broker.client import MqttClient


class LiveConnections:
    def __init__(self) -> None:
        self.live: dict[str, set[MqttClient]] = {}  # device id -> its open connections
        self._clients = 0  # in ``live``: counted, not summed (read each ``sys_interval``)
        # In a cluster: make this member the session's only holder before the CONNACK
        # (``broker.cluster.sessions``).
        self.ownership: Ownership | None = None

    def admitted(self, client: "MqttClient") -> None:
        assert client.peer is not None
        clients = self.live.setdefault(client.peer.device_id, set())
        self._clients += client not in clients
        clients.add(client)

    def ended(self, client: "MqttClient") -> None:
        peer = client.peer
        if peer is None:
            return
        if self.ownership is not None:
            self.ownership.ended(client)
        clients = self.live.get(peer.device_id)
        if clients is not None and client in clients:
            self._clients -= 1
            clients.discard(client)
            if not clients:
                del self.live[peer.device_id]

    def will_due(self, client: "MqttClient", publish: Callable[[], None]) -> None:
        """Publish ``client``'s will, through the cluster's ownership when there is one."""
        if self.ownership is None:
            publish()
        else:
            self.ownership.will_due(client, publish)

    def live_clients(self) -> Iterator["MqttClient"]:
        for clients in list(self.live.values()):
            yield from list(clients)

    def client_count(self) -> int:
        return self._clients

    def kick(self, device_id: str, reason: str, which: Callable[[Peer], bool] | None) -> int:
        """Close the device's connections (those ``which`` selects), without their wills."""
        chosen = [
            client
            for client in list(self.live.get(device_id, ()))
            if client.peer is not None and (which is None or which(client.peer))
        ]
        for client in chosen:
            client.kick(reason)
        return len(chosen)
