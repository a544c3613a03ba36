"""One live connection per session across the cluster (MQTT 3.1.1 §3.1.4, take-over).

Each connect claims its session key (device id, client id) in the JetStream key-value bucket
``<cluster>_clients`` by compare-and-set, with this member's name as the value, before its
CONNACK. When the key named another member, that member is asked
(``<cluster>.takeover.<member>``, request/reply) to close its connections on the session,
and the CONNACK waits for its answer. Of two connects racing on two members, the later
compare-and-set wins and the earlier is closed: exactly one stays. A member that does not
answer within the request timeout is taken to be gone. The request names the revision it
replaced, so that it closes the connection that wrote it and never a newer one.

If NATS cannot be reached the connect goes on without the claim (a device keeps connecting
while NATS is away), logged; exclusivity across members then returns with NATS.

What a claim does not do yet: move a persistent session's subscriptions and queued messages
from the member that held it; the session on the new member starts from what this member
has (see docs/deploy.md).
"""

import json
import logging
from typing import TYPE_CHECKING, Final

from broker.cluster.frames import to_key
from broker.cluster.kv import KeyValue
from broker.cluster.link import ClusterLink
from broker.peer import SessionKey, store_key
from nanoiot.errors import ClusterConflictError, ClusterError, ClusterUnavailableError

if TYPE_CHECKING:
    from broker.client import MqttClient
    from broker.registry import Registry

__all__ = ["BUCKET", "SessionClaims"]

log = logging.getLogger(__name__)

BUCKET: Final = "clients"
_ATTEMPTS: Final = 5  # compare-and-set rounds lost to other members before giving up
_REMEMBERED: Final = 100_000  # claims kept before those of ended connections are dropped


class SessionClaims:
    def __init__(self, link: ClusterLink, bucket: KeyValue, registry: "Registry") -> None:
        self.link = link
        self.bucket = bucket
        self.registry = registry
        self.taken_away = 0  # connections closed here for a connect on another member
        # Session -> the revision of this member's last claim and the connection that made
        # it: a take-over request closes that connection only if it overwrote that claim,
        # never a newer connection here whose own claim comes later.
        self._claimed: dict[SessionKey, tuple[int, MqttClient]] = {}

    async def start(self) -> None:
        await self.link.subscribe(self.link.subject("takeover", self.link.member), self._close)

    async def claim(self, client: "MqttClient") -> None:
        """``client`` holds its session now; the member that held it closed its connection."""
        assert client.peer is not None
        key = client.peer.key
        member = self.link.member
        try:
            previous, revision = await self._swap(to_key(store_key(key)), member.encode())
        except ClusterError as exc:
            log.warning("session %s not claimed in the cluster: %s", store_key(key), exc)
            return
        self._remember(key, revision, client)
        if previous is None or previous[0] == member:
            return
        request = json.dumps({"key": list(key), "revision": previous[1]}).encode()
        try:
            await self.link.request(self.link.subject("takeover", previous[0]), request)
        except ClusterUnavailableError as exc:
            log.info("member %s did not answer for session %s (%s): taken as gone",
                     previous[0], store_key(key), exc)  # fmt: skip

    async def _swap(self, kv_key: str, value: bytes) -> tuple[tuple[str, int] | None, int]:
        """Write ``value`` by compare-and-set: the (member, revision) it replaced, if any,
        and the revision written."""
        for _ in range(_ATTEMPTS):
            entry = await self.bucket.get(kv_key)
            try:
                if entry is None:
                    return None, await self.bucket.create(kv_key, value)
                written = await self.bucket.update(kv_key, value, entry.revision)
                return (entry.value.decode(), entry.revision), written
            except ClusterConflictError:
                continue  # another member wrote meanwhile: read again
        raise ClusterConflictError(f"{_ATTEMPTS} compare-and-set rounds lost")

    def _remember(self, key: SessionKey, revision: int, client: "MqttClient") -> None:
        claimed = self._claimed
        if len(claimed) >= _REMEMBERED:
            for stale in [k for k, (_, c) in claimed.items() if c.ended]:
                del claimed[stale]
        claimed[key] = (revision, client)

    async def _close(self, payload: bytes, _reply: str | None) -> bytes:
        """Another member's claim replaced ours at ``revision``: close the connection that
        made it."""
        request = json.loads(payload)
        device_id, client_id = request["key"]
        key = (str(device_id), str(client_id))
        claimed = self._claimed.get(key)
        if claimed is None or claimed[0] > int(request["revision"]) or claimed[1].ended:
            return b"0"
        del self._claimed[key]
        log.info("%s connected on another node: closing this connection", claimed[1].label)
        await claimed[1].taken_over()
        self.taken_away += 1
        return b"1"
