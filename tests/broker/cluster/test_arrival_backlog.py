"""A session taken from a gone member by its client connecting here
(``broker.cluster.arrivals``), holding a large backlog when its barriers are in, is given it a
part at a time (``broker.cluster.releasing``): the event loop keeps running (the member's
heartbeat, its clients' keep-alives), and the session gets every held message once, in its
publisher's order (MQTT 3.1.1 §4.6). On the machine's NATS, with a whole router of the
member's own; the gone member's parked frames (none) are read for real."""

import asyncio
import gc
import time
from collections.abc import Callable

from broker.cluster.router import ClusterRouter
from broker.mqtt.session import Subscription
from broker.router import Message
from broker.sessions import BrokerSession
from nanoiot.settings import Settings
from tests.broker.cluster.big_backlog import loop_lag, started_router
from tests.broker.cluster.joined import joined

FILTER = "devices/+/telemetry"
# Held messages given to the session. Given in one go, as before they were given a part at
# a time, 200,000 stopped the loop for about a second on a busy 2-core machine (a store
# write and a queue entry each).
MESSAGES = 200_000
MOST_LAG = 0.5  # seconds the loop may be late for a timer during the release
RELEASED_WITHIN = 120.0  # seconds: a loaded CI machine is several times slower
GONE = "b"  # the member the session is taken from: gone, it parked nothing


def _held(router: ClusterRouter, session: BrokerSession) -> None:
    """What reached the session while it was read and its barriers awaited: held. The
    publisher's messages come in reverse, as two ways of coming may mix them."""
    local = router.local
    for number in reversed(range(MESSAGES)):
        message = Message("devices/d/telemetry", b"%08d" % number, 1, id=(7 << 32) | (number + 1))
        local.deliver_to(session, message)
    local.waits.clear()


async def test_a_large_held_backlog_of_a_taken_session_is_given_without_blocking_the_loop(
    cluster_settings: Callable[..., Settings],
) -> None:
    async with joined(cluster_settings(node_name="a")) as link:
        router, registry = await started_router(link, MESSAGES)
        try:
            assert router.handovers is not None
            arrivals = router.handovers.arrivals
            session = BrokerSession(("device", "backend"), "backend", persistent=True)
            session.subscriptions[FILTER] = Subscription(qos=1)
            key = session.key
            arrivals.arriving(key, GONE)  # its client connected here; ``b`` is gone
            arrivals.from_gone(key, GONE)
            registry.restore([session])  # read from the store
            arrivals.loaded(session)
            arrival = session.arrival
            assert arrival is not None
            _held(router, session)
            assert arrival.held is not None
            assert len(arrival.held) == MESSAGES
            stop, lags = asyncio.Event(), list[float]()
            probe = asyncio.create_task(loop_lag(stop, lags))
            started = time.monotonic()
            # The collector's pauses grow with the heap, whatever the release does:
            # measured without them.
            gc.disable()
            try:
                await arrivals.arrived(key, session)  # b's parked frames read, then given
                await asyncio.wait_for(asyncio.shield(arrival.released), RELEASED_WITHIN)
            finally:
                gc.enable()
                stop.set()
                await probe
            took = time.monotonic() - started
            assert max(lags) < MOST_LAG, f"the loop stopped {max(lags):.2f} s of {took:.1f} s"
            given = [int(out.payload) for out in session.queue]
            assert given == list(range(MESSAGES))  # each once, in order
        finally:
            await router.stop()
