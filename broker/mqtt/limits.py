"""What one client may make the broker hold: the limits a connection and its session enforce.

Each is a setting (``nanoiot.settings``); the broker counts every time one is hit. Names
follow Mosquitto's where it has the same limit (``max_inflight_messages``,
``max_queued_messages``, ``max_queued_bytes``, ``message_size_limit``).
"""

from dataclasses import dataclass, field

from broker.mqtt.packets import MQTT_3_1, MQTT_3_1_1


@dataclass(frozen=True, slots=True)
class Limits:
    # Largest packet a client may send, fixed header included (3.1.1 §2.2.3 allows 256 MB).
    max_packet_size: int = 256 * 1024
    # Outbound QoS 1 and 2 messages sent and not yet acknowledged, per client; the others
    # wait in the session's queue (MQTT 5 calls this the client's Receive Maximum).
    max_inflight: int = 20
    # Messages and payload bytes a session's queue holds (offline, or behind the in-flight
    # window); past either, QoS 0 messages are dropped first, then the oldest.
    max_queued_messages: int = 1000
    max_queued_bytes: int = 10 * 1024 * 1024
    # Inbound QoS 2 packet ids whose PUBREL has not come yet, per client (§4.3.3).
    max_awaiting_pubrel: int = 100
    # Protocol levels the server accepts (3: MQTT 3.1, 4: 3.1.1, 5: 5.0).
    levels: frozenset[int] = field(default_factory=lambda: frozenset({MQTT_3_1, MQTT_3_1_1}))
