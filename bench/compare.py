"""NanoIoT next to Mosquitto and plain amqtt, in one run on one machine.

    .venv/bin/python -m bench.compare                # the real run (see bench/README.md)
    .venv/bin/python -m bench.compare --smoke        # CI-sized, well under a minute

Three brokers with equivalent mutual-TLS set-ups (``bench.compare_setup``) run at once on
free loopback ports; the load comes from ``bench.load_worker`` and ``bench.fleet_worker``
processes (raw MQTT 3.1.1 over asyncio TLS). Scenarios:

- S6, first, all brokers at once with no client yet: RSS with no connection, CPU with no
  client (% of a core over ``--idle-cpu-s``).
- S1: mTLS connect, CONNACK, DISCONNECT with EC P-256 and RSA-2048 device certificates, with
  ``--devices`` fake devices in NanoIoT's store, the brokers measured in interleaved rounds
  (``bench.compare_connects``).
- Then one broker at a time. S2 / S3: QoS 0 / QoS 1, 64-byte payloads, 1 -> 1, fan-in
  ``--fan`` -> 1 and (QoS 0) fan-out 1 -> ``--fan``: broker CPU per delivered message.
  S5: QoS 0 and QoS 1 at a steady ``--rate`` msg/s: latency p50/p99 and CPU per message.
  S4, S7, S8 (``bench.compare_fleet``): idle connections, K idle sessions with a filter each,
  and a fleet of devices with one application.

Broker CPU is user + system time of the broker process from /proc (all threads), taken
before and after each measurement once the broker is idle again. Every scenario that holds
connections first checks the broker's own count of them (``bench.live_count``).
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

from bench.compare_brokers import KINDS, raise_fd_limit, started
from bench.compare_fleet import FleetScenarios
from bench.compare_goals import goals_table
from bench.compare_report import Row, report
from bench.compare_run import Run
from bench.compare_setup import make_pki, prepare_nanoiot_store
from bench.live_count import open_for

RESULTS_DIR = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Sizes:
    devices: int = 100_000  # fake devices in NanoIoT's store
    connects: int = 1_000  # S1, per broker and key kind
    messages: int = 100_000  # S2/S3 deliveries per measurement (amqtt: a fifth)
    idle: int = 10_000  # S4
    rate: int = 2_000  # S5 msg/s
    latency_s: float = 10.0  # S5 duration
    load_procs: int = 2
    connect_rounds: int = 8  # S1: interleaved rounds over the brokers
    fan: int = 100  # publishers of the fan-in, subscribers of the fan-out
    idle_cpu_s: float = 10.0  # S6
    k_levels: tuple[int, ...] = (0, 1_000, 10_000)  # S7; S8 uses the largest
    k_messages: int = 5_000  # S7 QoS 0 messages per level (amqtt: a fifth)
    k_connects: int = 400  # S7 connects per level
    fleet_rate: int = 1_000  # S8 msg/s (amqtt: a fifth)
    fleet_s: float = 10.0  # S8 duration
    quiet_s: float = 0.3  # how long a broker must stay idle before its CPU is read
    warmup: int = 20  # S1: connects per broker and kind before the rounds
    # Check the broker's count of live connections before S2, S3 and S5 too, not only where
    # a figure is divided by connections (S4, S7, S8): Mosquitto's count takes a second or
    # two to read, too long for the smoke run.
    check_all: bool = True

    @property
    def fleet(self) -> int:
        return max(self.k_levels)


SMOKE = Sizes(
    devices=500, connects=20, messages=1_000, idle=40, rate=500, latency_s=0.3, load_procs=2,
    connect_rounds=1, fan=10, idle_cpu_s=0.3, k_levels=(0, 40), k_messages=500, k_connects=16,
    fleet_rate=200, fleet_s=0.3, quiet_s=0.1, warmup=0, check_all=False,
)  # fmt: skip

SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8")


def sizes_of(args: argparse.Namespace) -> Sizes:
    if args.smoke:
        return SMOKE
    levels = tuple(sorted({0, *(int(k) for k in args.k_levels.split(","))}))
    return Sizes(
        args.devices, args.connects, args.messages, args.idle, args.rate, args.latency_s,
        args.load_procs, args.connect_rounds, args.fan, args.idle_cpu_s, levels,
        args.k_messages, args.k_connects, args.fleet_rate, args.fleet_s,
    )  # fmt: skip


async def run(
    sizes: Sizes,
    work: Path,
    kinds: Sequence[str],
    scenarios: Sequence[str],
    logs: Path | None = None,
) -> list[Row]:
    raise_fd_limit()
    print("making certificates ...", flush=True)
    # S1 cycles through the devices of a kind (fewer when smoking: RSA keys take long to
    # make); S2-S5 reuse the EC ones; S4, S7 and S8 give every connection a device of its own.
    per_kind = 20 if sizes.connects < 200 else 200
    fleet = max(sizes.idle, sizes.fleet) if {"S4", "S7", "S8"} & set(scenarios) else 0
    rsa = per_kind if "S1" in scenarios else 0
    counts = {"ec": max(sizes.fan + 1, per_kind), "rsa": rsa, "fleet": fleet}
    pki, devices = make_pki(work / "pki", counts)
    real = sum(len(group) for group in devices.values())
    print(f"NanoIoT store: {sizes.devices:,} fake + {real:,} real devices ...", flush=True)
    await prepare_nanoiot_store(
        work / "nanoiot-data", sizes.devices, [d for group in devices.values() for d in group]
    )
    scenario_run = Run(sizes, work, devices)
    async with contextlib.AsyncExitStack() as stack:
        brokers = [await stack.enter_async_context(started(k, pki, work, logs)) for k in kinds]
        if "S6" in scenarios:
            print("--- S6, brokers idle with no client", flush=True)
            await scenario_run.idle_brokers(brokers)
        observer = str(devices["ec"][0].pem_file)
        counts_of = {b.name: await open_for(b, observer) for b in brokers}
        for count in counts_of.values():
            stack.push_async_callback(count.close)
        if "S1" in scenarios:
            print("--- S1, brokers interleaved", flush=True)
            await scenario_run.connects(brokers)
        fleet_run = FleetScenarios(scenario_run, devices["fleet"])
        for broker in brokers:
            await scenario_run.each_broker(broker, counts_of[broker.name], scenarios, fleet_run)
    return scenario_run.rows


def default_output(smoke: bool) -> Path:
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    # Smoke runs must not overwrite a real result; *.tmp is git-ignored.
    return RESULTS_DIR / (f"{date}-compare-smoke.tmp" if smoke else f"{date}-compare.md")


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    full = Sizes()
    add = parser.add_argument
    add("--devices", type=int, default=full.devices, help="fake devices in NanoIoT")
    add("--connects", type=int, default=full.connects, help="S1, per broker and kind")
    add("--messages", type=int, default=full.messages, help="S2/S3 deliveries per measurement")
    add("--idle", type=int, default=full.idle, help="S4 idle connections")
    add("--rate", type=int, default=full.rate, help="S5 msg/s")
    add("--latency-s", type=float, default=full.latency_s, help="S5 duration")
    add("--connect-rounds", type=int, default=full.connect_rounds, help="S1 rounds")
    add("--load-procs", type=int, default=full.load_procs, help="load processes (S1, S4, S7)")
    add("--fan", type=int, default=full.fan, help="S2/S3 fan-in publishers, fan-out subscribers")
    add("--idle-cpu-s", type=float, default=full.idle_cpu_s, help="S6 duration")
    add("--k-levels", default=",".join(map(str, full.k_levels)), help="S7 K values")
    add("--k-messages", type=int, default=full.k_messages, help="S7 messages per level")
    add("--k-connects", type=int, default=full.k_connects, help="S7 connects per level")
    add("--fleet-rate", type=int, default=full.fleet_rate, help="S8 msg/s")
    add("--fleet-s", type=float, default=full.fleet_s, help="S8 duration")
    add("--brokers", default=",".join(KINDS), help="comma-separated subset")
    add("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    add("--logs", type=Path, help="keep the brokers' stderr in this directory")
    add("--smoke", action="store_true", help="CI-sized run")
    add("--output", type=Path, help="default bench/results/<date>-compare.md")
    add("--title", default="", help="added to the report's heading")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments().parse_args(argv)
    sizes = sizes_of(args)
    kinds = [k for k in KINDS if k in args.brokers.split(",")]
    scenarios = args.scenarios.split(",")
    with tempfile.TemporaryDirectory(prefix="nanoiot-compare-") as tmp:
        rows = asyncio.run(run(sizes, Path(tmp), kinds, scenarios, args.logs))
    goals = goals_table(rows, sizes.rate, sizes.k_levels)
    arguments = sys.argv[1:] if argv is None else list(argv)
    text = report(rows, sizes, arguments, args.title, goals)
    print("\n" + text)
    output = args.output or default_output(args.smoke)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
