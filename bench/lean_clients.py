"""The lean load generator's connections: a protocol that hands every byte after CONNACK
and SUBACK to a callback, and placement by asking the members where a client is connected,
as the web UI does (``<cluster>.clients.where``, ``broker.cluster.view``)."""

import asyncio
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.mqtt_load import connect_packet
from bench.mqtt_wire import DISCONNECT, Handshakes, client_context, subscribe_packet

Data = Callable[[bytes], None]


class Lean(Handshakes):
    """CONNACK and SUBACK read packet by packet; after them every byte goes to ``on_data``."""

    def __init__(self) -> None:
        super().__init__()
        self.on_data: Data | None = None

    def data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
            return
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 2 and len(buffer) >= 2 + buffer[1]:  # CONNACK, SUBACK: short
            kind, body = buffer[0] >> 4, bytes(buffer[2 : 2 + buffer[1]])
            del buffer[: 2 + len(body)]
            future = self.connack if kind == 2 else self.suback if kind == 9 else None
            if future is not None and not future.done():
                future.set_result(body[1] if kind == 2 else body[-1])

    def write(self, data: bytes | memoryview) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def close(self) -> None:
        self.write(DISCONNECT)
        assert self.transport is not None
        self.transport.close()
        await self.closed


async def connect(port: int, context: ssl.SSLContext, client_id: str) -> Lean:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        Lean, "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    client.write(connect_packet(client_id, 0))
    if (code := await client.connack) != 0:
        raise RuntimeError(f"CONNACK {code} for {client_id}")
    return client


async def subscribe(client: Lean, topic: str, qos: int) -> None:
    client.write(subscribe_packet(topic, qos))
    if await client.suback != qos:
        raise RuntimeError(f"subscription to {topic} refused or downgraded")


class Where:
    """Which member a client is connected to, as the members say (``clients.where``)."""

    def __init__(self, url: str, cluster: str, members: int) -> None:
        self.url, self.cluster, self.expected = url, cluster, members
        self.members: list[str] = []
        self._client: Any = None

    async def open(self) -> None:
        import nats

        self._client = await nats.connect(self.url)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def member_of(self, device_id: str, client_id: str) -> str:
        for _ in range(20):  # the registry may take a moment after CONNACK
            for answer in await self._ask([device_id]):
                if client_id in answer["devices"].get(device_id, []):
                    return str(answer["member"])
        raise RuntimeError(f"no member says it holds {client_id}")

    async def members_of(self, device_ids: list[str]) -> dict[str, str]:
        """Device id -> the member holding its connection (one each), asked 1,000 at a time
        (what a member answers at most)."""
        found: dict[str, str] = {}
        for start in range(0, len(device_ids), 1000):
            for answer in await self._ask(device_ids[start : start + 1000]):
                found |= {device: str(answer["member"]) for device in answer["devices"]}
        return found

    async def _ask(self, device_ids: list[str]) -> list[dict[str, Any]]:
        answers: asyncio.Queue[bytes] = asyncio.Queue()

        async def collect(msg: Any) -> None:
            if msg.data:
                answers.put_nowait(msg.data)

        inbox = self._client.new_inbox()
        subscription = await self._client.subscribe(inbox, cb=collect)
        try:
            payload = json.dumps(device_ids).encode()
            await self._client.publish(f"{self.cluster}.clients.where", payload, reply=inbox)
            found: list[dict[str, Any]] = []
            try:
                async with asyncio.timeout(1.0):
                    while len(found) < self.expected:
                        found.append(json.loads(await answers.get()))
            except TimeoutError:
                pass
            self.members = sorted({*self.members, *(str(a["member"]) for a in found)})
            return found
        finally:
            await subscription.unsubscribe()


@dataclass
class Setup:
    spec: dict[str, Any]
    where: Where | None
    tries: int = 0  # connections made in all, placing included
    clients: list[Lean] = field(default_factory=list)

    async def client(self, device: list[str], port: int, client_id: str, target: int | None
                     ) -> tuple[Lean, str]:  # fmt: skip
        """A connection of ``device`` (name, pem, id); on member ``target`` (an index into
        the members) when given: reconnected under a new client id until it is there."""
        context = client_context(self.spec["ca"], device[1])
        for attempt in range(50):
            self.tries += 1
            name = f"{client_id}-{attempt}"
            client = await connect(port, context, name)
            if self.where is None or not device[2]:
                self.clients.append(client)
                return client, ""
            member = await self.where.member_of(device[2], name)
            if target is None or member == self.where.members[target % len(self.where.members)]:
                self.clients.append(client)
                return client, member
            await client.close()
        raise RuntimeError(f"{client_id} never landed on member {target}")
