"""How long a connect waits for its device's seat (``broker.cluster.seats``) in a cluster.

    .venv/bin/python -m bench.seats_bench                      # 2,000 connects each way
    .venv/bin/python -m bench.seats_bench --connects 200 --nats-url nats://127.0.0.1:4222

Two members (``a`` and ``b``, each its own connection to NATS, with heartbeats and the seats
writer running) on a cluster name of their own. On ``a``, ``--connects`` new sessions, each of
its own device, reserve a seat one after the other, the session then added to ``a``'s table as
the registry does (its count written in the background meanwhile): at the default
``max_sessions_per_device`` (100), and again at 2, where every connect takes its device's last
seat but one. Prints the wait's median, 99th percentile and most (ms), and how many connects
asked NATS.
"""

import argparse
import asyncio
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from broker.cluster.link import ClusterLink
from broker.cluster.members import BUCKET as MEMBERS
from broker.cluster.members import MISSED_BEATS, MemberRegistry
from broker.cluster.seats import BUCKET, DeviceSeats
from nanoiot.members import Figures
from nanoiot.settings import Settings

INTERVAL = 1.0


@asynccontextmanager
async def member(
    settings: Settings, interval: float = INTERVAL, ready_within: float | None = None
) -> AsyncIterator[tuple[DeviceSeats, Counter[str]]]:
    """A member (heartbeats every ``interval`` s) with its seats started and their view of
    the bucket read (within ``ready_within`` s; None: however long), and the sessions its
    table holds per device (``held``, which the caller counts as the registry would). The
    set-up of tests/broker/cluster/test_seats.py too."""
    async with AsyncExitStack() as stack:
        link = await ClusterLink.connect(settings)
        stack.push_async_callback(link.close)
        bucket = await link.key_value(MEMBERS, ttl=interval * MISSED_BEATS)
        members = MemberRegistry(link, bucket, interval, Figures, mqtt_port=1)
        await members.start()
        stack.push_async_callback(members.stop)
        held: Counter[str] = Counter()
        seats = DeviceSeats(await link.key_value(BUCKET), members, held.__getitem__)
        seats.start()
        stack.push_async_callback(seats.stop)
        view = getattr(seats, "view", None)  # the watched bucket, where there is one
        if view is not None:
            await asyncio.wait_for(view.until_ready(), ready_within)
        yield seats, held


async def connects(seats: DeviceSeats, held: Counter[str], count: int, limit: int) -> list[float]:
    waits = []
    for n in range(count):
        device = f"device-{limit}-{n}"
        began = time.perf_counter()
        await seats.reserve(device, limit)
        waits.append(time.perf_counter() - began)
        held[device] += 1
        seats.changed(device)
    return waits


def report(name: str, waits: list[float], asked: object) -> None:
    ms = sorted(w * 1000 for w in waits)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{name}: median {statistics.median(ms):.3f} ms, p99 {p99:.3f} ms, "
          f"most {ms[-1]:.3f} ms; asked NATS: {asked}")  # fmt: skip


async def main(count: int, nats_url: str) -> None:
    cluster = f"seats{uuid.uuid4().hex[:8]}"

    def settings(name: str) -> Settings:
        return Settings(nats_url=nats_url, cluster_name=cluster, node_name=name)

    async with member(settings("a")) as (a, held), member(settings("b")):
        await a.members.until_live("b", 10.0)
        for limit in (2, 100):  # the first one's counts are written by then
            before = getattr(a, "asked", None)
            waits = await connects(a, held, count, limit)
            asked = "n/a" if before is None else getattr(a, "asked", 0) - before
            report(f"max_sessions_per_device {limit}", waits, asked)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connects", type=int, default=2000)
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    args = parser.parse_args()
    asyncio.run(main(args.connects, args.nats_url))
