"""A member stopping cleanly leaves the cluster in order (``ClusterRouter.stop``): it stops
taking frames and answers those it took before its members entry is deleted, so a survivor
that sees the entry go and asks whether anything still listens for it
(``broker.cluster.silence``) finds nobody, never a member both gone and listening. On the
machine's NATS, with a whole router of the member's own; a connection of the test's own
plays the survivor."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import nats
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue as NatsKeyValue

from broker.cluster.kv import KeyValue
from broker.cluster.link import ClusterLink
from broker.cluster.members import BUCKET as MEMBERS
from broker.cluster.router import ClusterRouter
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.registry import Registry
from broker.retained import RetainedStore, RetainLimits
from broker.router import LocalRouter
from broker.session_store import MemorySessionStore, SessionStore
from nanoiot.members import Figures
from nanoiot.settings import Settings
from tests.broker.cluster.joined import joined
from tests.broker.cluster.parking import MIB, WAIT
from tests.natsserver import NATS_URL

INTERVAL = 5.0  # heartbeats: none is due during the test
# Seconds its own replay (of what was parked for it: none) follows the stream after its
# restoration: its stop cancels it, and a cancellation Python 3.11's ``wait_for`` loses as a
# NATS answer comes would have the stop wait that long.
WINDOW = 0.5


@asynccontextmanager
async def _survivor() -> AsyncIterator[NATS]:
    client = await nats.connect(NATS_URL)
    try:
        yield client
    finally:
        await client.close()


async def _listened(survivor: NATS, subject: str) -> bool:
    """Whether anything answers on ``subject`` (``ClusterLink.answers``, as a survivor
    asks): False once NATS says nobody listens."""
    try:
        await survivor.request(subject, b"", timeout=WAIT)
    except nats.errors.NoRespondersError:
        return False
    return True


async def _started(link: ClusterLink, store: SessionStore | None = None) -> ClusterRouter:
    """Member ``link``'s router, started as a node starts it, with its heartbeat, and its
    sessions (in ``store``) restored: none."""
    store = store or MemorySessionStore()
    local = LocalRouter(store, Limits(), BrokerMetrics())
    router = ClusterRouter(local, link, store, MIB, handover_window=WINDOW)
    registry = Registry(router, store)
    await router.start(RetainedStore(RetainLimits()), registry)
    await router.start_members(INTERVAL, Figures, 0, registry)
    assert router.claims is not None
    router.claims.restoration_done()  # frames are taken once it is
    return router


def _asked_as_it_leaves(bucket: KeyValue, survivor: NATS, subject: str) -> list[bool]:
    """Ask on the member's forwarding subject just before its entry is deleted from
    ``bucket``, as a survivor would once it saw the entry go: whether anything answered."""
    asked: list[bool] = []
    delete = bucket.delete

    async def asking_first(key: str, revision: int | None = None) -> int:
        asked.append(await _listened(survivor, subject))
        return await delete(key, revision)

    bucket.delete = asking_first  # type: ignore[method-assign]
    return asked


class _Committing(MemorySessionStore):
    """A store with writes of the member's sessions still to commit as it stops: ``flush``
    returns once the test says they are (``committed``)."""

    def __init__(self) -> None:
        self.flushing = asyncio.Event()
        self.committed = asyncio.Event()

    async def flush(self) -> None:
        self.flushing.set()
        await self.committed.wait()


async def test_a_member_stopping_cleanly_stops_listening_before_it_leaves(
    cluster_settings: Callable[..., Settings],
) -> None:
    async with joined(cluster_settings(node_name="a")) as link, _survivor() as survivor:
        router = await _started(link)
        subject = router.forwarder.subject(link.member)
        assert await _listened(survivor, subject)  # it takes frames, and answers them
        members = router.members
        assert members is not None
        asked = _asked_as_it_leaves(members.bucket, survivor, subject)
        await router.stop()
        assert asked == [False], "it still listened as its entry went"


async def test_a_survivor_that_sees_a_member_leave_finds_nobody_listening_for_it(
    cluster_settings: Callable[..., Settings],
) -> None:
    async with joined(cluster_settings(node_name="a")) as link, _survivor() as survivor:
        router = await _started(link)
        subject = router.forwarder.subject(link.member)
        bucket: NatsKeyValue = await survivor.jetstream().key_value(f"{link.cluster}_{MEMBERS}")
        watcher = await bucket.watch(link.member, include_history=False)
        stopping = asyncio.create_task(router.stop())
        answers: list[bool] = []
        async with asyncio.timeout(WAIT):
            async for entry in watcher:
                if entry is not None and entry.operation in ("DEL", "PURGE"):
                    answers.append(await _listened(survivor, subject))
                    break
        await watcher.stop()  # type: ignore[no-untyped-call]
        await stopping
        assert answers == [False]


async def test_a_member_stopping_cleanly_leaves_once_its_sessions_are_committed(
    cluster_settings: Callable[..., Settings],
) -> None:
    """The survivor that adopts its sessions once it sees it gone reads them from the
    store: not before what they wrote is there."""
    store = _Committing()
    async with joined(cluster_settings(node_name="a")) as link, _survivor() as survivor:
        router = await _started(link, store)
        members = router.members
        assert members is not None
        subject = router.forwarder.subject(link.member)
        asked = _asked_as_it_leaves(members.bucket, survivor, subject)
        stopping = asyncio.create_task(router.stop())
        async with asyncio.timeout(WAIT):
            await store.flushing.wait()
        assert asked == [], "it left before its sessions were committed"
        store.committed.set()
        await stopping
        assert asked == [False]
