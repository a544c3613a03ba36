"""The messages a hand-over sent on or refused, counted in the cluster's ``/metrics`` figures
(``broker.cluster.metrics``), on the machine's NATS."""

import re

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from broker.cluster.handover import Handovers
from broker.cluster.link import ClusterLink
from broker.cluster.router import ClusterRouter
from broker.cluster.routes import BUCKET, RouteAnnouncer
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.mqtt.session import Subscription
from broker.router import LocalRouter, Message
from broker.session_store import MemorySessionStore
from broker.sessions import BrokerSession
from nanoiot.errors import ClusterUnavailableError

BUFFER = 1024 * 1024  # max_forward_buffer: room for what the test sends on


def _counted(router: ClusterRouter, name: str) -> float:
    registry = CollectorRegistry()
    registry.register(router.collector())
    scraped = generate_latest(registry).decode()
    found = re.search(rf"^nanoiot_cluster_handover_messages_{name}_total (\S+)$", scraped, re.M)
    assert found is not None, name
    return float(found.group(1))


async def test_messages_sent_on_and_refused_in_hand_overs_are_counted(link: ClusterLink) -> None:
    local = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    router = ClusterRouter(local, link, local.store, BUFFER)
    announcer = RouteAnnouncer(await link.key_value(BUCKET), link.member, router.table)
    handovers = Handovers(link, router.forwarder, announcer, local, 60.0, set)
    router.handovers = handovers
    await router.forwarder.start()
    try:
        for client_id, member in (("s1", "b"), ("s2", "c")):
            session = BrokerSession(("device", client_id), "device", persistent=True)
            session.subscriptions["t/#"] = Subscription(0)
            handovers.depart(session, member)
        # QoS 0: sent on to both sessions' new members, nothing to wait for.
        assert handovers.send_on_published(Message("t/1", b"x", 0), {}) == []
        # A QoS 1 message routed with routes older than a finished hand-over's.
        handovers.fence = 1
        refused = handovers.refused_if_stale(Message("t/2", b"y", 1, routed_at=0))
        assert refused is not None
        with pytest.raises(ClusterUnavailableError, match="routed at revision 0"):
            await refused
        assert _counted(router, "sent_on") == 2
        assert _counted(router, "refused") == 1
    finally:
        for departure in handovers.departures.values():
            if departure.timer is not None:
                departure.timer.cancel()
        await router.forwarder.stop()
