"""What one client may make the broker hold: the limits a connection and its session enforce.

Each is a setting (``nanoiot.settings``); the broker counts every time one is hit. Names
follow Mosquitto's where it has the same limit (``max_inflight_messages``,
``max_queued_messages``, ``max_queued_bytes``, ``message_size_limit``).
"""

from dataclasses import dataclass, field

from broker.mqtt.packets import MQTT_3_1, MQTT_3_1_1, MQTT_5

NEVER_EXPIRES = 0xFFFF_FFFF  # MQTT 5 §3.1.2.11.2: a session expiry interval of "never"


@dataclass(frozen=True, slots=True)
class Limits:
    # Largest packet a client may send, fixed header included (3.1.1 §2.2.3 allows 256 MB).
    max_packet_size: int = 256 * 1024
    # Outbound QoS 1 and 2 messages sent and not yet acknowledged, per client; the others
    # wait in the session's queue (MQTT 5 calls this the client's Receive Maximum).
    max_inflight: int = 20
    # Messages and payload bytes a session's queue holds (offline, or behind the in-flight
    # window); past either, the expired messages are dropped first (``broker.mqtt.queues``),
    # then QoS 0 ones, then the oldest. A queue read back from the store past one (lowered
    # since) keeps its messages: a new one is dropped itself until enough are sent.
    max_queued_messages: int = 1000
    max_queued_bytes: int = 10 * 1024 * 1024
    # The same for all the sessions of one device in this process together (a device may
    # hold many: ``max_sessions_per_device``); the messages go from the queue that grows.
    max_queued_messages_per_device: int = 10_000
    max_queued_bytes_per_device: int = 64 * 1024 * 1024
    # Inbound QoS 2 packet ids whose PUBREL has not come yet, per client (§4.3.3). Also: QoS 1
    # and 2 PUBLISHes not answered yet (the store) at which a 3.1/3.1.1 client is not read
    # (``Connection.window_full``); a 5.0 client's Receive Maximum.
    max_awaiting_pubrel: int = 100
    # Topic filters one SUBSCRIBE or UNSUBSCRIBE may carry: those past it are refused, each
    # (SUBACK 0x80, 5.0 0x97; 5.0 UNSUBACK 0x83), before any of them costs an ACL check or a
    # subscription; a 3.1/3.1.1 UNSUBSCRIBE past it closes the connection, as its UNSUBACK
    # has no way to refuse one (§3.11.3).
    max_filters_per_subscribe: int = 100
    # Protocol levels the server accepts (3: MQTT 3.1, 4: 3.1.1, 5: 5.0).
    levels: frozenset[int] = field(
        default_factory=lambda: frozenset({MQTT_3_1, MQTT_3_1_1, MQTT_5})
    )
    # MQTT 5 only. The longest session expiry interval a client gets, in seconds (§3.1.2.11.2;
    # NEVER_EXPIRES: no maximum); a longer request is cut and the CONNACK says so (§3.2.2.3.2).
    max_session_expiry: int = 7 * 24 * 3600
    # MQTT 3.1/3.1.1 only. How long a persistent session (CleanSession 0) outlives its client,
    # in seconds: its Session Expiry Interval as if it were a 5.0 session (3.1.1 §3.1.2.4 leaves
    # this to the server); 0: for good, until a clean session replaces it.
    persistent_session_expiry: int = 0
    # Keep-alive the server imposes on a client that asks for more or for none (§3.2.2.3.14);
    # 0: the client's own.
    max_keep_alive: int = 0
    # Topic aliases per connection and direction (§3.3.2.3.4): the client may set this many,
    # and the broker gives at most this many (fewer if the client allows fewer). 0: none.
    max_topic_aliases: int = 10
    # Not a limit: whether CONNACK, DISCONNECT and acknowledgements carry a Reason String
    # that says why (§3.2.2.3.9); the client may still ask for none (§3.1.2.11.7).
    reason_strings: bool = True
