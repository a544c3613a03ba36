"""A member busy giving a backlog says so, and its senders wait for its frames longer, within
bounds (``broker.cluster.busy``, ``broker.cluster.confirmations``): a publisher is not cut off
for a slow but live member, and never acknowledged by a notice alone."""

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.msg import Msg

from broker.cluster.busy import BusyNotices
from broker.cluster.confirmations import BUSY_EVERY, CONFIRM_WITHIN, Awaiting
from broker.cluster.forward import Forwarder
from broker.cluster.link import ClusterLink
from broker.router import Message
from tests.broker.cluster.parking import MIB, WAIT, parking_forwarder
from tests.natsserver import NATS_URL, nats_has_all

MEMBER = "busy"
MOST = 60.0  # seconds a busy member's frame is waited for at most


async def test_a_busy_notice_extends_a_frame_s_wait_within_its_bounds() -> None:
    loop = asyncio.get_running_loop()
    awaiting = Awaiting(most_busy=MOST, busy_bytes=10)
    first, second = loop.create_future(), loop.create_future()
    sent = loop.time()
    token = awaiting.add(MEMBER, b"12345678", first)
    other = awaiting.add(MEMBER, b"abcdefgh", second)
    usual = awaiting.deadline(other)
    assert usual is not None
    assert usual >= sent + CONFIRM_WITHIN
    assert awaiting.busy(token)
    assert not awaiting.busy(other)  # 16 bytes extended would pass busy_bytes
    assert awaiting.deadline(other) == usual  # its first deadline stands
    extended = awaiting.deadline(token)
    assert extended is not None
    assert sent + CONFIRM_WITHIN <= extended <= sent + MOST
    assert awaiting.extended_bytes == 8
    assert not first.done()  # a notice acknowledges nothing
    assert awaiting.answered(token) is not None
    assert awaiting.extended_bytes == 0
    assert awaiting.busy(other)  # room again
    assert not awaiting.busy("no such frame")
    awaiting.fail_all("done")
    assert awaiting.extended_bytes == 0
    assert isinstance(second.exception(), Exception)


async def test_a_busy_frame_is_waited_for_up_to_most_busy_from_its_sending() -> None:
    loop = asyncio.get_running_loop()
    most = CONFIRM_WITHIN + 1.0
    awaiting = Awaiting(most_busy=most, busy_bytes=MIB)
    confirmed = loop.create_future()
    sent = loop.time()
    token = awaiting.add(MEMBER, b"frame", confirmed)
    for _notice in range(3):
        assert awaiting.busy(token)
    deadline = awaiting.deadline(token)
    assert deadline is not None
    assert deadline <= sent + most + 0.1
    awaiting.fail_all("done")
    confirmed.exception()


@pytest.fixture
async def forwarder(link: ClusterLink) -> AsyncIterator[Forwarder]:
    async with parking_forwarder(link, max_buffer=MIB) as (forwarder, _):
        yield forwarder


@pytest.mark.slow
async def test_a_member_that_says_it_is_busy_is_waited_for_past_confirm_within(
    forwarder: Forwarder,
) -> None:
    """The member (a connection of the test's own, with the product's ``BusyNotices``)
    holds the frame past ``CONFIRM_WITHIN``, then answers: the publisher is confirmed, not
    failed; its notices reached the sender."""
    member = await nats.connect(NATS_URL)
    got: asyncio.Queue[Msg] = asyncio.Queue()
    sending: set[asyncio.Task[None]] = set()

    def send(subject: str, data: bytes) -> None:
        task = asyncio.get_running_loop().create_task(member.publish(subject, data))
        sending.add(task)
        task.add_done_callback(sending.discard)

    notices = BusyNotices(send)
    try:
        await member.subscribe(forwarder.subject(MEMBER), cb=got.put)
        await nats_has_all(member)
        confirmed = forwarder.forward([MEMBER], Message("t", b"held", 1), [MEMBER], {})
        assert confirmed is not None
        frame = await asyncio.wait_for(got.get(), WAIT)
        assert frame.data
        assert frame.reply.rsplit(".", 1)[1].isdigit()  # a frame's token
        notices.held(frame.reply)
        probe = await asyncio.wait_for(got.get(), WAIT)  # unanswered for PROBE_AFTER
        await member.publish(probe.reply, b"")  # it listens
        with pytest.raises(TimeoutError):  # still waited for past its usual deadline
            await asyncio.wait_for(asyncio.shield(confirmed), CONFIRM_WITHIN + BUSY_EVERY)
        assert notices.sent >= CONFIRM_WITHIN / BUSY_EVERY - 1
        assert forwarder.busy.heard >= 1  # counted for ``/metrics``
        notices.answered(frame.reply)
        await member.publish(frame.reply, b"")  # given and committed: answered
        await asyncio.wait_for(confirmed, WAIT)
        assert forwarder.frames_parked == 0
    finally:
        notices.stop()
        await member.close()
