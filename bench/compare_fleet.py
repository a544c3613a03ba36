"""The side-by-side benchmark's scenarios with many connections, one device certificate each.

- S4: ``--idle`` idle mTLS connections (no subscription): broker RSS growth per connection.
- S7: K idle sessions, each subscribed to its own RPC filter ``devices/<name>/rpc/request/+``
  (as every device of a fleet waits for commands), K = each of ``--k-levels`` (0 included),
  the fleet grown from one level to the next: broker CPU per QoS 0 message 1 -> 1 on another
  topic, and per mTLS connect. A broker that tests every filter on every PUBLISH pays K times.
- S8: the largest of those fleets plus one application subscribed to ``devices/+/telemetry``
  (QoS 1), the devices publishing QoS 1 telemetry to ``devices/<name>/telemetry`` in turn at
  ``--fleet-rate`` msg/s: publish-to-delivery latency p50/p99 and broker CPU per message.

Before it measures, each checks that the broker counts exactly the connections it opened.
"""

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import Any

from bench.compare_brokers import BrokerProcess
from bench.compare_goals import fleet_name, idle_name, sessions_name
from bench.compare_load import Worker, Workers
from bench.compare_report import Row
from bench.compare_run import Run, device_list
from bench.compare_setup import Device
from bench.live_count import LiveCount, LiveCountMismatch, check
from bench.load_worker import settled_cpu

MODULE = "bench.fleet_worker"
DRAIN_LIMIT_S = 300.0  # S8: how long a broker that fell behind may take to catch up
QOS0 = "QoS 0 1 -> 1"


class Fleet:
    """Device connections held by worker processes, opened in groups as the fleet grows."""

    def __init__(self, run: Run, broker: BrokerProcess, devices: Sequence[Device]) -> None:
        self.run, self.broker, self.devices = run, broker, devices
        self.groups: list[Workers] = []
        self.held: list[tuple[Worker, int]] = []  # each worker and the connections it holds
        self.open = self.failed = 0

    async def grow(self, size: int, *, subscribe: bool, suffix: str = "") -> None:
        """Open connections for devices ``open`` to ``size``, spread over the load processes."""
        devices = self.devices[self.open : size]
        procs = max(1, min(self.run.sizes.load_procs, len(devices)))
        share = -(-len(devices) // procs)
        specs = [
            {
                "role": "devices",
                "port": self.broker.port,
                "ca": str(self.broker.ca_file),
                "devices": device_list(devices[i * share : (i + 1) * share]),
                "offset": self.open + i * share,
                "subscribe": subscribe,
                "suffix": suffix,
            }
            for i in range(procs)
        ]
        group = await Workers.start(specs, self.run.work, MODULE)
        self.groups.append(group)
        states = await group.states()
        self.held += [(w, s["ready"]) for w, s in zip(group.workers, states, strict=True)]
        self.open += sum(state["ready"] for state in states)
        self.failed += sum(state["failures"] for state in states)
        errors = [state["first_error"] for state in states if state["first_error"]]
        if errors:
            print(f"  {self.failed} connections failed, first: {errors[0]}", flush=True)

    async def publish(self, rate: float, seconds: float) -> tuple[int, int]:
        """(sent, PUBACKs): telemetry at ``rate`` msg/s from all the fleet's devices at once,
        each worker's share in proportion to the devices it holds."""
        jobs = [
            worker.command(
                {"publish": {"rate": rate * held / self.open, "seconds": seconds, "qos": 1}}
            )
            for worker, held in self.held
        ]
        results = await asyncio.gather(*jobs)
        return sum(r["sent"] for r in results), sum(r["pubacks"] for r in results)

    async def close(self) -> float:
        """Close every connection; the load generator's CPU seconds."""
        cpu = 0.0
        try:
            for group in self.groups:
                cpu += sum(result["cpu_s"] for result in await group.finish())
        finally:
            for group in self.groups:
                await group.kill()
        return cpu


class FleetScenarios:
    def __init__(self, run: Run, devices: Sequence[Device]) -> None:
        self.run = run
        self.devices = devices

    async def each_broker(
        self, broker: BrokerProcess, live: LiveCount, scenarios: Sequence[str]
    ) -> None:
        first = len(self.run.rows)
        if "S4" in scenarios:
            await self._or_refused(broker, "S4", self.idle(broker, live))
        if "S7" in scenarios or "S8" in scenarios:
            await self._or_refused(broker, "S7/S8", self.sessions(broker, live, scenarios))
        for row in self.run.rows[first:]:
            print(f"  {row.summary()}", flush=True)

    async def _or_refused(
        self, broker: BrokerProcess, what: str, scenario: Coroutine[Any, Any, None]
    ) -> None:
        """Run ``scenario``; a broker that does not hold the fleet's connections gets a row
        saying so, and the run goes on with the other brokers (their figures stay valid)."""
        try:
            await scenario
        except LiveCountMismatch as refused:
            print(f"  {what} not measured: {refused}", flush=True)
            self.run.rows.append(
                Row(f"{what}: fleet held", broker.name, 0, "connections", 0.0, 0.0, 0.0,
                    note=f"not measured: {refused}")
            )  # fmt: skip

    async def idle(self, broker: BrokerProcess, live: LiveCount) -> None:
        """S4: RSS per idle mTLS connection."""
        quiet = self.run.sizes.quiet_s
        # Counted once before too: NanoIoT builds its admin application on the first HTTP
        # request (the count's /metrics), which must not count as the connections' memory.
        await check(live, 0, broker.name, "RSS per idle connection")
        await settled_cpu(broker.pid, quiet)
        rss_before = broker.rss_kib()
        fleet = Fleet(self.run, broker, self.devices)
        try:
            await fleet.grow(self.run.sizes.idle, subscribe=False, suffix="-idle")
            await check(live, fleet.open, broker.name, "RSS per idle connection")
            await settled_cpu(broker.pid, quiet)
            rss_after = broker.rss_kib()
        finally:
            load_cpu = await fleet.close()
        self.run.rows.append(
            Row(idle_name(self.run.sizes.idle), broker.name, fleet.open, "connections", 0.0,
                0.0, load_cpu, failed=fleet.failed, rss_kib=(rss_before, rss_after))
        )  # fmt: skip

    async def sessions(
        self, broker: BrokerProcess, live: LiveCount, scenarios: Sequence[str]
    ) -> None:
        """S7 at every K, then S8 on the largest fleet."""
        sizes = self.run.sizes
        fleet = Fleet(self.run, broker, self.devices)
        base: dict[str, Row] = {}
        try:
            for k in sizes.k_levels if "S7" in scenarios else (sizes.fleet,):
                per_session = 0.0
                if k > fleet.open:
                    await check(live, fleet.open, broker.name, "RSS per session")  # see idle()
                    await settled_cpu(broker.pid, sizes.quiet_s)
                    rss, before = broker.rss_kib(), fleet.open
                    await fleet.grow(k, subscribe=True)
                    await settled_cpu(broker.pid, sizes.quiet_s)
                    per_session = (broker.rss_kib() - rss) / max(1, fleet.open - before)
                if "S7" in scenarios:  # its pub/sub checks the count: K plus its own two
                    await self._at_k(broker, live, fleet, k, base, per_session)
            if "S8" in scenarios:
                await self.telemetry(broker, live, fleet)
        finally:
            await fleet.close()

    async def _at_k(
        self, broker: BrokerProcess, live: LiveCount, fleet: Fleet, k: int,
        base: dict[str, Row], per_session_kib: float,
    ) -> None:  # fmt: skip
        sizes = self.run.sizes
        spec = {"qos": 0, "publishers": 1, "subscribers": 1,
                "count": self.run.scaled(broker, sizes.k_messages)}  # fmt: skip
        message = await self.run.pubsub(broker, live, sessions_name(k, QOS0), spec, fleet.open)
        procs = sizes.load_procs
        specs = [
            {
                **self.run.connect_spec(broker, "ec"),
                "count": -(-sizes.k_connects // procs),
                "concurrency": 4,
            }
            for _ in range(procs)
        ]
        cpu, results = await self.run.measure(broker, specs)
        done = sum(r["connects"] - r["failures"] for r in results)
        connect = Row(
            sessions_name(k, "connect"), broker.name, done, "connects", cpu,
            max(r["wall_s"] for r in results), sum(r["cpu_s"] for r in results),
            failed=sum(r["failures"] for r in results),
        )  # fmt: skip
        self.run.rows.append(connect)
        self._notes(k, message, connect, base, per_session_kib)

    def _notes(
        self, k: int, message: Row, connect: Row, base: dict[str, Row], per_session_kib: float
    ) -> None:
        """Each row against its K=0 row; the RSS each session of this level added."""
        rows = self.run.rows
        for what, row in ((QOS0, message), ("connect", connect)):
            if k == 0:
                base[what] = row
                continue
            zero = base[what].key_figure() if what in base else 0.0
            note = f"{row.key_figure() / zero:.2f}× K=0" if zero else "K=0 under one tick"
            if what == QOS0:
                note += f"; RSS +{per_session_kib:.1f} KiB per session"
            rows[rows.index(row)] = _with_note(row, note)

    async def telemetry(self, broker: BrokerProcess, live: LiveCount, fleet: Fleet) -> None:
        """S8: the application, then telemetry from every device of the fleet."""
        sizes = self.run.sizes
        rate = self.run.scaled(broker, sizes.fleet_rate)
        app_spec = {
            "role": "application", "port": broker.port, "ca": str(broker.ca_file),
            "devices": device_list(self.devices[:1]), "client_id": f"{self.run.prefix()}app",
        }  # fmt: skip
        app = await Workers.start([app_spec], self.run.work, MODULE)
        try:
            await app.states()
            await check(live, fleet.open + 1, broker.name, "the fleet and its application")
            cpu = await settled_cpu(broker.pid, sizes.quiet_s)
            sent, acked = await fleet.publish(rate, sizes.fleet_s)
            bound = max(30.0, 3 * sizes.fleet_s)
            (on_time,) = await app.command({"expect": sent, "quiet_s": 10.0, "limit_s": bound})
            # A broker that could not keep up is still delivering, and that CPU counts too.
            cpu = await settled_cpu(broker.pid, sizes.quiet_s, DRAIN_LIMIT_S) - cpu
            (result,) = await app.command({"expect": sent, "quiet_s": 1.0, "limit_s": 1.0})
            load_cpu = sum(r["cpu_s"] for r in await app.finish())
        finally:
            await app.kill()
        note = _fleet_note(result, sent, acked)
        if on_time["received"] < result["received"]:
            note += f"; {on_time['received']:,} delivered within {bound:.0f} s"
        self.run.rows.append(
            Row(fleet_name(fleet.open, rate), broker.name, result["received"], "messages", cpu,
                sizes.fleet_s, load_cpu, failed=sent - result["received"],
                latency=result["latency_ms"] or None, note=note)
        )  # fmt: skip


def _fleet_note(result: dict[str, Any], sent: int, acked: int) -> str:
    notes = [f"{acked:,} of {sent:,} PUBACKs"]
    if result["out_of_order"]:
        notes.append(f"{result['out_of_order']} out of order")
    return "; ".join(notes)


def _with_note(row: Row, note: str) -> Row:
    return replace(row, note="; ".join(n for n in (row.note, note) if n))
