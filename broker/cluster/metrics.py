"""The cluster's figures in ``/metrics``: who this member is, which other members it routes
to, the messages crossing between them, and every live member's own figures as its last
heartbeat gave them (``broker.cluster.members``), labelled by member."""

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from broker.cluster.departing import Departures
    from broker.cluster.router import ClusterRouter
    from broker.cluster.routes_seen import RoutesSeen

from nanoiot.members import Member

__all__ = ["ClusterCollector", "MembersCollector"]

_PER_MEMBER = (
    # (name, help, figure, counter?)
    ("nanoiot_cluster_member_connected_clients", "Live MQTT connections, by member",
     "clients", False),
    ("nanoiot_cluster_member_subscriptions", "Topic filters subscribed, by member",
     "subscriptions", False),
    ("nanoiot_cluster_member_messages_received", "PUBLISH packets received, by member",
     "messages_received", True),
    ("nanoiot_cluster_member_messages_sent", "PUBLISH packets sent, by member",
     "messages_sent", True),
    ("nanoiot_cluster_member_bytes_received", "MQTT bytes received, by member",
     "bytes_received", True),
    ("nanoiot_cluster_member_bytes_sent", "MQTT bytes sent, by member", "bytes_sent", True),
    ("nanoiot_cluster_member_messages_forwarded",
     "Messages sent to other members (one per member with interest), by member",
     "messages_forwarded", True),
    ("nanoiot_cluster_member_messages_from_members",
     "Messages taken from other members' frames, by member", "messages_from_members", True),
)  # fmt: skip


class MembersCollector:
    """The live members and their figures (on a node, and on a workers' supervisor)."""

    def __init__(self, members: Callable[[], list[Member]]) -> None:
        self._members = members

    def collect(self) -> Iterator[Metric]:
        live = self._members()
        yield GaugeMetricFamily(
            "nanoiot_cluster_members", "Live members of the cluster (nodes and workers)",
            value=len(live),
        )  # fmt: skip
        info = GaugeMetricFamily(
            "nanoiot_cluster_member_info", "A live member (always 1), with its host and pid",
            labels=["member", "host", "pid"],
        )  # fmt: skip
        for member in live:
            info.add_metric([member.name, member.host, str(member.pid)], 1)
        yield info
        for name, documentation, figure, counter in _PER_MEMBER:
            family: GaugeMetricFamily | CounterMetricFamily = (
                CounterMetricFamily(name, documentation, labels=["member"])
                if counter
                else GaugeMetricFamily(name, documentation, labels=["member"])
            )
            for member in live:
                family.add_metric([member.name], getattr(member.figures, figure))
            yield family


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
            value=router.frames_in.received,
        )
        yield CounterMetricFamily(
            "nanoiot_cluster_qos2_routed_again",
            "QoS 2 messages sent again by their publishers and routed again, as another "
            "member had not confirmed them",
            value=router.routed_again,
        )
        yield CounterMetricFamily(
            "nanoiot_cluster_qos2_repeats",
            "QoS 2 messages routed here again that were delivered here before (only "
            "sessions that came since got them)",
            value=router.frames_in.repeats,
        )
        yield CounterMetricFamily(
            "nanoiot_cluster_frames_dropped",
            "Batches for other members dropped over max_forward_buffer",
            value=router.forwarder.frames_dropped,
        )
        yield CounterMetricFamily(
            "nanoiot_cluster_frames_parked",
            "Batches for gone members kept in JetStream until their sessions are taken",
            value=router.forwarder.frames_parked,
        )
        yield CounterMetricFamily(
            "nanoiot_cluster_frames_not_parked",
            "Batches for gone members JetStream did not keep (the parked stream full at "
            "cluster_max_parked_bytes, or NATS away): their publishers were disconnected "
            "unacknowledged",
            value=router.forwarder.frames_not_parked,
        )
        yield GaugeMetricFamily(
            "nanoiot_cluster_parked_oldest_seconds",
            "Age of the oldest batch this member parked for a gone member and nobody read yet "
            "(JetStream drops a batch, acknowledged messages and all, an hour after it was "
            "parked)",
            value=router.forwarder.age.oldest_seconds,
        )
        yield CounterMetricFamily(
            "nanoiot_cluster_probes_sent",
            "Empty batches sent to members that left one unanswered for 0.5 s, asking whether "
            "they still listen",
            value=router.forwarder.probes_sent,
        )
        yield CounterMetricFamily(
            "nanoiot_cluster_probes_found_gone",
            "Probes NATS answered that nobody listens for: members found gone (killed with "
            "batches on their way to them), their batches parked",
            value=router.forwarder.probes_found_gone,
        )
        yield CounterMetricFamily(
            "nanoiot_cluster_busy_notices_sent",
            "Notices this member sent that it holds batches behind a backlog parked for it, "
            "so that their senders wait longer (up to cluster_replay_wait)",
            value=router.forwarder.busy.sent,
        )
        yield CounterMetricFamily(
            "nanoiot_cluster_busy_notices_heard",
            "Such notices from other members: this member's publishers waited longer for them",
            value=router.forwarder.busy.heard,
        )
        if router.routes_seen is not None:
            yield from _routes_seen_figures(router.routes_seen)
        if router.handovers is not None:
            yield from _handover_figures(router.handovers)
        if router.replays is not None:
            yield CounterMetricFamily(
                "nanoiot_cluster_parked_messages_replayed",
                "Parked messages given to sessions this member took from gone members",
                value=router.replays.replayed,
            )
        claims, wills = router.claims, router.wills
        if claims is not None:
            yield CounterMetricFamily(
                "nanoiot_cluster_sessions_handed_over",
                "Persistent sessions this member gave up to another member's connect",
                value=claims.handed_over,
            )
            yield CounterMetricFamily(
                "nanoiot_cluster_sessions_adopted",
                "Persistent sessions of dead members this member took in",
                value=claims.adopted,
            )
        if wills is not None:
            yield CounterMetricFamily(
                "nanoiot_cluster_wills_published",
                "Wills of dead members' clients this member published",
                value=wills.published,
            )
            yield CounterMetricFamily(
                "nanoiot_cluster_wills_dropped",
                "Wills dropped while NATS was lost: past cluster_max_held_wills held back",
                value=wills.held_dropped,
            )
            yield CounterMetricFamily(
                "nanoiot_cluster_wills_refused",
                "Wills of dead members' clients this member dropped: their connection would be "
                "refused now (device revoked, disabled or deleted)",
                value=wills.refused,
            )
        if router.compaction is not None:
            yield CounterMetricFamily(
                "nanoiot_cluster_delete_markers_purged",
                "Delete markers this member purged from the routes, claims and devices buckets "
                "(cluster_compaction_interval; nats-server 2.9.12 and later)",
                value=router.compaction.purged,
            )
        if router.members is not None:
            yield from MembersCollector(router.members.live).collect()


def _handover_figures(handovers: "Departures") -> Iterator[Metric]:
    """The messages that took the longer way through a hand-over (``cluster_handover_window``
    is sized by them), and those refused in one."""
    yield CounterMetricFamily(
        "nanoiot_cluster_handover_messages_sent_on",
        "Messages sent on to the member a persistent session moved to, as they were routed "
        "here with routes of before the move",
        value=handovers.sent_on,
    )
    yield CounterMetricFamily(
        "nanoiot_cluster_handover_messages_refused",
        "Messages refused in a hand-over, their publishers not acknowledged (they send them "
        "again): routed with routes older than a finished hand-over, sent on for a session "
        "no longer there, or past max_queued_messages kept for a session being taken",
        value=handovers.refused,
    )


def _routes_seen_figures(seen: "RoutesSeen") -> Iterator[Metric]:
    """The rounds a SUBACK's wait asked the other members whether their route tables hold
    its filters (MQTT 3.1.1 and 5.0 §3.8.4, ``broker.cluster.routes_seen``), and the members
    passed over: a member often late has a table that lags, and SUBACKs wait for it."""
    yield CounterMetricFamily(
        "nanoiot_cluster_routes_seen_rounds",
        "Rounds of asking the other members whether their route tables hold this member's "
        "new filters, which SUBACKs wait for (shared by the SUBACKs that come meanwhile)",
        value=seen.rounds,
    )
    yield CounterMetricFamily(
        "nanoiot_cluster_routes_seen_late",
        "Members that did not say within 2 s that their route tables hold this member's new "
        "filters: the SUBACKs waiting for them went without their answer",
        value=seen.late,
    )
