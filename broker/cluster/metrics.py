"""The cluster's figures in ``/metrics``: who this member is, which other members it routes
to, and the messages crossing between them."""

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from broker.cluster.router import ClusterRouter

__all__ = ["ClusterCollector"]


class ClusterCollector:
    def __init__(self, router: "ClusterRouter") -> None:
        self._router = router

    def collect(self) -> Iterator[Metric]:
        router = self._router
        member = GaugeMetricFamily(
            "nanoiot_cluster_member", "This member of the cluster (always 1)",
            labels=["cluster", "member"],
        )  # fmt: skip
        member.add_metric([router.link.cluster, router.link.member], 1)
        yield member
        peers = GaugeMetricFamily(
            "nanoiot_cluster_routes",
            "Topic filters of other members in this member's route table, by member",
            labels=["member"],
        )
        for name, count in sorted(router.table.counts().items()):
            peers.add_metric([name], count)
        yield peers
        yield CounterMetricFamily(
            "nanoiot_cluster_forwarded_messages",
            "Messages sent to other members (one per member with interest)",
            value=router.forwarded,
        )
        yield CounterMetricFamily(
            "nanoiot_cluster_received_messages",
            "Messages other members sent to this one",
            value=router.received,
        )
        yield CounterMetricFamily(
            "nanoiot_cluster_frames_dropped",
            "Batches for other members dropped over max_forward_buffer",
            value=router.forwarder.frames_dropped,
        )
