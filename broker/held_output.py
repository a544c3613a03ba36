"""A persistent session's output held until the store records the packet ids it carries.

A QoS 1/2 message sent to a persistent session leaves only once the store has its packet id,
so that after a crash it comes back with that id and DUP (MQTT 3.1.1 §4.4): the connection's
output waits for that commit attempt (``sent``), and goes out, in order, once it ends
(``_release``). Not while the store is away: the subscriber still gets its messages then (each
is in the store, or its publisher has not been acknowledged), only without its id.

What waits counts as the client's unsent output (``unsent``), as what its socket has not
taken does: ``max_outgoing_buffer`` bounds both. Before, only the socket's was counted, and
while a commit attempt lasted (5 s with the SQLite write lock held elsewhere: its busy
timeout) the QoS 0 messages a device published to its own persistent subscription that does
not read piled up here: 1.4 GB in 3.5 s.

Works on ``broker.client.MqttClient``'s state, as ``broker.backpressure`` does.
"""

import asyncio
from typing import TYPE_CHECKING

from broker.mqtt.session import Outgoing

if TYPE_CHECKING:
    from broker.client import MqttClient


class HeldOutput:
    """What one connection holds, and the commit attempt it waits for."""

    __slots__ = ("parts", "size", "wait")

    def __init__(self) -> None:
        self.wait: asyncio.Future[None] | None = None
        self.parts: list[bytes] = []
        self.size = 0  # bytes in ``parts``

    def hold(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)


def unsent(client: "MqttClient") -> int:
    """Bytes written to ``client`` that it has not taken yet, those held here included."""
    return client.tls.buffered() + client._held.size


def sent(client: "MqttClient", message: Outgoing) -> None:
    """A QoS 1/2 message got its packet id: for a persistent session, the output waits for
    the commit attempt that records it (PUBACKs do so anyway)."""
    if message.stored is None:
        return  # not in the store (a clean session's): nothing to record
    store = client.broker.store
    store.message_sent(message)
    pending = store.pending_attempt()  # None while the store is away
    held = client._held
    if pending is not None and pending is not held.wait:
        held.wait = pending
        pending.add_done_callback(lambda done: _release(client, done))


def _release(client: "MqttClient", done: "asyncio.Future[None]") -> None:
    held = client._held
    if done is not held.wait:
        return  # a later commit is awaited
    held.wait = None
    parts, held.parts, held.size = held.parts, [], 0
    if parts and not client.ended:
        client._write(b"".join(parts))
    if not client.ended:
        client._flush()


async def released(client: "MqttClient") -> None:
    """Once no output is held (``backpressure``: it then waits for the socket to drain)."""
    while (waiting := client._held.wait) is not None:
        await asyncio.wait((waiting,))  # not cancelled with this task: others wait for it
