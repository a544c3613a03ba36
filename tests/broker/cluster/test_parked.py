"""Parking on the machine's NATS: frames for a member nobody listens for go to JetStream, in
order, their publishers confirmed once JetStream has them, and a barrier for such a member
behind them; a full stream refuses them; a member back gets its frames again
(``broker.cluster.forward``, ``broker.cluster.parked``)."""

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from broker.cluster.forward import Forwarder
from broker.cluster.link import ClusterLink
from broker.cluster.parked import ParkedFrames
from broker.cluster.router import ClusterRouter
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.router import LocalRouter, Message
from broker.session_store import MemorySessionStore
from nanoiot.errors import ClusterFullError
from tests.broker.cluster.parking import (
    WAIT,
    parked_payloads,
    parked_records,
    parking_forwarder,
)


async def _forward(forwarder: Forwarder, member: str, payload: bytes) -> "asyncio.Future[None]":
    """One message, in a frame of its own (sent at the end of the loop turn)."""
    confirmed = forwarder.forward([member], Message("t", payload, 1), [member], {})
    assert confirmed is not None
    await asyncio.sleep(0)  # the turn ends: the frame leaves
    return confirmed


def _scraped(forwarder: Forwarder) -> str:
    """``/metrics`` of a router whose forwarder is ``forwarder``."""
    local = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    router = ClusterRouter(local, forwarder.link, local.store, 1024 * 1024)
    router.forwarder = forwarder
    registry = CollectorRegistry()
    registry.register(router.collector())
    return generate_latest(registry).decode()


async def test_frames_for_a_member_nobody_listens_for_are_parked_in_order(
    link: ClusterLink,
) -> None:
    gone: list[str] = []
    async with parking_forwarder(link, on_gone=gone.append) as (forwarder, parked):
        first = await _forward(forwarder, "dead", b"0")
        await asyncio.wait_for(first, WAIT)  # nobody listened: parked, then confirmed
        assert (gone, forwarder.parked) == (["dead"], {"dead"})
        later = [await _forward(forwarder, "dead", str(n).encode()) for n in range(1, 20)]
        await asyncio.wait_for(asyncio.gather(*later), WAIT)  # not asking NATS again
        assert await parked_payloads(parked, "dead") == [str(n).encode() for n in range(20)]
        assert forwarder.frames_parked == 20

        forwarder.unpark("dead")  # back: nothing queued, so at once
        assert forwarder.parked == set()
        await parked.purge("dead", await parked.last("dead"))
        assert await parked.last("dead") == 0


async def test_a_full_parked_stream_refuses_the_frame_and_says_which_bound(
    link: ClusterLink, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing acknowledged is dropped: the frame the full stream refuses fails its
    publishers with the bound named (an MQTT 5 publisher is told 0x97, quota exceeded:
    ``broker.acks``), logged and counted for the operator."""
    async with parking_forwarder(link, 64 * 1024) as (forwarder, _):
        big = b"x" * 30_000
        kept = [await _forward(forwarder, "dead", big) for _ in range(2)]
        await asyncio.wait_for(asyncio.gather(*kept), WAIT)
        with caplog.at_level(logging.WARNING, logger="broker.cluster.forward"):
            refused = await _forward(forwarder, "dead", big)
            with pytest.raises(ClusterFullError, match=r"parking a frame for member dead: .*"
                               r"is full \(cluster_max_parked_bytes, 65536 bytes\)"):  # fmt: skip
                await asyncio.wait_for(refused, WAIT)
        assert (forwarder.frames_parked, forwarder.frames_not_parked) == (2, 1)
        scraped = _scraped(forwarder)
        assert "nanoiot_cluster_frames_not_parked_total 1.0" in scraped
        assert "nanoiot_cluster_parked_oldest_seconds 0.0" in scraped  # not looked at yet
        [line] = [r.getMessage() for r in caplog.records if "not parked so far" in r.getMessage()]
        assert "disconnected unacknowledged (they send again); 1 batches not parked" in line


async def test_a_barrier_for_a_gone_member_is_parked_behind_its_frames(
    link: ClusterLink,
) -> None:
    """Whether or not the forwarder knew the member gone yet, a barrier for it
    (``parked=True``) goes into its parked frames behind what was sent to it before, in the
    order sent (``broker.cluster.replay`` reads it there)."""
    async with parking_forwarder(link) as (forwarder, parked):
        for member in ("unknown", "known"):
            if member == "known":
                await asyncio.wait_for(await _forward(forwarder, member, b"first"), WAIT)
                assert member in forwarder.parked
            before = await _forward(forwarder, member, b"0")
            forwarder.barrier(member, "me", ("device", "client"), relayed=False, parked=True)
            await asyncio.sleep(0)  # the turn ends: a frame of its own leaves
            later = await _forward(forwarder, member, b"1")
            await asyncio.wait_for(asyncio.gather(before, later), WAIT)
            records = await _records(parked, member)
            assert records[-3:] == [b"0", ("me", ("device", "client")), b"1"], member


async def _records(parked: ParkedFrames, member: str) -> list[bytes | tuple[str, object]]:
    """What was parked for ``member``, in order: payloads, and barriers as (from, session)."""
    return [
        (record.message.topic, record.session) if record.barrier else record.message.payload
        for record in await parked_records(parked, member)
    ]
