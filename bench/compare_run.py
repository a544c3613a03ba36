"""The side-by-side benchmark's scenarios with a few connections: S1, S2, S3, S5 and S6.

``Run`` keeps the rows and hands out client-id prefixes: no two connections of a run share a
client id, so no broker ever takes one connection over with another (MQTT 3.1.1 §3.1.4).
"""

import asyncio
import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.compare_brokers import AMQTT, NANOIOT, BrokerProcess
from bench.compare_connects import KINDS as KINDS_OF_KEY
from bench.compare_connects import interleaved_connects
from bench.compare_goals import IDLE_CPU, IDLE_RSS, pubsub_name, steady_name
from bench.compare_load import Workers, run_workers
from bench.compare_report import Row
from bench.compare_setup import SYS_INTERVAL_S, Device
from bench.live_count import LiveCount, check
from bench.load_worker import settled_cpu

if TYPE_CHECKING:
    from bench.compare import Sizes
    from bench.compare_fleet import FleetScenarios

WINDOW = 1_000  # S2/S3: messages sent and not yet delivered to every subscriber


def device_list(devices: Sequence[Device]) -> list[list[str]]:
    return [[d.name, str(d.pem_file)] for d in devices]


class Run:
    def __init__(self, sizes: "Sizes", work: Path, devices: dict[str, list[Device]]) -> None:
        self.sizes = sizes
        self.work = work
        self.devices = devices
        self.rows: list[Row] = []
        self._prefixes = itertools.count()

    def prefix(self) -> str:
        """A client-id prefix no other worker of this run gets."""
        return f"w{next(self._prefixes)}-"

    def scaled(self, broker: BrokerProcess, count: int) -> int:
        """amqtt is given a fifth of the work: it is that much slower."""
        return max(1, count // 5) if broker.name == AMQTT else count

    async def measure(
        self, broker: BrokerProcess, specs: list[dict[str, Any]]
    ) -> tuple[float, list[dict[str, Any]]]:
        """Broker CPU seconds spent while the workers run, and their results."""
        before = await settled_cpu(broker.pid, self.sizes.quiet_s)
        results = await run_workers(specs, self.work)
        return await settled_cpu(broker.pid, self.sizes.quiet_s) - before, results

    # --- S6: no client at all ---------------------------------------------------------

    async def idle_brokers(self, brokers: Sequence[BrokerProcess]) -> None:
        """RSS and CPU of every broker at once, before any client ever connected."""
        await asyncio.gather(*(settled_cpu(b.pid, self.sizes.quiet_s) for b in brokers))
        before = {b.name: b.cpu_seconds() for b in brokers}
        started = time.monotonic()
        await asyncio.sleep(self.sizes.idle_cpu_s)  # the measurement is this stretch of time
        wall = time.monotonic() - started
        for broker in brokers:
            cpu = broker.cpu_seconds() - before[broker.name]
            rss = broker.rss_kib() / 1024
            share = (100 * cpu / wall, "% of a core")
            note = f"{cpu:.2f} s CPU in {wall:.1f} s"
            if broker.name != NANOIOT:
                note += f"; $SYS published every {SYS_INTERVAL_S} s"
            self.rows += [
                Row(IDLE_RSS, broker.name, 0, "", 0.0, 0.0, 0.0, figure=(rss, "MiB")),
                Row(IDLE_CPU, broker.name, 0, "", cpu, wall, 0.0, figure=share, note=note),
            ]  # fmt: skip
            print(f"  {self.rows[-2].summary()}\n  {self.rows[-1].summary()}", flush=True)

    # --- S1 ---------------------------------------------------------------------------

    async def connects(self, brokers: Sequence[BrokerProcess]) -> None:
        """S1 for every broker in interleaved rounds (``bench.compare_connects``), each broker
        warmed up first (lazy imports, caches)."""
        for broker in brokers:
            for kind in KINDS_OF_KEY if self.sizes.warmup else ():
                spec = {"count": self.sizes.warmup, "concurrency": 2}
                await run_workers([{**self.connect_spec(broker, kind), **spec}], self.work)
        procs, rounds = self.sizes.load_procs, self.sizes.connect_rounds
        share = max(1, -(-self.sizes.connects // (procs * rounds)))

        def specs(broker: BrokerProcess, kind: str) -> list[dict[str, Any]]:
            spec = {"count": share, "concurrency": 4}
            return [{**self.connect_spec(broker, kind), **spec} for _ in range(procs)]

        first = len(self.rows)
        self.rows += await interleaved_connects(brokers, specs, self.measure, rounds)
        for row in self.rows[first:]:
            print(f"  {row.summary()}", flush=True)

    def connect_spec(self, broker: BrokerProcess, kind: str) -> dict[str, Any]:
        return {
            "mode": "connect", "port": broker.port, "ca": str(broker.ca_file),
            "devices": device_list(self.devices[kind]), "prefix": self.prefix(),
        }  # fmt: skip

    # --- S2, S3, S5 -------------------------------------------------------------------

    async def pubsub(
        self,
        broker: BrokerProcess,
        live: LiveCount,
        scenario: str,
        spec: dict[str, Any],
        baseline: int = 0,
    ) -> Row:
        """One pub/sub measurement, after checking the broker counts its connections (plus
        ``baseline`` already open; with no ``check_all``, only when there are such)."""
        full = {
            "mode": "pubsub", "port": broker.port, "ca": str(broker.ca_file),
            "devices": device_list(self.devices["ec"]), "prefix": self.prefix(),
            "broker_pid": broker.pid, "window": WINDOW, "quiet_s": self.sizes.quiet_s, **spec,
        }  # fmt: skip
        workers = await Workers.start([full], self.work, "bench.load_worker")
        try:
            (ready,) = await workers.states()
            if self.sizes.check_all or baseline:
                await check(live, baseline + ready["ready"], broker.name, scenario)
            workers.workers[0].send({"go": True})
            (result,) = await workers.finish()
        finally:
            await workers.kill()
        row = Row(
            scenario, broker.name, result["received"], "messages", result["broker_cpu_s"],
            result["wall_s"], result["phase_cpu_s"], failed=result["sent"] - result["received"],
            latency=result["latency_ms"] or None, note=_order_note(result),
        )  # fmt: skip
        self.rows.append(row)
        return row

    async def throughput(self, broker: BrokerProcess, live: LiveCount, qos: int) -> None:
        fan = self.sizes.fan
        shapes = [(1, 1), (fan, 1)] + ([(1, fan)] if qos == 0 else [])
        for publishers, subscribers in shapes:
            deliveries = self.scaled(broker, self.sizes.messages)
            spec = {"qos": qos, "publishers": publishers, "subscribers": subscribers,
                    "count": max(1, deliveries // subscribers)}  # fmt: skip
            await self.pubsub(broker, live, pubsub_name(qos, publishers, subscribers), spec)

    async def steady(self, broker: BrokerProcess, live: LiveCount, qos: int) -> None:
        spec = {"qos": qos, "publishers": 1, "rate": self.sizes.rate,
                "seconds": self.sizes.latency_s}  # fmt: skip
        await self.pubsub(broker, live, steady_name(qos, self.sizes.rate), spec)

    async def each_broker(
        self,
        broker: BrokerProcess,
        live: LiveCount,
        scenarios: Sequence[str],
        fleet: "FleetScenarios",
    ) -> None:
        print(f"--- {broker.name} (pid {broker.pid}, port {broker.port})", flush=True)
        first = len(self.rows)
        for qos in (0, 1):
            if f"S{2 + qos}" in scenarios:
                await self.throughput(broker, live, qos)
        if "S5" in scenarios:
            for qos in (0, 1):
                await self.steady(broker, live, qos)
        for row in self.rows[first:]:
            print(f"  {row.summary()}", flush=True)
        await fleet.each_broker(broker, live, scenarios)


def _order_note(result: dict[str, Any]) -> str:
    return f"{result['out_of_order']} out of order" if result["out_of_order"] else ""
