"""The broker's MQTT settings: sessions and topics, what one client may make a broker process
hold, what password checks may cost, and what authentication leaves behind."""

from pydantic import Field, ValidationInfo, field_validator

from nanoiot.settings.common import SettingsGroup

# max_unadmitted_bytes is at least this many max_packet_size: one connection not admitted yet
# may hold two packets (a CONNECT of max_packet_size, and what it sent behind it until reading
# pauses: broker.unadmitted.pause_past_connect), and as much again may be held by the others
# connecting meanwhile, or a CONNECT with the largest will would be closed as the largest
# holder whenever anyone else connects at the same time (below one packet, always).
UNADMITTED_PACKETS = 4


class MqttSettings(SettingsGroup):
    # --- MQTT sessions and topics ---
    strict_client_id: bool = False
    # MQTT 5: the keep-alive (seconds) imposed on a client that asks for a longer one or for
    # none, announced as Server Keep Alive; 0: the client's own.
    max_keep_alive: int = Field(0, ge=0, le=65535)
    # MQTT 5: refusals and server DISCONNECTs carry a Reason String saying why, in the words
    # of the auth log (never a secret).
    reason_strings: bool = True
    # Largest MQTT packet a client may send, in bytes (MQTT 3.1.1 §2.2.3 allows 256 MB).
    max_packet_size: int = Field(256 * 1024, ge=1024, le=268_435_460)
    # Bytes waiting for one subscriber that does not read before QoS 0 messages to it are
    # dropped (QoS 1/2 wait in its session, behind max_inflight_messages); a client is not read
    # while this much waits for it (it sends without reading the answers).
    max_outgoing_buffer: int = Field(1024 * 1024, ge=16 * 1024)
    # Extra ACL rules ({who, action, topic}); from the environment as a JSON list.
    acl_rules: list[dict[str, str]] = Field(default_factory=list)

    # --- MQTT limits: what one client may make the broker hold (each hit is counted) ---
    # Connections one broker process holds open, TLS handshakes included; past it a new one
    # takes the place of the oldest not admitted yet (broker.eviction), or with none is
    # closed at once (kept under the open-file limit: broker.connection_limit).
    max_connections: int = Field(100_000, ge=1, le=10_000_000)
    # Of those, connections from one client host (an IPv4 address, an IPv6 /64) not admitted
    # yet (in their handshake, or before their CONNECT is accepted): so that one host cannot
    # hold them all. Past it, once half of max_connections are open, its new ones are closed at
    # once (broker.connection_limit).
    max_connecting_per_address: int = Field(64, ge=1, le=10_000_000)
    # Bytes all connections not admitted yet may make the broker hold together: what they
    # sent before their CONNECT is accepted (a partial CONNECT, one being authenticated, what
    # came behind it). A read that would pass it closes its connection (broker.unadmitted).
    # 64 MiB: 256 CONNECTs of a full max_packet_size at once, or 100,000 of 600 bytes. At
    # least 4 times max_packet_size (UNADMITTED_PACKETS), checked with the default too.
    max_unadmitted_bytes: int = Field(
        64 * 1024 * 1024, ge=64 * 1024, le=1 << 40, validate_default=True
    )
    # Seconds of silence on an MQTT connection before TCP keepalive probes its host (0: off);
    # a host that answers none is dropped 2 minutes later (broker.listen). 32767: Linux's most.
    tcp_keepalive_idle: int = Field(300, ge=0, le=32767)
    # Outbound QoS 1/2 messages sent to one client and not yet acknowledged; the rest wait.
    max_inflight_messages: int = Field(20, ge=1, le=65535)
    # Messages and bytes one session's queue holds; past either, the expired messages go
    # first (MQTT 5 §3.3.2.3.3), then QoS 0, then the oldest.
    max_queued_messages: int = Field(1000, ge=0)
    max_queued_bytes: int = Field(10 * 1024 * 1024, ge=0)
    # The same for all the sessions of one device (or application) on a broker process
    # together, as it may hold max_sessions_per_device of them: else 100 sessions of 10 MiB
    # each, 1 GiB, for one certificate. 64 MiB lets a device keep six full queues, and an
    # attacker pin a sixteenth of what it did; past either, the device's expired messages go
    # first, then the queue that grows drops QoS 0, then its oldest (with none of its own,
    # the new message). Left at their defaults, never below the per-session bounds above.
    max_queued_messages_per_device: int = Field(10_000, ge=0, le=100_000_000)
    max_queued_bytes_per_device: int = Field(64 * 1024 * 1024, ge=0, le=1 << 40)
    # Sessions one device holds on a broker process, connected or kept for a persistent
    # client; a CONNECT that would start one more gets CONNACK 3 (MQTT 5: 0x97).
    max_sessions_per_device: int = Field(100, ge=1)
    # Topic filters one session may hold; more are refused with SUBACK 0x80.
    max_subscriptions: int = Field(100, ge=0)
    # What one session's topic filters, and all of one device's (or application's) sessions'
    # on a broker process, are counted as: each filter its UTF-8 bytes twice, 288 bytes a
    # level and 384 more (what it was measured to cost: ``broker.subscription_bytes``). Past
    # either, a new filter is refused (SUBACK 0x80, MQTT 5 0x97). The device's, left at its
    # default, is never below the session's.
    max_subscription_bytes: int = Field(512 * 1024, ge=0, le=1 << 40)
    max_subscription_bytes_per_device: int = Field(1024 * 1024, ge=0, le=1 << 40)
    # Levels of a subscription's topic filter and of a kept retained message's topic (3.1.1
    # §4.7.1): each costs a trie node, about 230 bytes. Past it a filter is refused (SUBACK
    # 0x80, MQTT 5 0x97) and a retained message delivered but not kept.
    max_topic_levels: int = Field(128, ge=1, le=32_768)
    # Characters of a shared subscription's share name ($share/{name}/{filter}, MQTT 5.0
    # §4.8.2); a longer one is refused (SUBACK 0x80, MQTT 5 0x8F).
    max_share_name_length: int = Field(128, ge=1, le=1024)
    # Bytes (UTF-8) of the share names and filters of the distinct shared subscriptions one
    # broker process holds, one more byte each: in a cluster each message another node routes
    # here names every one it matches, in one NATS message. Past it a new shared subscription
    # is refused (SUBACK 0x80, MQTT 5 0x97); joining one that exists is not. In a cluster
    # max_packet_size plus this must fit NATS's max_payload (a node refuses to start).
    max_shared_subscription_bytes: int = Field(256 * 1024, ge=0)
    # Of those bytes, what the groups one device's (or application's) sessions are in may
    # take, each group counted once (until the last of its sessions leaves it), so that one
    # device cannot take them all and leave the others none. Past it the device cannot make
    # or join one more (SUBACK 0x80, MQTT 5 0x97).
    max_shared_subscription_bytes_per_device: int = Field(16 * 1024, ge=0)
    # Topic filters one SUBSCRIBE / UNSUBSCRIBE may carry; the rest are refused (SUBACK 0x80,
    # MQTT 5 0x97; MQTT 5 UNSUBACK 0x83; an MQTT 3.1/3.1.1 UNSUBSCRIBE past it is closed).
    max_filters_per_subscribe: int = Field(100, ge=1, le=65535)
    # Inbound QoS 2 messages of one client whose PUBREL has not come; more closes it. An MQTT 5
    # client is told it as its Receive Maximum, which counts its QoS 1 messages whose PUBACK
    # has not gone too (5.0 §4.9). An MQTT 3.1/3.1.1 connection with this many QoS 1/2
    # messages whose PUBACK / PUBREC has not gone is not read until one goes (backpressure).
    max_awaiting_pubrel: int = Field(100, ge=1, le=65535)
    # MQTT 5: the longest Session Expiry Interval a client gets, in seconds (4294967295:
    # sessions may never expire); topic aliases per connection and direction (0: none).
    max_session_expiry_interval: int = Field(7 * 24 * 3600, ge=0, le=0xFFFF_FFFF)
    max_topic_aliases: int = Field(10, ge=0, le=65535)
    # MQTT 3.1/3.1.1: seconds a persistent session (clean session 0) is kept after its client
    # disconnected, as a 5.0 session with that Session Expiry Interval (0: for good).
    persistent_session_expiry: int = Field(0, ge=0, le=0xFFFF_FFFF)
    # Retained messages and their bytes, in all and per device; past a limit a retained
    # message is delivered but not kept.
    max_retained_messages: int = Field(100_000, ge=0)
    max_retained_bytes: int = Field(64 * 1024 * 1024, ge=0)
    max_retained_messages_per_device: int = Field(100, ge=0)
    max_retained_bytes_per_device: int = Field(1024 * 1024, ge=0)
    # Seconds a PUBACK/PUBREC may wait for the store to save the message; past it the
    # publisher's connection is closed (it sends the message again on a new one).
    ack_timeout: float = Field(10.0, gt=0, le=3600)
    # Session changes waiting for the store (all sessions together): while the database cannot
    # be written they wait in memory, where one client re-subscribing in a loop would grow them
    # by the bytes it sends. Past it what would add more is refused: a persistent session's
    # SUBSCRIBE filters (SUBACK 0x80, MQTT 5 0x97), QoS 1/2 PUBLISHes (the publisher is
    # closed, MQTT 5 DISCONNECT 0x89) and CONNECTs of a persistent session (CONNACK 3, 0x89).
    max_unsaved_session_changes: int = Field(100_000, ge=100, le=100_000_000)
    # --- Password checks (MQTT basic, argon2id): what clients without credentials can cost ---
    # Checks that run at once, checks that may wait for one, and checks one client host (IPv4
    # address, IPv6 /64) may have running or waiting (a host that has not failed lately waits
    # for its share instead); past a bound the CONNECT is refused at once (CONNACK 3).
    password_check_workers: int = Field(2, ge=1, le=64)
    password_check_queue: int = Field(16, ge=0, le=10_000)
    password_checks_per_address: int = Field(1, ge=1, le=1000)
    # Failed checks a host gets before its password checks are refused for a while
    # (1 s, doubling with each further failure up to password_throttle_max_seconds).
    password_failures_before_throttle: int = Field(5, ge=1, le=1000)
    password_throttle_max_seconds: float = Field(60.0, ge=1, le=86_400)
    # Hosts whose failures are remembered; past it the longest quiet one is forgotten. Also
    # the hosts given a "shutting out" line in each auth_log_interval_seconds (one each).
    password_throttle_addresses: int = Field(10_000, ge=1, le=10_000_000)
    # --- Refused connects (certificates, tokens, none): the TLS handshakes they cost ---
    # Connects refused for what the client presented (an unknown, revoked, disabled or expired
    # certificate, a chain or key proof TLS refused, no certificate where one is required, an
    # unknown token, no credentials) that one host (IPv4 address, IPv6 /64) gets in a row
    # before it is slowed: its new connections go on to the TLS handshake at most
    # auth_throttled_connects_per_second a second (a burst of as many), the others dropped
    # before it. 5: each refused connect costs about 5 ms of CPU, so a failing host stays near
    # 2.5% of a core. A connect admitted from the host clears its count and its slowing
    # (devices behind one NAT clear what a broken one adds); so does a minute without failure.
    # 100 free: about 0.5 s of CPU once, and bad first packets by the dozen (a conformance
    # suite's or a scanner's, on a host shared with good devices) are not slowed.
    auth_failures_before_throttle: int = Field(100, ge=1, le=1_000_000)
    auth_throttled_connects_per_second: float = Field(5.0, gt=0, le=100_000)
    # Hosts whose failures are remembered; past it the longest quiet one is forgotten.
    auth_throttle_addresses: int = Field(10_000, ge=1, le=10_000_000)

    # --- What authentication leaves behind: log lines and auth events ---
    # Refusals per client address and reason logged and recorded one by one in each interval;
    # the rest are counted and reported as one line and one event when the interval ends. So
    # are the lines of connections refused before CONNECT, whose CONNECT is refused before
    # authentication or past a limit, or closed for a protocol violation; and, per device
    # and kind, the connected, take-over, keep-alive expiry, kick and session expiry lines of
    # an admitted device (the auth event of each accepted CONNECT is still recorded). A host
    # the password throttle shuts out gets one "shutting out" line per interval.
    auth_log_repeats: int = Field(5, ge=1, le=100_000)
    auth_log_interval_seconds: float = Field(60.0, gt=0, le=86_400)
    # auth_events keeps events at most this many days, and at most this many rows.
    auth_events_max_age_days: float = Field(90.0, gt=0, le=36_500)
    auth_events_max_rows: int = Field(1_000_000, ge=100, le=1_000_000_000)
    # Seconds between publications of the $SYS/broker/... figures; 0 turns them off.
    sys_interval: float = Field(10.0, ge=0)

    @field_validator("max_unadmitted_bytes")
    @classmethod
    def _room_for_a_connect(cls, value: int, info: ValidationInfo) -> int:
        packet = info.data.get("max_packet_size")  # absent: refused itself, named first
        if packet is not None and value < UNADMITTED_PACKETS * packet:
            raise ValueError(
                f"max_unadmitted_bytes {value} is less than {UNADMITTED_PACKETS} times "
                f"max_packet_size {packet} ({UNADMITTED_PACKETS * packet}): a CONNECT of "
                "max_packet_size could not be admitted; raise max_unadmitted_bytes or lower "
                "max_packet_size"
            )
        return value

    def device_bound(self, per_device: str, per_session: str) -> int:
        """A per-device bound left at its default is never below its per-session one: who
        raises ``max_queued_messages`` to let one session hold a long backlog means that
        session to reach it, and the device's default would otherwise cut it short (dropping
        messages already acknowledged to their publishers). Set explicitly, it is kept."""
        bound: int = getattr(self, per_device)
        if per_device in self.model_fields_set:
            return bound
        session_bound: int = getattr(self, per_session)
        return max(bound, session_bound)
