"""What the large-backlog tests share: a whole cluster router of the member's own, with room
for the backlog, and a probe of how late the event loop runs while the backlog is given."""

import asyncio

from broker.cluster.link import ClusterLink
from broker.cluster.router import ClusterRouter
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.registry import Registry
from broker.retained import RetainedStore, RetainLimits
from broker.router import LocalRouter
from broker.session_store import MemorySessionStore
from tests.broker.cluster.parking import MIB

PROBE = 0.005  # seconds between the lag probe's timers


async def loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How late each ``PROBE``-second timer fires, until ``stop``."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        await asyncio.sleep(PROBE)
        lags.append(loop.time() - started - PROBE)


async def started_router(link: ClusterLink, messages: int) -> tuple[ClusterRouter, Registry]:
    """A started router whose sessions may queue ``messages`` messages."""
    limits = Limits(max_queued_messages=messages, max_queued_bytes=1024 * MIB)
    store = MemorySessionStore()
    router = ClusterRouter(LocalRouter(store, limits, BrokerMetrics()), link, store, MIB)
    registry = Registry(router, store)
    await router.start(RetainedStore(RetainLimits()), registry)
    return router, registry
