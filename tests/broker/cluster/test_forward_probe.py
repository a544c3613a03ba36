"""Probing a member that leaves frames unanswered, on the machine's NATS: a member whose
connection closed with frames on their way to it has them parked, in the order they were
sent, once the first waited ``PROBE_AFTER`` seconds (NATS never says nobody listens for a
frame it had sent on before the connection closed); a member still listening answers the
probe and is not taken as gone (``broker.cluster.forward``, ``broker.cluster.confirmations``).
A connection of the test's own plays the member."""

import asyncio
import re
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry, generate_latest

from broker.cluster.confirmations import CONFIRM_WITHIN, PROBE_AFTER
from broker.cluster.forward import Forwarder
from broker.cluster.link import ClusterLink
from broker.cluster.router import ClusterRouter
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.router import LocalRouter, Message
from broker.session_store import MemorySessionStore
from tests.broker.cluster.parking import MIB, WAIT, parked_payloads, parking_forwarder
from tests.natsserver import NATS_URL, nats_has_all

MEMBER = "slow"


@pytest.fixture
async def forwarder(link: ClusterLink) -> AsyncIterator[Forwarder]:
    async with parking_forwarder(link, max_buffer=MIB) as (forwarder, _):
        yield forwarder


async def _forward(forwarder: Forwarder, payload: bytes) -> "asyncio.Future[None]":
    confirmed = forwarder.forward([MEMBER], Message("t", payload, 1), [MEMBER], {})
    assert confirmed is not None
    return confirmed


def _probes_counted(forwarder: Forwarder) -> tuple[float, float]:
    """``/metrics``' probes sent and members they found gone, for a router of ``forwarder``."""
    local = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    router = ClusterRouter(local, forwarder.link, local.store, MIB)
    router.forwarder = forwarder
    registry = CollectorRegistry()
    registry.register(router.collector())
    scraped = generate_latest(registry).decode()
    counted = []
    for name in ("sent", "found_gone"):
        found = re.search(rf"^nanoiot_cluster_probes_{name}_total (\S+)$", scraped, re.M)
        assert found is not None, name
        counted.append(float(found.group(1)))
    return counted[0], counted[1]


async def _listener(forwarder: Forwarder) -> tuple[NATS, "asyncio.Queue[Msg]"]:
    """A connection listening on the member's subject; what comes on it, in order."""
    client = await nats.connect(NATS_URL)
    got: asyncio.Queue[Msg] = asyncio.Queue()
    await client.subscribe(forwarder.subject(MEMBER), cb=got.put)
    await nats_has_all(client)
    return client, got


async def test_frames_on_their_way_to_a_member_whose_connection_closed_are_parked(
    forwarder: Forwarder,
) -> None:
    member, got = await _listener(forwarder)
    first = await _forward(forwarder, b"0")
    await asyncio.sleep(0)  # the turn ends: a frame of its own
    second = await _forward(forwarder, b"1")
    for _frame in range(2):
        assert (await asyncio.wait_for(got.get(), WAIT)).data  # reached it, not answered
    began = asyncio.get_running_loop().time()
    await member.close()  # as a member killed: nothing more comes from it
    await asyncio.wait_for(asyncio.gather(first, second), WAIT)  # parked: acknowledged
    took = asyncio.get_running_loop().time() - began
    assert took < PROBE_AFTER + 1.0 < CONFIRM_WITHIN, f"parked after {took:.2f} s"
    assert (forwarder.parked, forwarder.frames_parked) == ({MEMBER}, 2)
    assert _probes_counted(forwarder) == (1, 1)  # one probe: NATS said nobody listens
    assert forwarder.parking is not None
    assert await parked_payloads(forwarder.parking, MEMBER) == [b"0", b"1"]


async def test_a_member_still_listening_answers_the_probe_and_is_not_parked(
    forwarder: Forwarder,
) -> None:
    """The member answers its frame only once it got the probe (an empty frame): the frame
    waited past ``PROBE_AFTER`` (a slow store commit), and is confirmed, not parked."""
    member, got = await _listener(forwarder)
    try:
        confirmed = await _forward(forwarder, b"slow")
        frame = await asyncio.wait_for(got.get(), WAIT)
        probe = await asyncio.wait_for(got.get(), WAIT)
        assert (frame.data != b"", probe.data) == (True, b"")
        await member.publish(probe.reply, b"")  # as ``ClusterRouter`` answers an empty frame
        await member.publish(frame.reply, b"")
        await asyncio.wait_for(confirmed, WAIT)
        assert (forwarder.parked, forwarder.frames_parked) == (set(), 0)
        assert _probes_counted(forwarder) == (1, 0)  # answered: not gone
    finally:
        await member.close()
