"""What the broker counts, for ``/metrics`` (Prometheus text format) and ``$SYS``.

The hot paths only add to plain integers; they become Prometheus families when scraped, so
counting costs a message next to nothing. Each ``RunningBroker`` has a registry of its own:
several brokers in one process (the tests) never share or collide on metric names.
"""

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from auth.decision import Reason

# Store lookups are sub-millisecond on SQLite and a few ms on PostgreSQL; beyond 0.5 s a
# client is likely to give up, so finer buckets below and a coarse tail above.
_LOOKUP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

# Every limit a client can hit (the settings of the same name); each is counted.
LIMITS = (
    "max_packet_size", "max_inflight_messages", "max_queued_messages", "max_queued_bytes",
    "max_subscriptions", "max_awaiting_pubrel", "max_retained_messages", "max_retained_bytes",
    "max_retained_messages_per_device", "max_retained_bytes_per_device", "max_outgoing_buffer",
    "max_connections", "max_sessions_per_device", "max_filters_per_subscribe",
    "max_connecting_per_address", "max_unadmitted_bytes", "max_topic_levels",
    "max_share_name_length",
    "max_shared_subscription_bytes", "max_shared_subscription_bytes_per_device",
    "max_unsaved_session_changes", "max_subscription_bytes", "max_subscription_bytes_per_device",
    "max_queued_messages_per_device", "max_queued_bytes_per_device",
    # Connections dropped before their handshake, their host slowed and over its rate
    # (broker.auth_throttle).
    "auth_failures_before_throttle",
    # Not a setting: copies dropped as their MQTT 5 Message Expiry Interval passed before
    # they were sent (5.0 §3.3.2.3.3), at a queue's bound or as their turn came.
    "message_expiry",
)  # fmt: skip


@dataclass
class Gauges:
    """Where the gauges read from (the broker's registry and retained store)."""

    connected_devices: Callable[[], int] = lambda: 0
    connected_clients: Callable[[], int] = lambda: 0
    sessions: Callable[[], int] = lambda: 0
    sessions_expired: Callable[[], int] = lambda: 0  # a count kept by the registry
    subscriptions: Callable[[], int] = lambda: 0
    retained: Callable[[], int] = lambda: 0
    decisions: Callable[[], Mapping[str, int]] = dict
    store_writable: Callable[[], bool] = lambda: True
    store_unsaved: Callable[[], int] = lambda: 0
    store_failures: Callable[[], int] = lambda: 0
    unadmitted_bytes: Callable[[], int] = lambda: 0  # ``broker.unadmitted``


class BrokerMetrics(Collector):
    def __init__(self) -> None:
        self.messages_in = 0  # PUBLISH packets received from clients
        self.messages_out = 0  # PUBLISH packets handed to subscribers' connections
        self.messages_dropped = 0  # QoS 0 PUBLISH not sent: the subscriber did not keep up
        self.bytes_in = 0  # MQTT bytes (plaintext) received and sent
        self.bytes_out = 0
        self.protocol_violations = 0  # connections closed for breaking MQTT (§4.8)
        self.publishes_denied = 0  # PUBLISH acknowledged and dropped by the ACL (§3.3.5)
        self.subscriptions_denied = 0  # topic filters refused with SUBACK 0x80
        self.limit_hits: Counter[str] = Counter()
        # Publishers closed because their PUBACK / PUBREC waited ack_timeout for the store.
        self.publishers_closed_unsaved = 0
        # Subscribers closed because the PUBREL of a QoS 2 message sent to them waited
        # ack_timeout for the store to save the message's release (PUBREC).
        self.subscribers_closed_unsaved = 0
        # Times an MQTT 3.1/3.1.1 connection stopped being read because max_awaiting_pubrel
        # of its QoS 1/2 messages waited for their PUBACK / PUBREC (backpressure).
        self.publishers_paused = 0
        self.gauges = Gauges()
        self.registry = CollectorRegistry(auto_describe=True)
        self.auth_lookup = Histogram(
            "nanoiot_auth_lookup_seconds",
            "Time to authenticate a CONNECT (store lookups included)",
            registry=self.registry,
            buckets=_LOOKUP_BUCKETS,
        )
        self.registry.register(self)

    def count_drop(self) -> None:
        self.messages_dropped += 1
        self.limit_hits["max_outgoing_buffer"] += 1

    def count_violation(self) -> None:
        self.protocol_violations += 1

    def count_limit(self, limit: str) -> None:
        self.limit_hits[limit] += 1

    @contextmanager
    def timing_lookup(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.auth_lookup.observe(time.perf_counter() - started)

    def collect(self) -> Iterator[Metric]:
        gauges = self.gauges
        yield _gauge(
            "nanoiot_connected_devices",
            "Devices with at least one live MQTT connection",
            gauges.connected_devices(),
        )
        yield _gauge(
            "nanoiot_connected_clients", "Live MQTT connections", gauges.connected_clients()
        )
        yield _gauge(
            "nanoiot_sessions", "MQTT sessions, connected or kept for later", gauges.sessions()
        )
        yield _counter(
            "nanoiot_sessions_expired",
            "Sessions ended by their expiry interval (MQTT 5 Session Expiry, "
            "persistent_session_expiry)",
            gauges.sessions_expired(),
        )
        yield _gauge(
            "nanoiot_unadmitted_bytes",
            "Bytes read from connections not admitted yet (partial or unanswered CONNECTs), "
            "bounded by max_unadmitted_bytes",
            gauges.unadmitted_bytes(),
        )
        yield _gauge("nanoiot_subscriptions", "Topic filters subscribed", gauges.subscriptions())
        yield _gauge("nanoiot_retained_messages", "Retained messages kept", gauges.retained())
        yield from self._decisions(gauges.decisions())
        yield _counter("nanoiot_messages_received", "PUBLISH packets received", self.messages_in)
        yield _counter("nanoiot_messages_sent", "PUBLISH packets sent", self.messages_out)
        yield _counter(
            "nanoiot_messages_dropped",
            "QoS 0 PUBLISH packets dropped for subscribers over max_outgoing_buffer",
            self.messages_dropped,
        )
        yield _counter("nanoiot_bytes_received", "MQTT bytes received", self.bytes_in)
        yield _counter("nanoiot_bytes_sent", "MQTT bytes sent", self.bytes_out)
        yield _counter(
            "nanoiot_protocol_violations",
            "Connections closed for a protocol violation (MQTT 3.1.1 §4.8)",
            self.protocol_violations,
        )
        yield _counter(
            "nanoiot_publishes_denied",
            "PUBLISH packets acknowledged and dropped because the ACL does not allow the topic",
            self.publishes_denied,
        )
        yield _counter(
            "nanoiot_subscriptions_denied",
            "Topic filters refused (SUBACK 0x80): ACL, validity or max_subscriptions",
            self.subscriptions_denied,
        )
        yield from self._store(gauges)
        hits = CounterMetricFamily(
            "nanoiot_limit_hits", "Times a client hit a limit, by setting", labels=["limit"]
        )
        for limit in LIMITS:
            hits.add_metric([limit], self.limit_hits[limit])
        yield hits

    def _store(self, gauges: Gauges) -> Iterator[Metric]:
        yield _gauge(
            "nanoiot_session_store_writable",
            "1 while session changes can be saved; 0 while they wait (PUBACKs wait with them)",
            int(gauges.store_writable()),
        )
        yield _gauge(
            "nanoiot_session_changes_unsaved",
            "Session changes (messages, subscriptions, sessions) waiting to be saved",
            gauges.store_unsaved(),
        )
        yield _counter(
            "nanoiot_session_store_failures",
            "Attempts to save session changes that failed (database unreachable, locked, "
            "read-only or full)",
            gauges.store_failures(),
        )
        yield _counter(
            "nanoiot_publishers_closed_unsaved",
            "Connections closed because a PUBACK/PUBREC waited ack_timeout for the store",
            self.publishers_closed_unsaved,
        )
        yield _counter(
            "nanoiot_subscribers_closed_unsaved",
            "Connections closed because a PUBREL waited ack_timeout for the store to save the "
            "release of the QoS 2 message it answers",
            self.subscribers_closed_unsaved,
        )
        yield _counter(
            "nanoiot_publishers_paused",
            "Times an MQTT 3.1/3.1.1 connection stopped being read because max_awaiting_pubrel "
            "of its QoS 1/2 messages waited for their PUBACK/PUBREC (the store)",
            self.publishers_paused,
        )

    def _decisions(self, decisions: Mapping[str, int]) -> Iterator[Metric]:
        accepted = CounterMetricFamily("nanoiot_connects_accepted", "CONNECTs accepted (CONNACK 0)")
        accepted.add_metric([], decisions.get(Reason.ALLOWED.value, 0))
        yield accepted
        refused = CounterMetricFamily(
            "nanoiot_connects_refused", "CONNECTs refused, by reason", labels=["reason"]
        )
        for reason in Reason:
            if reason is not Reason.ALLOWED:
                refused.add_metric([reason.value], decisions.get(reason.value, 0))
        yield refused


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


def _gauge(name: str, documentation: str, value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
