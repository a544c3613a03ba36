"""What a cluster costs and buys on this machine, in one run, beside a single node and
Mosquitto: ``python -m bench.cluster_bench``.

Scenarios, each with the raw-MQTT load generator (``bench.load_worker``) over mTLS, 64 B
payloads:

- 1 -> 1 at QoS 0 and QoS 1, as fast as delivery allows (at most ``WINDOW`` messages in
  flight): messages/s and broker CPU per message (summed over every broker process), on
  Mosquitto, one NanoIoT node, and two NanoIoT nodes with the publisher on one and the
  subscriber on the other (every message crosses NATS);
- the same pairs paced at ``--rate`` messages/s for ``--seconds``: latency p50 / p99;
- aggregate throughput with ``nanoiot serve --workers 1`` and ``--workers 2``: ``--pairs``
  load generators at once, each its own publisher, subscriber and topic; the kernel spreads
  connections over the workers, so about half the pairs cross between workers.

The nodes share one SQLite store (one host) and the machine's NATS (127.0.0.1:4222) under a
fresh cluster name; the result goes to ``bench/results/cluster-<date>.md``.

    .venv/bin/python -m bench.cluster_bench                     # the recorded run
    .venv/bin/python -m bench.cluster_bench --messages 5000 --seconds 3   # a quick look
"""

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._report import machine_lines, process_cpu_seconds
from bench.compare_brokers import MOSQUITTO, MOSQUITTO_NAME, _discard, _ready_port, _stop, started
from bench.compare_load import Workers
from bench.compare_run import device_list
from bench.compare_setup import Device, Pki, make_pki, nanoiot_env, prepare_nanoiot_store

NATS_URL = "nats://127.0.0.1:4222"
CORES = os.cpu_count() or 1
SETTINGS: dict[str, str] = {}  # NanoIoT settings of every node in this run (--max-inflight)
RESULTS = Path(__file__).parent / "results"
WINDOW = 1_000


@dataclass
class Brokers:
    """The broker processes of one setup: where publishers and subscribers connect, and the
    processes whose CPU counts."""

    name: str
    port: int
    subscriber_port: int
    ca_file: Path
    pids: list[int]
    workers: int = 1

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.all_pids())

    def all_pids(self) -> list[int]:
        """The processes and their children (the workers of ``--workers N``)."""
        found = list(self.pids)
        for pid in self.pids:
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    children = (task / "children").read_text().split()
                    found += [int(child) for child in children]
        return found


@dataclass
class Row:
    scenario: str
    setup: str
    messages: int
    lost: int
    wall_s: float
    cpu_s: float
    latency: dict[str, float] | None = None
    load_cpu_s: float = 0.0  # the load generators' own CPU (aggregate scenarios)
    nats_cpu_s: float = 0.0  # the NATS server's (aggregate scenarios)
    workers: int = 0  # broker worker processes (aggregate scenarios)

    def capacity(self) -> float:
        """msg/s the workers would carry with a core each: workers / broker CPU per msg."""
        return self.workers * self.messages / self.cpu_s if self.cpu_s else 0.0

    def usage_cells(self) -> str:
        """The aggregate scenario's CPU: where the machine's cores went."""
        per = [cpu / self.messages * 1e3 for cpu in (self.cpu_s, self.load_cpu_s, self.nats_cpu_s)]
        busy = (self.cpu_s + self.load_cpu_s + self.nats_cpu_s) / (self.wall_s * CORES)
        return (
            f"| {self.scenario} | {self.setup} | {self.messages / self.wall_s:,.0f} | "
            f"{per[0]:.4f} | {per[1]:.4f} | {per[2]:.4f} | {busy:.0%} | {self.capacity():,.0f} |"
        )

    def cells(self) -> str:
        rate = self.messages / self.wall_s if self.wall_s else 0.0
        per = self.cpu_s / self.messages * 1e3 if self.messages else 0.0
        latency = (
            "" if not self.latency else f"{self.latency['p50']:.2f} / {self.latency['p99']:.2f}"
        )
        return (
            f"| {self.scenario} | {self.setup} | {self.messages:,} | {self.lost} | "
            f"{rate:,.0f} | {per:.3f} | {latency} |"
        )


@contextlib.asynccontextmanager
async def nanoiot_node(
    data_dir: Path, pki: Pki, work: Path, name: str, extra: dict[str, str], *args: str
) -> AsyncIterator[tuple[int, int]]:
    """``nanoiot serve`` with the benchmark's settings plus ``extra``; yields (port, pid)."""
    env = nanoiot_env(data_dir, pki, secrets.token_urlsafe(32)) | SETTINGS | extra
    command = [str(Path(sys.executable).with_name("nanoiot")), "serve", *args]
    log_file = work / f"{name}.log"
    with log_file.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=work, env=env, stdout=asyncio.subprocess.PIPE, stderr=log
        )
        drain = None
        try:
            port, _ = await _ready_port(process, log_file)
            assert process.stdout is not None
            drain = asyncio.create_task(_discard(process.stdout))
            yield port, process.pid
        finally:
            await _stop(process)
            if drain is not None:
                await drain


def cluster_env(cluster: str, node: str) -> dict[str, str]:
    return {
        "NANOIOT_NATS_URL": NATS_URL,
        "NANOIOT_CLUSTER_NAME": cluster,
        "NANOIOT_NODE_NAME": node,
    }


async def pair(
    brokers: Brokers, devices: list[Device], work: Path, qos: int, spec: dict[str, Any]
) -> dict[str, Any]:
    """One load generator: a publisher and a subscriber; its result and the brokers' CPU."""
    full = {
        "mode": "pubsub", "port": brokers.port, "subscriber_port": brokers.subscriber_port,
        "ca": str(brokers.ca_file), "devices": device_list(devices),
        "prefix": f"b{secrets.token_hex(3)}-", "broker_pid": brokers.pids[0], "window": WINDOW,
        "qos": qos, "publishers": 1, "subscribers": 1, "quiet_s": 0.2, **spec,
    }  # fmt: skip
    before = brokers.cpu_seconds()
    (result,) = await run_pubsub([full], work)
    result["all_cpu_s"] = brokers.cpu_seconds() - before
    return result


async def run_pubsub(specs: list[dict[str, Any]], work: Path) -> list[dict[str, Any]]:
    """Load generators started together: once all are connected, told to go at once."""
    workers = await Workers.start(specs, work, "bench.load_worker")
    try:
        await workers.states()
        for worker in workers.workers:
            worker.send({"go": True})
        return await workers.finish()
    finally:
        await workers.kill()


async def measure(
    brokers: Brokers, devices: list[Device], work: Path, args: argparse.Namespace
) -> list[Row]:
    rows = []
    for qos in (0, 1):
        result = await pair(brokers, devices, work, qos, {"count": args.messages})
        rows.append(Row(
            f"1 -> 1 QoS {qos}", brokers.name, result["received"],
            result["sent"] - result["received"], result["wall_s"], result["all_cpu_s"],
        ))  # fmt: skip
        paced = await pair(
            brokers, devices, work, qos, {"rate": args.rate, "seconds": args.seconds}
        )
        rows.append(Row(
            f"1 -> 1 QoS {qos} at {args.rate:,} msg/s", brokers.name, paced["received"],
            paced["sent"] - paced["received"], paced["wall_s"], paced["all_cpu_s"],
            paced["latency_ms"],
        ))  # fmt: skip
        print(f"  {rows[-2].cells()}\n  {rows[-1].cells()}", flush=True)
    return rows


def pair_spec(
    brokers: Brokers, devices: list[Device], qos: int, count: int, index: int
) -> dict[str, Any]:
    """A load generator of the aggregate scenario: its own publisher, subscriber, topic."""
    return {
        "mode": "pubsub", "port": brokers.port, "ca": str(brokers.ca_file),
        "devices": device_list(devices), "prefix": f"a{index}-{secrets.token_hex(3)}-",
        "broker_pid": brokers.pids[0], "window": WINDOW, "qos": qos, "publishers": 1,
        "subscribers": 1, "count": count, "topic": f"bench/pair{index}", "quiet_s": 0.2,
    }  # fmt: skip


async def aggregate(
    brokers: Brokers, devices: list[Device], work: Path, args: argparse.Namespace
) -> list[Row]:
    rows = []
    for qos in (0, 1):
        specs = [pair_spec(brokers, devices, qos, args.messages, i) for i in range(args.pairs)]
        scenario = f"{args.pairs} pairs QoS {qos}"
        rows.append(await _aggregate_row(brokers, specs, work, scenario, brokers.name))
    return rows


async def placed(
    brokers: Brokers, devices: list[Device], work: Path, args: argparse.Namespace
) -> list[Row]:
    """The aggregate on two nodes with each pair placed by hand: every pair's publisher and
    subscriber on one node (half the pairs on each), then every pair split across the two:
    what a second process gives traffic that stays, and traffic that crosses."""
    a, b = brokers.port, brokers.subscriber_port
    placements = {
        "on one node each": [(a, a), (b, b)],
        "split across nodes": [(a, b), (b, a)],
    }
    rows = []
    for qos in (0, 1):
        for name, ports in placements.items():
            specs = []
            for index in range(args.pairs):
                spec = pair_spec(brokers, devices, qos, args.messages, index)
                spec["port"], spec["subscriber_port"] = ports[index % 2]
                specs.append(spec)
            rows.append(await _aggregate_row(
                brokers, specs, work, f"{args.pairs} pairs QoS {qos}",
                f"NanoIoT, two nodes, pairs {name}",
            ))  # fmt: skip
    return rows


async def _aggregate_row(
    brokers: Brokers, specs: list[dict[str, Any]], work: Path, scenario: str, setup: str
) -> Row:
    """Run the load generators together; the row with the CPU of brokers, them and NATS."""
    before, nats_before = brokers.cpu_seconds(), nats_cpu_seconds()
    results = await run_pubsub(specs, work)
    cpu, nats_cpu = brokers.cpu_seconds() - before, nats_cpu_seconds() - nats_before
    row = Row(
        scenario, setup, sum(r["received"] for r in results),
        sum(r["sent"] - r["received"] for r in results), max(r["wall_s"] for r in results),
        cpu, load_cpu_s=sum(r["phase_cpu_s"] for r in results), nats_cpu_s=nats_cpu,
        workers=brokers.workers,
    )  # fmt: skip
    print(f"  {row.cells()}", flush=True)
    return row


def nats_cpu_seconds() -> float:
    """CPU time of the machine's nats-server process (0 if it is not found)."""
    for stat in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if stat.read_text().strip() == "nats-server":
                return process_cpu_seconds(int(stat.parent.name))
    return 0.0


async def run(args: argparse.Namespace, work: Path) -> list[Row]:
    pki, devices = make_pki(work, {"ec": 8})
    data_dir = work / "nanoiot-data"
    await prepare_nanoiot_store(data_dir, 0, devices["ec"])
    ec = devices["ec"]
    rows: list[Row] = []
    if MOSQUITTO.exists():
        async with started(MOSQUITTO_NAME, pki, work) as mosquitto:
            setup = Brokers("Mosquitto", mosquitto.port, mosquitto.port, pki.ca_file,
                            [mosquitto.pid])  # fmt: skip
            rows += await measure(setup, ec, work, args)
    async with nanoiot_node(data_dir, pki, work, "single", {}) as (port, pid):
        rows += await measure(Brokers("NanoIoT, one node", port, port, pki.ca_file, [pid]),
                              ec, work, args)  # fmt: skip
    cluster = f"bench{secrets.token_hex(4)}"
    async with (
        nanoiot_node(data_dir, pki, work, "node-a", cluster_env(cluster, "a")) as (port_a, pid_a),
        nanoiot_node(data_dir, pki, work, "node-b", cluster_env(cluster, "b")) as (port_b, pid_b),
    ):
        two = Brokers("NanoIoT, two nodes, A -> B", port_a, port_b, pki.ca_file, [pid_a, pid_b], 2)
        rows += await measure(two, ec, work, args)
        rows += await placed(two, ec, work, args)
    for workers in (1, 2):
        env = cluster_env(f"bench{secrets.token_hex(4)}", "w")
        async with nanoiot_node(data_dir, pki, work, f"workers{workers}", env,
                                "--workers", str(workers)) as (port, pid):  # fmt: skip
            setup = Brokers(
                f"NanoIoT, {workers} worker(s)", port, port, pki.ca_file, [pid], workers
            )
            rows += await aggregate(setup, ec, work, args)
    await delete_buckets()
    return rows


async def delete_buckets() -> None:
    """The benchmark's key-value buckets (KV_bench*), removed."""
    import nats

    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        for stream in await js.streams_info():
            name = stream.config.name or ""
            if name.startswith("KV_bench"):
                await js.delete_stream(name)
    finally:
        await client.close()


def report(rows: Sequence[Row], args: argparse.Namespace) -> str:
    lines = [
        f"# Cluster scenarios, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "| scenario | setup | messages delivered | lost | msg/s | broker CPU ms/msg "
        "| latency p50 / p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
        *(row.cells() for row in rows),
        "",
        f"`python -m bench.cluster_bench --messages {args.messages} --rate {args.rate} "
        f"--seconds {args.seconds} --pairs {args.pairs}"
        f"{f' --max-inflight {args.max_inflight}' if args.max_inflight else ''}`: "
        "64 B payloads over mTLS (EC P-256), "
        "the raw-MQTT load generator, broker CPU summed over every broker process (both "
        "nodes; the supervisor and its workers). Latency: publish to delivery, paced.",
        "",
        *usage(rows),
        *machine_lines("NATS 2.9 with JetStream on 127.0.0.1:4222, nats-py"),
        "",
    ]
    return "\n".join(lines)


def usage(rows: Sequence[Row]) -> list[str]:
    """Where the cores went in the aggregate scenarios, and what the workers would carry
    with a core each; then 2 workers against 1, measured and by capacity."""
    aggregate = [row for row in rows if row.workers]
    if not aggregate:
        return []
    lines = [
        f'Aggregate scenarios, CPU per delivered message ({CORES} cores; "busy": broker, load '
        "generators and NATS together, of all cores; capacity: broker processes / broker CPU "
        "per message, the rate with a core per worker or node and nothing else on it):",
        "",
        "| scenario | setup | msg/s | broker CPU ms/msg | load generators CPU ms/msg "
        "| NATS CPU ms/msg | busy | capacity msg/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *(row.usage_cells() for row in aggregate),
        "",
    ]
    by = {(row.scenario, row.workers): row for row in aggregate if "worker" in row.setup}
    for scenario in dict.fromkeys(row.scenario for row in aggregate):
        one, two = by.get((scenario, 1)), by.get((scenario, 2))
        if one is None or two is None:
            continue
        measured = (two.messages / two.wall_s) / (one.messages / one.wall_s)
        lines.append(
            f"- {scenario}, 2 workers / 1 worker: {measured:.2f}x measured, "
            f"{two.capacity() / one.capacity():.2f}x by capacity"
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument(
        "--max-inflight", type=int, default=None,
        help="max_inflight_messages of every NanoIoT node (default: the setting's, 20)",
    )  # fmt: skip
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    if args.max_inflight:
        SETTINGS["NANOIOT_MAX_INFLIGHT_MESSAGES"] = str(args.max_inflight)
    with tempfile.TemporaryDirectory(prefix="nanoiot-cluster-bench-") as directory:
        os.chmod(directory, 0o700)
        rows = asyncio.run(run(args, Path(directory)))
    text = report(rows, args)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        suffix = f"-inflight{args.max_inflight}" if args.max_inflight else ""
        out = RESULTS / f"cluster-{datetime.now(UTC):%Y-%m-%d}{suffix}.md"
        out.write_text(text)
        print(f"written to {out}")


if __name__ == "__main__":
    main()
