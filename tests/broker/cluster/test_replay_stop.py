"""A member stopping while a replay (``broker.cluster.replay``) waits for frames parked late
stops it at once, even when its cancellation comes as a frame does: nats-py waits for a
frame with Python 3.11's ``asyncio.wait_for``, which then returns the frame and loses the
cancellation (``nanoiot.tasks.cancellable``), and the replay would read on for the rest of
its ``cluster_handover_window``. On the machine's NATS, with a whole router of the member's
own; the moment is made exact by stopping the member in the very turn nats-py queues the
frame for the replay's reader."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import nats.aio.msg
import pytest

from broker.cluster.frames import encode
from broker.cluster.link import ClusterLink
from broker.cluster.router import ClusterRouter
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.mqtt.session import Subscription
from broker.registry import Registry
from broker.retained import RetainedStore, RetainLimits
from broker.router import LocalRouter, Message
from broker.session_store import MemorySessionStore
from broker.sessions import BrokerSession
from nanoiot.settings import Settings
from tests.broker.cluster.joined import joined
from tests.broker.cluster.parking import MIB

WINDOW = 30.0  # seconds a replay reads frames parked late (``cluster_handover_window``)
STOPPED_WITHIN = 5.0  # seconds: a stop that waited for the window takes WINDOW
RELEASED_WITHIN = 20.0
GONE = "b"


async def _started(link: ClusterLink) -> tuple[ClusterRouter, Registry]:
    store = MemorySessionStore()
    local = LocalRouter(store, Limits(), BrokerMetrics())
    router = ClusterRouter(local, link, store, MIB, handover_window=WINDOW)
    registry = Registry(router, store)
    await router.start(RetainedStore(RetainLimits()), registry)
    return router, registry


def _frame() -> bytes:
    frame = bytearray()
    encode(Message("devices/d/telemetry", b"late", 1, id=(7 << 32) | 1), frame, 0.0)
    return bytes(frame)


async def test_a_replay_stops_at_once_when_its_cancellation_comes_with_a_frame(
    cluster_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with joined(cluster_settings(node_name="a")) as link:
        router, registry = await _started(link)
        replays = router.replays
        assert replays is not None
        session = BrokerSession(("device", "backend"), "backend", persistent=True)
        session.subscriptions["devices/+/telemetry"] = Subscription(qos=1)
        registry.restore([session])  # adopted from ``b``, which is gone
        replays.hold([session])
        arrival = session.arrival
        assert arrival is not None
        replays.start(GONE, [session], purge=False)
        async with asyncio.timeout(RELEASED_WITHIN):  # read: frames parked late from now
            await asyncio.shield(arrival.released)
        loop = asyncio.get_running_loop()
        subject = router.parked.subject(GONE)
        stopping: list[asyncio.Task[None]] = []
        stopped = asyncio.Event()  # the stop began
        put_nowait = asyncio.Queue.put_nowait

        def queued(queue: "asyncio.Queue[Any]", item: Any) -> None:
            put_nowait(queue, item)
            if isinstance(item, nats.aio.msg.Msg) and item.subject == subject and not stopping:
                stopping.append(loop.create_task(replays.stop()))  # in this very turn
                stopped.set()

        monkeypatch.setattr(asyncio.Queue, "put_nowait", queued)
        await router.parked.park(GONE, _frame())
        async with asyncio.timeout(RELEASED_WITHIN):
            await stopped.wait()
        started = time.monotonic()
        try:
            async with asyncio.timeout(STOPPED_WITHIN):
                await stopping[0]
        finally:
            took = time.monotonic() - started
            monkeypatch.undo()
            await router.stop()
        assert took < STOPPED_WITHIN
