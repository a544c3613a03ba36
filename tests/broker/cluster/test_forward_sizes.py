"""Frames within NATS's max_payload, on the machine's NATS: a publisher's large messages,
counted whole (payload, MQTT 5 properties, shared subscriptions named), go in frames of their
own rather than make the turn's frame larger than NATS carries, which NATS would refuse whole
with every other publisher's messages in it; a message too large alone is dropped and fails its
own publisher only (``broker.cluster.forward``). A connection of the test's own plays the
member and answers each frame."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
import pytest
from nats.aio.msg import Msg

from broker.cluster.forward import Forwarder
from broker.cluster.frames import decode
from broker.cluster.link import ClusterLink
from broker.mqtt.properties import Properties, Property
from broker.router import Message
from nanoiot.errors import ClusterUnavailableError
from tests.broker.cluster.parking import MIB, WAIT, parking_forwarder
from tests.natsserver import NATS_URL, nats_has_all

MEMBER = "b"
KIB = 1024


def _large(n: int) -> Message:
    """A message whose frame record is about 350 KiB, of which 300 KiB are user properties:
    a size estimated from its topic and payload alone lets three into one frame."""
    listed = [(Property.USER_PROPERTY, (f"k{i}", "v" * 60 * KIB)) for i in range(5)]
    return Message(f"big/{n}", b"p" * 50 * KIB, 1, properties=Properties(listed))


@asynccontextmanager
async def _member(forwarder: Forwarder) -> AsyncIterator[list[str]]:
    """The member: the topics of the messages it received, each frame answered."""
    member = await nats.connect(NATS_URL)
    received: list[str] = []

    async def answer(msg: Msg) -> None:
        received.extend(routed.message.topic for routed in decode(msg.data, 0.0))
        if msg.reply:
            await msg.respond(b"")

    try:
        await member.subscribe(forwarder.subject(MEMBER), cb=answer)
        await nats_has_all(member)
        yield received
    finally:
        await member.close()


async def test_large_messages_leave_the_others_in_their_frame_flowing(link: ClusterLink) -> None:
    async with (
        parking_forwarder(link, max_buffer=16 * MIB) as (forwarder, _),
        _member(forwarder) as received,
    ):
        # One event loop turn: a bystander's message, the large ones, another bystander's.
        confirmed = [forwarder.forward([MEMBER], Message("small/1", b"s", 1), [MEMBER], {})]
        confirmed += [forwarder.forward([MEMBER], _large(n), [MEMBER], {}) for n in range(4)]
        confirmed += [forwarder.forward([MEMBER], Message("small/2", b"s", 1), [MEMBER], {})]
        for each in confirmed:
            assert each is not None
            await asyncio.wait_for(each, WAIT)
        assert received == ["small/1", "big/0", "big/1", "big/2", "big/3", "small/2"]
        assert forwarder.frames_dropped == 0


async def test_a_message_larger_than_nats_carries_fails_its_publisher_alone(
    link: ClusterLink, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        parking_forwarder(link, max_buffer=16 * MIB) as (forwarder, _),
        _member(forwarder) as received,
    ):
        huge = Message("huge", b"h" * link.client.max_payload, 1)
        small = forwarder.forward([MEMBER], Message("small/1", b"s", 1), [MEMBER], {})
        refused = forwarder.forward([MEMBER], huge, [MEMBER], {})
        quiet = forwarder.forward([MEMBER], Message("huge/0", huge.payload, 0), [MEMBER], {})
        assert small is not None
        assert refused is not None
        assert quiet is None
        await asyncio.wait_for(small, WAIT)
        with pytest.raises(ClusterUnavailableError, match="larger than NATS's max_payload"):
            await asyncio.wait_for(refused, WAIT)
        assert received == ["small/1"]
        assert forwarder.frames_dropped == 2
        assert "a message for member b dropped: it is larger than NATS's max_payload" in (
            caplog.text
        )
