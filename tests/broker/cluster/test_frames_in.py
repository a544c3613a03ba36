"""A member fenced off stops listening for frames and listens again when it is back
(``ClusterRouter.stop_taking_frames``, ``take_frames``, ``broker.cluster.fence``): meanwhile
NATS tells their senders that nobody listens, so they park them rather than have them
refused. On the machine's NATS; a connection of the test's own plays the sender."""

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from broker.cluster.link import ClusterLink
from broker.cluster.router import ClusterRouter
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.router import LocalRouter
from broker.session_store import MemorySessionStore
from tests.broker.cluster.parking import MIB, WAIT
from tests.natsserver import NATS_URL


@pytest.fixture
async def sender() -> AsyncIterator[NATS]:
    client = await nats.connect(NATS_URL)
    yield client
    await client.close()


async def _listened(sender: NATS, subject: str, got: "asyncio.Queue[Msg]") -> bool:
    """Whether a frame sent to ``subject`` reaches the member (False: nobody listens)."""
    try:
        await sender.request(subject, b"frame", timeout=WAIT)  # answered once taken
    except nats.errors.NoRespondersError:
        return False
    assert (got.get_nowait()).data == b"frame"
    return True


async def test_a_fenced_member_stops_taking_frames_until_it_is_back(
    link: ClusterLink, sender: NATS
) -> None:
    local = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    router = ClusterRouter(local, link, local.store, MIB)
    got: asyncio.Queue[Msg] = asyncio.Queue()

    async def taken(msg: Msg) -> None:  # what reaches it, answered and not routed
        got.put_nowait(msg)
        await msg.respond(b"")

    router._frame = taken  # type: ignore[method-assign]
    subject = router.forwarder.subject(link.member)
    await router.take_frames()
    assert await _listened(sender, subject, got)
    await router.stop_taking_frames()  # fenced off
    assert not await _listened(sender, subject, got)  # the sender parks it
    await router.take_frames()  # back
    assert await _listened(sender, subject, got)
    await router.stop_taking_frames()
