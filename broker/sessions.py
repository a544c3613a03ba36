"""The broker's session: the core's ``Session`` with the device it belongs to and its client.

Sessions are keyed by ``(device id, client id)`` (``broker.peer.SessionKey``), so a client id
alone never reaches another device's session. ``client`` is the live connection using the
session, or None while its client is away (a persistent session keeps its subscriptions and
messages meanwhile, MQTT 3.1.1 §3.1.2.4).
"""

import re
from typing import TYPE_CHECKING

from broker.mqtt.session import Session
from broker.peer import SessionKey, store_key

if TYPE_CHECKING:
    from broker.client import MqttClient


class BrokerSession(Session):
    __slots__ = ("client", "device_name", "receive_denied")

    key: SessionKey

    def __init__(self, key: SessionKey, device_name: str, *, persistent: bool) -> None:
        super().__init__(key, persistent=persistent)
        self.device_name = device_name  # for the `me` form of topics while its client is away
        self.client: MqttClient | None = None
        # Topics its client's ACL denies it (``CompiledAcl.receive_denied``): routing skips
        # them even through a granted wider filter. Set whenever a client takes the session.
        self.receive_denied: re.Pattern[str] | None = None

    @property
    def device_id(self) -> str:
        return self.key[0]

    @property
    def client_id(self) -> str:
        return self.key[1]

    @property
    def store_key(self) -> str:
        return store_key(self.key)
