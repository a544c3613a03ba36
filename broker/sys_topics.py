"""The ``$SYS/broker/...`` tree: the broker's figures, published every ``sys_interval`` s;
in a cluster also ``$SYS/cluster/...``, the sums of the live members' figures.

Topic names follow Mosquitto's, so dashboards made for it read ours. Each is published
retained, so a new subscriber has the latest at once. MQTT 3.1.1 §4.7.2: a filter starting
with a wildcard never matches a ``$`` topic, so ``#`` subscribers never see these; clients
subscribe to ``$SYS/#`` (applications may by default, devices only by an operator's rule).
Load figures are moving averages per minute over 1, 5 and 15 minutes, as Mosquitto's.

The cluster totals come from the members' entries (``broker.cluster.members``), each as of
that member's last heartbeat, this member's own as of now. Every node publishes them to its
own subscribers (``$SYS`` is never forwarded), so a subscriber on any node reads the same.
"""

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from broker.metrics import LIMITS
from nanoiot import __version__
from nanoiot.members import Figures, Member, totals
from nanoiot.tasks import cancel_and_wait

if TYPE_CHECKING:
    from broker.cluster.router import ClusterRouter
    from broker.core import Broker

_PERIODS: Final = (("1min", 60.0), ("5min", 300.0), ("15min", 900.0))
_TOTALS: Final = (
    ("clients/connected", "clients"),
    ("subscriptions/count", "subscriptions"),
    ("messages/received", "messages_received"),
    ("messages/sent", "messages_sent"),
    ("bytes/received", "bytes_received"),
    ("bytes/sent", "bytes_sent"),
)
_LOADS: Final = (
    ("messages/received", "messages_in"),
    ("messages/sent", "messages_out"),
    ("bytes/received", "bytes_in"),
    ("bytes/sent", "bytes_out"),
)


def member_figures(broker: "Broker", router: "ClusterRouter | None" = None) -> Figures:
    """This broker's figures as its cluster member entry carries them; with its cluster
    ``router``, the messages crossing to and from the other members too."""
    metrics = broker.metrics
    return Figures(
        clients=broker.registry.client_count(),
        subscriptions=broker.router.subscription_count,
        messages_received=metrics.messages_in,
        messages_sent=metrics.messages_out,
        bytes_received=metrics.bytes_in,
        bytes_sent=metrics.bytes_out,
        messages_forwarded=router.forwarded if router is not None else 0,
        messages_from_members=router.frames_in.received if router is not None else 0,
    )


class SysTopics:
    def __init__(
        self,
        broker: "Broker",
        interval: float,
        members: Callable[[], list[Member]] | None = None,
        member: str = "",
    ) -> None:
        """``members``: the cluster's live members (None: a single node); ``member``: this
        one's name among them."""
        self._broker = broker
        self._members = members
        self._member = member
        self._interval = interval
        self._started = time.monotonic()
        self._last: dict[str, int] = {}
        self._load: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name="$SYS publisher")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            self.publish_once()
            await asyncio.sleep(self._interval)

    def publish_once(self) -> None:
        for topic, value in self.figures():
            self._broker.publish_system(topic, value.encode())

    def figures(self) -> Iterator[tuple[str, str]]:
        broker = self._broker
        metrics, registry = broker.metrics, broker.registry
        connected = registry.client_count()
        yield "$SYS/broker/version", f"NanoIoT {__version__}"
        yield "$SYS/broker/uptime", f"{int(time.monotonic() - self._started)} seconds"
        yield "$SYS/broker/clients/connected", str(connected)
        yield "$SYS/broker/clients/total", str(max(len(registry.sessions), connected))
        yield "$SYS/broker/clients/disconnected", str(registry.sessions.away())
        yield "$SYS/broker/messages/received", str(metrics.messages_in)
        yield "$SYS/broker/messages/sent", str(metrics.messages_out)
        yield "$SYS/broker/publish/messages/dropped", str(metrics.messages_dropped)
        yield "$SYS/broker/bytes/received", str(metrics.bytes_in)
        yield "$SYS/broker/bytes/sent", str(metrics.bytes_out)
        yield "$SYS/broker/subscriptions/count", str(broker.router.subscription_count)
        yield "$SYS/broker/retained messages/count", str(len(broker.retained))
        for name in LIMITS:
            yield f"$SYS/broker/limits/{name}", str(metrics.limit_hits[name])
        for path, attribute in _LOADS:
            for period, value in self._loads(path, getattr(metrics, attribute)):
                yield f"$SYS/broker/load/{path}/{period}", f"{value:.2f}"
        if self._members is not None:
            yield from self.cluster_figures(self._members())

    def cluster_figures(self, members: list[Member]) -> Iterator[tuple[str, str]]:
        """The cluster's totals, this member's own figures taken as of now."""
        own = member_figures(self._broker)
        others = [member for member in members if member.name != self._member]
        names = sorted([self._member, *(member.name for member in others)])
        summed = totals([*others, Member(self._member, "", 0, 0.0, 0.0, own)])
        yield "$SYS/cluster/nodes", str(len(names))
        yield "$SYS/cluster/members", " ".join(names)
        for path, attribute in _TOTALS:
            yield f"$SYS/cluster/{path}", str(getattr(summed, attribute))

    def _loads(self, path: str, total: int) -> Iterator[tuple[str, float]]:
        """Per-minute rates of ``total``, averaged with a decay of each period."""
        last = self._last.get(path)
        self._last[path] = total
        elapsed = self._interval or 60.0  # publish_once without a period: per call
        per_minute = (total - last) * 60.0 / elapsed if last is not None else 0.0
        for period, seconds in _PERIODS:
            decay = math.exp(-elapsed / seconds)
            key = (path, period)
            previous = self._load.get(key, per_minute)
            self._load[key] = value = previous * decay + per_minute * (1.0 - decay)
            yield period, value
