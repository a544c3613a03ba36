"""NanoIoT next to Mosquitto and plain amqtt, in one run on one machine.

    .venv/bin/python -m bench.compare                # the real run, ~10 minutes
    .venv/bin/python -m bench.compare --smoke        # CI-sized, well under a minute

Three brokers with equivalent mutual-TLS set-ups (``bench.compare_setup``) run at once on
free loopback ports; the load comes from ``bench.load_worker`` processes (raw MQTT 3.1.1 over
asyncio TLS). Scenarios, one broker at a time:

- S1: mTLS connect, CONNACK, DISCONNECT with EC P-256 and RSA-2048 device certificates, with
  ``--devices`` fake devices in NanoIoT's store: connects/s and broker CPU per connect, the
  brokers measured in interleaved rounds (``bench.compare_connects``), before the rest.
- S2 / S3: QoS 0 / QoS 1, 64-byte payloads, 1 -> 1 and 100 -> 1 publishers -> subscriber:
  delivered msg/s with no loss, broker CPU per delivered message.
- S4: ``--idle`` concurrent idle mTLS connections: broker memory (VmRSS) per connection.
- S5: publish-to-delivery latency p50/p99 at a fixed ``--rate`` msg/s (QoS 0, 1 -> 1).

Broker CPU is user + system time of the broker process from /proc (all threads), taken
before and after each measurement once the broker is idle again.
"""

import argparse
import asyncio
import contextlib
import datetime as dt
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.compare_brokers import AMQTT, KINDS, BrokerProcess, raise_fd_limit, started
from bench.compare_connects import KINDS as KINDS_OF_KEY
from bench.compare_connects import interleaved_connects
from bench.compare_load import IdleFleet, run_workers
from bench.compare_report import Row, report
from bench.compare_setup import Device, make_pki, prepare_nanoiot_store
from bench.load_worker import settled_cpu

RESULTS_DIR = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Sizes:
    devices: int  # fake devices in NanoIoT's store
    connects: int  # per broker and key kind
    messages: int  # per pub/sub measurement (amqtt: a fifth, it is that much slower)
    idle: int
    rate: int
    latency_s: float
    load_procs: int
    connect_rounds: int = 8  # S1: interleaved rounds over the brokers (bench.compare_connects)

    @property
    def publishers(self) -> int:
        return 100


def sizes_of(args: argparse.Namespace) -> Sizes:
    if args.smoke:
        return Sizes(500, 40, 1_000, 60, 500, 1.0, 2, connect_rounds=2)
    return Sizes(
        args.devices, args.connects, args.messages, args.idle, args.rate, args.latency_s,
        args.load_procs, args.connect_rounds,
    )  # fmt: skip


def _devices(devices: Sequence[Device]) -> list[list[str]]:
    return [[d.name, str(d.pem_file)] for d in devices]


class Run:
    def __init__(self, sizes: Sizes, work: Path, devices: dict[str, list[Device]]) -> None:
        self.sizes = sizes
        self.work = work
        self.devices = devices
        self.rows: list[Row] = []

    async def measure(
        self, broker: BrokerProcess, specs: list[dict[str, Any]]
    ) -> tuple[float, list[dict[str, Any]]]:
        """Broker CPU seconds spent while the workers run, and their results."""
        before = await settled_cpu(broker.pid)
        results = await run_workers(specs, self.work)
        return await settled_cpu(broker.pid) - before, results

    async def connects(self, brokers: Sequence[BrokerProcess]) -> None:
        """S1 for every broker in interleaved rounds (``bench.compare_connects``), each broker
        warmed up first (lazy imports, caches)."""
        for broker in brokers:
            for kind in KINDS_OF_KEY:
                warmup = {**self._connect_base(broker, kind), "count": 20, "concurrency": 2}
                await run_workers([warmup], self.work)
        procs, rounds = self.sizes.load_procs, self.sizes.connect_rounds
        share = max(1, -(-self.sizes.connects // (procs * rounds)))

        def specs(broker: BrokerProcess, kind: str) -> list[dict[str, Any]]:
            spec = {**self._connect_base(broker, kind), "count": share, "concurrency": 4}
            return [spec] * procs

        self.rows += await interleaved_connects(brokers, specs, self.measure, rounds)

    def _connect_base(self, broker: BrokerProcess, kind: str) -> dict[str, Any]:
        return {
            "mode": "connect", "port": broker.port, "ca": str(broker.ca_file),
            "devices": _devices(self.devices[kind]),
        }  # fmt: skip

    async def pubsub(self, broker: BrokerProcess, qos: int, publishers: int) -> None:
        count = self.sizes.messages // (5 if broker.name == AMQTT else 1)
        spec = {
            "mode": "pubsub", "port": broker.port, "ca": str(broker.ca_file), "qos": qos,
            "devices": _devices(self.devices["ec"][: publishers + 1]),
            "publishers": publishers, "count": count, "window": 1000,
        }  # fmt: skip
        (result,) = await run_workers([{**spec, "broker_pid": broker.pid}], self.work)
        cpu = result["broker_cpu_s"]
        lost = result["sent"] - result["received"]
        self.rows.append(
            Row(
                f"S{2 + qos} QoS {qos}, {publishers} -> 1", broker.name, result["received"],
                "messages", cpu, result["wall_s"], result["phase_cpu_s"], failed=lost,
                note=_order_note(result),
            )
        )  # fmt: skip

    async def latency(self, broker: BrokerProcess) -> None:
        spec = {
            "mode": "pubsub", "port": broker.port, "ca": str(broker.ca_file), "qos": 0,
            "devices": _devices(self.devices["ec"][:2]), "publishers": 1,
            "rate": self.sizes.rate, "seconds": self.sizes.latency_s,
        }  # fmt: skip
        (result,) = await run_workers([{**spec, "broker_pid": broker.pid}], self.work)
        cpu = result["broker_cpu_s"]
        self.rows.append(
            Row(
                f"S5 latency at {self.sizes.rate:,} msg/s", broker.name, result["received"],
                "messages", cpu, result["wall_s"], result["phase_cpu_s"],
                failed=result["sent"] - result["received"], latency=result["latency_ms"],
            )
        )  # fmt: skip

    async def idle(self, broker: BrokerProcess) -> None:
        procs = max(2, self.sizes.load_procs)
        share = -(-self.sizes.idle // procs)
        spec = {
            "mode": "idle", "port": broker.port, "ca": str(broker.ca_file),
            "devices": _devices(self.devices["ec"][:50]), "count": share, "concurrency": 16,
        }  # fmt: skip
        await settled_cpu(broker.pid)
        rss_before = broker.rss_kib()
        fleet = await IdleFleet.open([spec] * procs, self.work)
        try:
            opened, failed = await fleet.ready()
            await settled_cpu(broker.pid)
            rss_after = broker.rss_kib()
            results = await fleet.release()
        finally:
            await fleet.kill()
        self.rows.append(
            Row(
                f"S4 {self.sizes.idle:,} idle connections", broker.name, opened, "connections",
                0.0, 0.0, sum(r["cpu_s"] for r in results), failed=failed,
                rss_kib=(rss_before, rss_after),
            )
        )  # fmt: skip

    async def all_scenarios(self, broker: BrokerProcess, scenarios: Sequence[str]) -> None:
        print(f"--- {broker.name} (pid {broker.pid}, port {broker.port})", flush=True)
        first = len(self.rows)
        for qos in (0, 1):
            if f"S{2 + qos}" in scenarios:
                for publishers in (1, self.sizes.publishers):
                    await self.pubsub(broker, qos, publishers)
        if "S5" in scenarios:
            await self.latency(broker)
        if "S4" in scenarios:
            await self.idle(broker)
        for row in self.rows[first:]:
            print(f"  {row.summary()}", flush=True)


def _order_note(result: dict[str, Any]) -> str:
    return f"{result['out_of_order']} out of order" if result["out_of_order"] else ""


async def run(
    sizes: Sizes,
    work: Path,
    kinds: Sequence[str],
    scenarios: Sequence[str],
    logs: Path | None = None,
) -> list[Row]:
    raise_fd_limit()
    print("making certificates ...", flush=True)
    # Connects cycle through the devices of a kind: 200 each (fewer when smoking; RSA keys
    # take long to make), and one per publisher.
    per_kind = 20 if sizes.connects < 200 else 200
    pki, devices = make_pki(
        work / "pki", {"ec": max(sizes.publishers + 1, per_kind), "rsa": per_kind}
    )
    real = len(devices["ec"]) + len(devices["rsa"])
    print(f"NanoIoT store: {sizes.devices:,} fake + {real} real devices ...", flush=True)
    await prepare_nanoiot_store(
        work / "nanoiot-data", sizes.devices, devices["ec"] + devices["rsa"]
    )
    scenario_run = Run(sizes, work, devices)
    async with contextlib.AsyncExitStack() as stack:
        brokers = [await stack.enter_async_context(started(k, pki, work, logs)) for k in kinds]
        if "S1" in scenarios:
            print("--- S1, brokers interleaved", flush=True)
            await scenario_run.connects(brokers)
            for row in scenario_run.rows:
                print(f"  {row.summary()}", flush=True)
        for broker in brokers:
            await scenario_run.all_scenarios(broker, scenarios)
    return scenario_run.rows


def default_output(smoke: bool) -> Path:
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    # Smoke runs must not overwrite a real result; *.tmp is git-ignored.
    return RESULTS_DIR / (f"{date}-compare-smoke.tmp" if smoke else f"{date}-compare.md")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=100_000, help="fake devices in NanoIoT")
    parser.add_argument("--connects", type=int, default=1_000, help="S1, per broker and kind")
    parser.add_argument("--messages", type=int, default=100_000, help="S2/S3 per measurement")
    parser.add_argument("--idle", type=int, default=10_000, help="S4 idle connections")
    parser.add_argument("--rate", type=int, default=2_000, help="S5 msg/s")
    parser.add_argument("--latency-s", type=float, default=10.0, help="S5 duration")
    parser.add_argument("--connect-rounds", type=int, default=8, help="S1 interleaved rounds")
    parser.add_argument("--load-procs", type=int, default=2, help="load processes (S1, S4)")
    parser.add_argument("--brokers", default=",".join(KINDS), help="comma-separated subset")
    parser.add_argument("--scenarios", default="S1,S2,S3,S4,S5", help="comma-separated subset")
    parser.add_argument("--logs", type=Path, help="keep the brokers' stderr in this directory")
    parser.add_argument("--smoke", action="store_true", help="CI-sized run")
    parser.add_argument("--output", type=Path, help="default bench/results/<date>-compare.md")
    parser.add_argument("--title", default="", help="added to the report's heading")
    args = parser.parse_args(argv)
    sizes = sizes_of(args)
    kinds = [k for k in KINDS if k in args.brokers.split(",")]
    with tempfile.TemporaryDirectory(prefix="nanoiot-compare-") as tmp:
        rows = asyncio.run(run(sizes, Path(tmp), kinds, args.scenarios.split(","), args.logs))
    text = report(rows, sizes, sys.argv[1:] if argv is None else list(argv), args.title)
    print("\n" + text)
    output = args.output or default_output(args.smoke)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
