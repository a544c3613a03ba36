"""What the broker counts, for ``/metrics`` (Prometheus text format).

The hot paths only add to plain integers (``messages_in`` / ``messages_out``); they become
Prometheus families when scraped, so counting costs a message next to nothing. Each
``RunningBroker`` has a registry of its own: several brokers in one process (the tests)
never share or collide on metric names.
"""

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from auth.decision import Reason

# Store lookups are sub-millisecond on SQLite and a few ms on PostgreSQL; beyond 0.5 s a
# client is likely to give up, so finer buckets below and a coarse tail above.
_LOOKUP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class BrokerMetrics(Collector):
    def __init__(self) -> None:
        self.messages_in = 0  # PUBLISH packets received from clients
        self.messages_out = 0  # PUBLISH packets handed to subscribers' connections
        self.messages_dropped = 0  # QoS 0 PUBLISH not sent: the subscriber did not keep up
        self.protocol_violations = 0  # connections closed for breaking MQTT 3.1.1 (§4.8)
        self.registry = CollectorRegistry(auto_describe=True)
        self.auth_lookup = Histogram(
            "nanoiot_auth_lookup_seconds",
            "Time to authenticate a CONNECT (store lookups included)",
            registry=self.registry,
            buckets=_LOOKUP_BUCKETS,
        )
        self._connected: Callable[[], int] = lambda: 0
        self._clients: Callable[[], int] = lambda: 0
        self._decisions: Callable[[], Mapping[str, int]] = dict
        self.registry.register(self)

    def observe(
        self,
        connected_devices: Callable[[], int],
        decisions: Callable[[], Mapping[str, int]],
        connected_clients: Callable[[], int] | None = None,
    ) -> None:
        """Where the gauges read from: live devices, the count of decisions by reason, and
        live MQTT connections (a device may hold several, one per client id)."""
        self._connected = connected_devices
        self._decisions = decisions
        if connected_clients is not None:
            self._clients = connected_clients

    def count_drop(self) -> None:
        self.messages_dropped += 1

    def count_violation(self) -> None:
        self.protocol_violations += 1

    @contextmanager
    def timing_lookup(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.auth_lookup.observe(time.perf_counter() - started)

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "nanoiot_connected_devices",
            "Devices with at least one live MQTT connection",
            value=self._connected(),
        )
        yield GaugeMetricFamily(
            "nanoiot_connected_clients",
            "Live MQTT connections (accepted and not yet closed)",
            value=self._clients(),
        )
        decisions = self._decisions()
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
        yield _counter("nanoiot_messages_received", "PUBLISH packets received", self.messages_in)
        yield _counter("nanoiot_messages_sent", "PUBLISH packets sent", self.messages_out)
        yield _counter(
            "nanoiot_messages_dropped",
            "QoS 0 PUBLISH packets dropped for subscribers over max_outgoing_buffer",
            self.messages_dropped,
        )
        yield _counter(
            "nanoiot_protocol_violations",
            "Connections closed for a protocol violation (MQTT 3.1.1 §4.8)",
            self.protocol_violations,
        )


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation)
    family.add_metric([], value)
    return family
