"""A member fenced off stops listening for frames and listens again when it is back
(``FramesIn.stop_until_back``, ``take``, ``broker.cluster.fence``): meanwhile
NATS tells their senders that nobody listens, so they park them rather than have them
refused; one that comes as it listens again, before it is back, waits until it is. On the
machine's NATS; a connection of the test's own plays the sender."""

import asyncio
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from broker.cluster.confirmations import BUSY_EVERY
from broker.cluster.fence import REFUSAL, Fencing
from broker.cluster.forward import Forwarder
from broker.cluster.frames import encode
from broker.cluster.frames_in import FramesIn
from broker.cluster.link import FLUSH_TIMEOUT, ClusterLink
from broker.cluster.router import ClusterRouter
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.router import LocalRouter, Message
from broker.session_store import MemorySessionStore
from nanoiot.errors import ClusterError
from nanoiot.settings import Settings
from tests.broker.cluster.parking import MIB, WAIT
from tests.cluster.proxy import nats_proxy
from tests.natsserver import NATS_URL

# Seconds between the lines a member sends over a slow path to NATS: far more than NATS takes
# to answer another connection.
PACE = 0.25


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


def _answering_member(link: ClusterLink) -> tuple[FramesIn, str, "asyncio.Queue[Msg]"]:
    """``link``'s frames in (not listening yet), the subject frames are sent to, and the
    frames that reach it, each answered and not routed."""
    local = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    router = ClusterRouter(local, link, local.store, MIB)
    got: asyncio.Queue[Msg] = asyncio.Queue()

    async def taken(msg: Msg) -> None:
        got.put_nowait(msg)
        await msg.respond(b"")

    router.frames_in.receive = taken  # type: ignore[method-assign]
    return router.frames_in, router.forwarder.subject(link.member), got


async def test_a_fenced_member_stops_taking_frames_until_it_is_back(
    link: ClusterLink, sender: NATS
) -> None:
    frames_in, subject, got = _answering_member(link)
    await frames_in.take()
    assert await _listened(sender, subject, got)
    await frames_in.stop_until_back()  # fenced off
    assert not await _listened(sender, subject, got)  # the sender parks it
    await frames_in.take()  # back
    assert await _listened(sender, subject, got)
    await frames_in.stop_until_back()


async def test_nats_has_what_take_and_stop_say_before_they_return(
    cluster_settings: Callable[..., Settings], sender: NATS
) -> None:
    """Over a slow path to NATS (each line the member sends goes ``PACE`` seconds after the
    one before): a frame sent once ``take`` returned is taken, not refused as if nobody
    listened; one sent once ``stop_until_back`` returned is parked by its sender, not lost
    to a subscription the member no longer reads. nats-py writes a flush's PING ahead of a
    SUB or UNSUB not written yet (``ClusterLink.flush``)."""
    with nats_proxy() as proxy:
        link = await ClusterLink.connect(cluster_settings(nats_url=proxy.url))
        try:
            frames_in, subject, got = _answering_member(link)
            proxy.pace(PACE)
            await frames_in.take()
            assert await _listened(sender, subject, got)
            await frames_in.stop_until_back()
            assert not await _listened(sender, subject, got)
        finally:
            proxy.pace(0)
            await link.close()


def _fenced_member(router: ClusterRouter) -> Fencing:
    """The fencing of a member fenced off whose NATS is back (a heartbeat of its next run
    written), with ``router``; what else it acts on, as little as ``Fencing._rejoin`` reads."""

    async def stopped() -> None:
        pass

    loop = asyncio.get_running_loop()
    members = SimpleNamespace(
        fenced=True, run=1, interval=60.0, renewed_at=loop.time(), beat_now=lambda: None
    )
    registry = SimpleNamespace(refusing=REFUSAL, fenced_now=lambda: members.fenced)
    broker = SimpleNamespace(
        registry=registry, start_restoring=lambda: SimpleNamespace(stop=stopped)
    )
    claims = SimpleNamespace(claimed_at=lambda _key: None, read_holders_again=lambda: None)
    fencing = Fencing(members, SimpleNamespace(back=lambda: None), claims, broker)  # type: ignore[arg-type]
    fencing.router = router
    router.handovers = SimpleNamespace(registry=registry, fence=0, departures={})  # type: ignore[assignment]
    return fencing


async def test_a_frame_that_comes_as_a_fenced_member_listens_again_waits_until_it_is_back(
    link: ClusterLink, sender: NATS
) -> None:
    """A member that never parked for it (it sent nothing while nobody listened) sends a
    frame as soon as the member listens again, before the member is back: the frame is
    taken once it is, not refused (its publisher would be disconnected unacknowledged)."""
    local = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    router = ClusterRouter(local, link, local.store, MIB)
    fencing = _fenced_member(router)
    subject = router.forwarder.subject(link.member)
    arrived = asyncio.Event()
    answers: list[asyncio.Task[Msg]] = []
    frames_in = router.frames_in
    frame, take = frames_in.receive, frames_in.take

    async def observed(msg: Msg) -> None:
        arrived.set()
        await frame(msg)

    async def take_then_sent_to(rejoined: "asyncio.Future[None] | None" = None) -> None:
        """Listening, and a frame there before the rejoining goes on."""
        await take(rejoined)
        answers.append(asyncio.create_task(sender.request(subject, b"", timeout=WAIT)))
        await asyncio.wait_for(arrived.wait(), WAIT)

    frames_in.receive = observed  # type: ignore[method-assign]
    frames_in.take = take_then_sent_to  # type: ignore[method-assign]
    await router.forwarder.start()
    try:
        await fencing._rejoin()
        assert not fencing.fenced
        answer = await answers[0]
        assert answer.data == b"", "refused as fenced off"  # b"-": refused
    finally:
        await fencing.stop()
        await frames_in.stop_until_back()
        await router.forwarder.stop()


async def test_a_member_not_known_to_listen_takes_no_frame(
    cluster_settings: Callable[..., Settings], sender: NATS
) -> None:
    """Its NATS too slow to say the subscription is there (the rejoining fails: tried again at
    the next heartbeat): the subscription is taken back, so that the others park what they
    send it meanwhile rather than have it refused."""
    with nats_proxy() as proxy:
        link = await ClusterLink.connect(cluster_settings(nats_url=proxy.url))
        try:
            forwarder = Forwarder(link, MIB, lambda _member: None)
            subject = forwarder.subject(link.member)

            async def refused(msg: Msg) -> None:
                await msg.respond(b"-")

            proxy.delay(FLUSH_TIMEOUT + 1.0)  # NATS's answers to it, the flush's included
            with pytest.raises(ClusterError, match="listening for forwarded messages"):
                await forwarder.start_taking(refused)
            async with asyncio.timeout(WAIT):
                while True:  # until the server has the unsubscription
                    try:
                        await sender.request(subject, b"frame", timeout=0.5)
                    except nats.errors.NoRespondersError:
                        break
                    except nats.errors.TimeoutError:
                        continue  # its delayed answer: still subscribed
            proxy.delay(0)
        finally:
            await link.close()


def _restoring_member(
    link: ClusterLink, max_buffer: int
) -> tuple[ClusterRouter, asyncio.Future[None]]:
    """A member still restoring its sessions from the store, with no subscriber: what it
    acts on, as little as ``FramesIn`` reads; the future ends the restore."""
    local = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    router = ClusterRouter(local, link, local.store, max_buffer)
    restored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    router.claims = SimpleNamespace(  # type: ignore[assignment]
        restoring=lambda: None if restored.done() else restored
    )
    router.handovers = SimpleNamespace(registry=None, fence=0, departures={})  # type: ignore[assignment]
    return router, restored


def _frame(n: int) -> bytes:
    frame = bytearray()
    encode(Message("t", str(n).encode(), 1), frame, asyncio.get_running_loop().time())
    return bytes(frame)


@pytest.mark.parametrize("held", [3, 1])
async def test_frames_that_come_while_the_member_restores_its_sessions_are_named_busy(
    link: ClusterLink, held: int
) -> None:
    """A restore of a fleet's sessions outlasts the ``CONFIRM_WITHIN`` seconds their senders
    wait: the frames that come meanwhile are named in busy notices (``held`` of the three
    fit in ``max_buffer``; the others wait on NATS's queue, unnamed), none answered before
    the restore is done, all answered after it, in order. The member's own connection plays
    the sender: no interest to wait for between NATS servers."""
    sender = link.client
    frames = [_frame(n) for n in range(3)]
    router, restored = _restoring_member(link, held * len(frames[0]))
    inbox = sender.new_inbox()
    answers: asyncio.Queue[Msg] = asyncio.Queue()
    named: set[str] = set()
    notice = asyncio.Event()

    async def heard(msg: Msg) -> None:
        if msg.subject.endswith(".b"):
            named.update(msg.data.decode().split())
            notice.set()
        else:
            answers.put_nowait(msg)

    await sender.subscribe(f"{inbox}.*", cb=heard)
    await router.forwarder.start()
    await router.frames_in.take()
    try:
        subject = router.forwarder.subject(link.member)
        for n, frame in enumerate(frames):
            await sender.publish(subject, frame, reply=f"{inbox}.{n}")
        await sender.flush()
        await asyncio.wait_for(notice.wait(), BUSY_EVERY + WAIT)
        assert named == {str(n) for n in range(held)}
        assert answers.empty()  # a notice acknowledges nothing
        restored.set_result(None)
        for n in range(len(frames)):
            answer = await asyncio.wait_for(answers.get(), WAIT)
            assert (answer.subject, answer.data) == (f"{inbox}.{n}", b"")
    finally:
        if not restored.done():  # what waits for it is not left waiting
            restored.set_result(None)
        await router.frames_in.stop()
        await router.forwarder.stop()
