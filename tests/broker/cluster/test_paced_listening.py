"""Over a slow path to NATS (each line a member sends goes ``PACE`` seconds after the one
before), a member's subscriptions say what they promise: a frame NATS delivers while the member
stops taking them is answered, or its sender told nobody listens, never left unanswered; and
once ``Handovers.start`` returned, NATS has its subscription. nats-py writes a flush's PING
ahead of a SUB or UNSUB not written yet, and its own ``drain`` waits for that PING's PONG only
(``ClusterLink.flush``). On the machine's NATS; a connection of the test's own plays the
other member."""

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from broker.cluster.handover import Handovers
from broker.cluster.link import ClusterLink
from broker.cluster.router import ClusterRouter
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.router import LocalRouter
from broker.session_store import MemorySessionStore
from nanoiot.settings import Settings
from tests.broker.cluster.parking import MIB
from tests.broker.cluster.test_frames_in import PACE, _answering_member
from tests.cluster.proxy import nats_proxy
from tests.natsserver import NATS_URL

UNANSWERED = 4 * PACE + 2.0  # a frame's answer comes well within this, paced as it is


@pytest.fixture
async def sender() -> AsyncIterator[NATS]:
    client = await nats.connect(NATS_URL)
    yield client
    await client.close()


async def _send_until(sender: NATS, subject: str, stopped: asyncio.Event) -> dict[str, int]:
    """Frames sent one after the other until ``stopped``, then one more: how each went."""
    outcomes = {"answered": 0, "nobody": 0, "unanswered": 0}
    last = False
    while not last:
        last = stopped.is_set()
        try:
            await sender.request(subject, b"frame", timeout=UNANSWERED)
            outcomes["answered"] += 1
        except nats.errors.NoRespondersError:
            outcomes["nobody"] += 1
        except nats.errors.TimeoutError:
            outcomes["unanswered"] += 1
    return outcomes


async def test_frames_nats_delivers_as_a_member_stops_are_answered(
    cluster_settings: Callable[..., Settings], sender: NATS
) -> None:
    with nats_proxy() as proxy:
        link = await ClusterLink.connect(cluster_settings(nats_url=proxy.url))
        try:
            frames_in, subject, _got = _answering_member(link)
            await frames_in.take()
            proxy.pace(PACE)
            stopped = asyncio.Event()
            sending = asyncio.create_task(_send_until(sender, subject, stopped))
            await frames_in.stop()
            stopped.set()
            outcomes = await sending
        finally:
            proxy.pace(0)
            await link.close()
    assert outcomes["unanswered"] == 0, outcomes
    assert outcomes["nobody"] >= 1, outcomes  # the last, sent once ``stop`` returned


async def test_nats_has_the_hand_over_subscription_once_start_returned(
    cluster_settings: Callable[..., Settings],
) -> None:
    with nats_proxy() as proxy:
        link = await ClusterLink.connect(cluster_settings(nats_url=proxy.url))
        other = await ClusterLink.connect(cluster_settings(node_name="node-b"))
        try:
            local = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
            router = ClusterRouter(local, link, local.store, MIB)
            announcer: Any = None  # not asked for: no notice comes
            handovers = Handovers(link, router.forwarder, announcer, local, 1.0, set)
            proxy.pace(PACE)
            await handovers.start()
            # Not told nobody listens (False): the notice reaches it (unanswered: None).
            assert await other.answers(link.subject("handover", link.member)) is None
        finally:
            proxy.pace(0)
            await other.close()
            await link.close()
