"""What a cluster costs and buys on this machine, in one run, beside a single node and
Mosquitto: ``python -m bench.cluster_bench``.

Scenarios, over mTLS with 64 B payloads:

- 1 -> 1 at QoS 0 and QoS 1, as fast as delivery allows, with the lean load generator
  (``bench.lean_worker``: streams encoded beforehand, checked a chunk at a time, so its own
  CPU per message is a small fraction of the broker's): messages/s and broker CPU per
  message (summed over every broker process), on Mosquitto, one NanoIoT node, and two
  NanoIoT nodes with the publisher on one and the subscriber on the other (every message
  crosses NATS);
- the same pairs paced at ``--rate`` messages/s for ``--seconds`` with the raw-MQTT load
  generator (``bench.load_worker``): latency p50 / p99;
- aggregate throughput, lean, by shape (``bench.cluster_shapes``): ``--pairs`` pairs on two
  nodes, each pair kept on one node or split across them; ``nanoiot serve --workers 1`` and
  ``--workers 2`` with the pairs where the kernel's hash puts them, kept on one worker each,
  and a fleet of ``--fleet`` devices publishing to a shared subscription with a member on
  every worker; for each, the fraction of messages that crossed between members, from the
  brokers' own figures.

The nodes share one SQLite store (one host) and the machine's NATS (127.0.0.1:4222) under a
fresh cluster name; the result goes to ``bench/results/cluster-<date>.md``. Stopped by SIGTERM
or SIGINT, or failing, it stops what it started (brokers, load generators) before it exits.

    .venv/bin/python -m bench.cluster_bench                     # the recorded run
    .venv/bin/python -m bench.cluster_bench --messages 5000 --seconds 3   # a quick look
    .venv/bin/python -m bench.cluster_bench --only workers --qos 1 --shapes kept --no-save

``--only`` runs some of the setups (``mosquitto``, ``node``, ``nodes``, ``workers``), ``--qos``
some of the QoS levels, ``--shapes`` some of the workers' shapes (``hash``, ``kept``,
``fleet``): a targeted look, such as one worker's pairs against two workers' pairs kept at
QoS 1 above; the recorded run takes them all.
"""

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench import cluster_shapes
from bench._report import machine_lines
from bench.cluster_lean import Brokers, LeanRow, Load
from bench.cluster_options import SLICE, parser, selection
from bench.compare_brokers import MOSQUITTO, MOSQUITTO_NAME, _discard, _ready_port, _stop, started
from bench.compare_load import Workers
from bench.compare_run import device_list
from bench.compare_setup import Device, Pki, make_pki, nanoiot_env, prepare_nanoiot_store
from nanoiot.settings import Settings
from storage.sql import SqlCredentialStore

NATS_URL = "nats://127.0.0.1:4222"
CORES = os.cpu_count() or 1
SETTINGS: dict[str, str] = {}  # NanoIoT settings of every node in this run (--max-inflight)
RESULTS = Path(__file__).parent / "results"
WINDOW = 1_000  # the paced generator's
PAIR_DEVICES = 8  # certificates the pairs take in turn
T = TypeVar("T")


class Stopped(Exception):
    """The run was stopped by a signal (its number)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


async def stopped_by_signals(work: Coroutine[Any, Any, T]) -> T:
    """``work``, cancelled by SIGTERM or SIGINT (``Stopped``): the ``async with`` that started
    each broker and load generator then stops it, as on an error. Python's default for
    SIGTERM ends the process at once, which left the nodes running, holding their ports and
    their NATS subscriptions, and the next run's cluster sharing NATS with them."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def stop(signum: int) -> None:
        if not received:  # another one would cut the stopping short
            received.append(signum)
            task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await work
    except asyncio.CancelledError:
        if not received:
            raise
        raise Stopped(received[0]) from None
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


@dataclass
class Row:
    scenario: str
    setup: str
    messages: int
    lost: int
    wall_s: float
    cpu_s: float
    latency: dict[str, float] | None = None

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


@dataclass
class Node:
    port: int
    pid: int
    http_url: str
    token: str


@contextlib.asynccontextmanager
async def nanoiot_node(
    data_dir: Path, pki: Pki, work: Path, name: str, extra: dict[str, str], *args: str
) -> AsyncIterator[Node]:
    """``nanoiot serve`` with the benchmark's settings plus ``extra``."""
    token = secrets.token_urlsafe(32)
    env = nanoiot_env(data_dir, pki, token) | SETTINGS | extra
    command = [str(Path(sys.executable).with_name("nanoiot")), "serve", *args]
    log_file = work / f"{name}.log"
    with log_file.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=work, env=env, stdout=asyncio.subprocess.PIPE, stderr=log
        )
        drain = None
        try:
            port, http_url = await _ready_port(process, log_file)
            assert process.stdout is not None
            drain = asyncio.create_task(_discard(process.stdout))
            yield Node(port, process.pid, http_url, token)
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
    """One paced load generator: a publisher and a subscriber; its result and the brokers'
    CPU."""
    full = {
        "mode": "pubsub", "port": brokers.port, "subscriber_port": brokers.subscriber_port,
        "ca": str(brokers.ca_file), "devices": device_list(devices),
        "prefix": f"b{secrets.token_hex(3)}-", "broker_pid": brokers.pids[0], "window": WINDOW,
        "qos": qos, "publishers": 1, "subscribers": 1, "quiet_s": 0.2, **spec,
    }  # fmt: skip
    before = brokers.cpu_seconds()
    workers = await Workers.start([full], work, "bench.load_worker")
    try:
        await workers.states()
        workers.workers[0].send({"go": True})
        (result,) = await workers.finish()
    finally:
        await workers.kill()
    result["all_cpu_s"] = brokers.cpu_seconds() - before
    return result


async def measure(
    brokers: Brokers, devices: list[Device], load: Load, work: Path, args: argparse.Namespace
) -> tuple[list[Row], list[LeanRow]]:
    """1 -> 1 as fast as it goes (lean), then paced (latency), at QoS 0 and 1."""
    rows = []
    lean = await cluster_shapes.one_to_one(brokers, load, work)
    for qos in load.qos:
        paced = await pair(
            brokers, devices, work, qos, {"rate": args.rate, "seconds": args.seconds}
        )
        rows.append(Row(
            f"1 -> 1 QoS {qos} at {args.rate:,} msg/s", brokers.name, paced["received"],
            paced["sent"] - paced["received"], paced["wall_s"], paced["all_cpu_s"],
            paced["latency_ms"],
        ))  # fmt: skip
        print(f"  {rows[-1].cells()}", flush=True)
    return rows, lean


async def device_ids(data_dir: Path, devices: list[Device]) -> list[list[str]]:
    """[name, pem file, device id] of each of ``devices``, as the store has them."""
    url = Settings(data_dir=data_dir).effective_database_url
    store = await SqlCredentialStore.open(url, data_dir=data_dir)
    try:
        found = [await store.get_device_by_name(d.name) for d in devices]
    finally:
        await store.close()
    return [[d.name, str(d.pem_file), str(f.id)] for d, f in zip(devices, found, strict=True)]


async def run(args: argparse.Namespace, work: Path) -> tuple[list[Row], list[LeanRow], Load]:
    only, shapes = set(args.only), tuple(args.shapes)
    fleet_size = args.fleet if "workers" in only and "fleet" in shapes else 0
    pki, made = make_pki(work, {"ec": PAIR_DEVICES + fleet_size})
    ec, fleet = made["ec"][:PAIR_DEVICES], made["ec"][PAIR_DEVICES:]
    data_dir = work / "nanoiot-data"
    await prepare_nanoiot_store(data_dir, 0, made["ec"])
    load = Load(
        await device_ids(data_dir, ec), await device_ids(data_dir, fleet),
        args.messages, args.fleet_messages, args.pairs,
        one_pair_messages=args.one_pair_messages, slice=args.slice,
        qos0_window=args.qos0_window, qos=tuple(args.qos), shapes=shapes,
    )  # fmt: skip
    rows: list[Row] = []
    lean: list[LeanRow] = []

    async def both(setup: Brokers) -> None:
        paced, fast = await measure(setup, ec, load, work, args)
        rows.extend(paced)
        lean.extend(fast)

    if "mosquitto" in only and MOSQUITTO.exists():
        async with started(MOSQUITTO_NAME, pki, work) as mosquitto:
            await both(Brokers("Mosquitto", mosquitto.port, mosquitto.port, pki.ca_file,
                               [mosquitto.pid]))  # fmt: skip
    if "node" in only:
        async with nanoiot_node(data_dir, pki, work, "single", {}) as one:
            await both(Brokers("NanoIoT, one node", one.port, one.port, pki.ca_file, [one.pid],
                               http_url=one.http_url, token=one.token))  # fmt: skip
    if "nodes" in only:
        lean.extend(await two_nodes(data_dir, pki, work, load, both))
    if "workers" in only:
        for workers in (1, 2):
            lean.extend(await worker_rows(data_dir, pki, work, load, workers))
    await delete_buckets()
    return rows, lean, load


async def two_nodes(
    data_dir: Path, pki: Pki, work: Path, load: Load, both: Callable[[Brokers], Awaitable[None]]
) -> list[LeanRow]:
    """Two single-process nodes of one cluster: 1 -> 1 across them, then the pairs' shapes."""
    cluster = f"bench{secrets.token_hex(4)}"
    async with (
        nanoiot_node(data_dir, pki, work, "node-a", cluster_env(cluster, "a")) as a,
        nanoiot_node(data_dir, pki, work, "node-b", cluster_env(cluster, "b")) as b,
    ):
        two = Brokers("NanoIoT, two nodes, A -> B", a.port, b.port, pki.ca_file,
                      [a.pid, b.pid], 2, a.http_url, a.token, cluster)  # fmt: skip
        await both(two)
        two.name = "NanoIoT, two nodes"
        return await cluster_shapes.two_nodes(two, load, work)


async def worker_rows(
    data_dir: Path, pki: Pki, work: Path, load: Load, workers: int
) -> list[LeanRow]:
    """``nanoiot serve --workers N``, its own cluster: the workers' shapes."""
    env = cluster_env(f"bench{secrets.token_hex(4)}", "w")
    args_ = ("--workers", str(workers))
    async with nanoiot_node(data_dir, pki, work, f"workers{workers}", env, *args_) as node:
        setup = Brokers(
            f"NanoIoT, {workers} worker(s)", node.port, node.port, pki.ca_file, [node.pid],
            workers, node.http_url, node.token, env["NANOIOT_CLUSTER_NAME"],
        )  # fmt: skip
        return await cluster_shapes.workers(setup, load, work)


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


def report(rows: Sequence[Row], lean: Sequence[LeanRow], load: Load,
           args: argparse.Namespace) -> str:  # fmt: skip
    paced = [
        "Paced, the raw-MQTT load generator (publish to delivery, send time in the payload):",
        "",
        "| scenario | setup | messages delivered | lost | msg/s | broker CPU ms/msg "
        "| latency p50 / p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
        *(row.cells() for row in rows),
        "",
    ]
    lines = [
        f"# Cluster scenarios, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        *cluster_shapes.report(lean, load),
        *(paced if rows else []),
        f"`python -m bench.cluster_bench --messages {args.messages} --rate {args.rate} "
        f"--seconds {args.seconds} --pairs {args.pairs} "
        f"--one-pair-messages {args.one_pair_messages} --fleet {args.fleet} "
        f"--fleet-messages {args.fleet_messages}"
        f"{f' --max-inflight {args.max_inflight}' if args.max_inflight else ''}"
        f"{f' --slice {args.slice}' if args.slice != SLICE else ''}"
        f"{f' --qos0-window {args.qos0_window}' if args.qos0_window else ''}"
        f"{selection(args)}`: "
        "64 B payloads over mTLS (EC P-256), broker CPU summed over every broker process "
        "(both nodes; the supervisor and its workers).",
        "",
        *machine_lines("NATS 2.9 with JetStream on 127.0.0.1:4222, nats-py"),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    args = parser(__doc__.split("\n\n")[0]).parse_args()
    if args.max_inflight:
        SETTINGS["NANOIOT_MAX_INFLIGHT_MESSAGES"] = str(args.max_inflight)
    try:
        with tempfile.TemporaryDirectory(prefix="nanoiot-cluster-bench-") as directory:
            os.chmod(directory, 0o700)
            rows, lean, load = asyncio.run(stopped_by_signals(run(args, Path(directory))))
    except Stopped as stopped:
        print(f"stopped by {signal.Signals(stopped.signum).name}", file=sys.stderr)
        sys.exit(128 + stopped.signum)
    text = report(rows, lean, load, args)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        suffix = f"-inflight{args.max_inflight}" if args.max_inflight else ""
        suffix += f"-{args.suffix}" if args.suffix else ""
        suffix += "-partial" if selection(args) else ""  # never in place of a whole run's
        out = RESULTS / f"cluster-{datetime.now(UTC):%Y-%m-%d}{suffix}.md"
        out.write_text(text)
        print(f"written to {out}")


if __name__ == "__main__":
    main()
