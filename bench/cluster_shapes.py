"""The throughput scenarios of ``bench.cluster_bench``, by shape, with the lean generator:

- 1 -> 1: one pair, as fast as the window allows;
- two nodes, pairs placed by their ports: each pair on one node (half on each), or each
  pair split across the two (every message crosses);
- workers (``nanoiot serve --workers N``), three shapes: the pairs where the kernel's
  ``SO_REUSEPORT`` hash puts them ("kernel's hash"; some cross, how many changes from run to
  run); the pairs kept on one worker ("kept": the publisher placed on a worker, half the
  pairs on each, then its subscriber reconnected until the broker says it is on the same
  one); and a fleet: many devices, each its own client id and certificate, publishing to
  ``bench/telemetry/<n>`` wherever the kernel puts them, and one member of a shared
  subscription per worker, placed one on each (a shared subscription prefers a member on
  the worker the message came in on, so these need not cross).

Each runs the QoS levels of ``Load.qos``; the workers run the shapes of ``Load.shapes`` (one
worker runs its pairs when either pairs shape is chosen: both compare with them).
"""

from collections.abc import Sequence
from pathlib import Path

from bench.cluster_lean import CORES, Brokers, LeanRow, Load, fleet_spec, lean_row, pairs_spec


async def one_to_one(brokers: Brokers, load: Load, work: Path) -> list[LeanRow]:
    rows = []
    for qos in load.qos:
        spec = pairs_spec(brokers, load, qos, [(brokers.port, brokers.subscriber_port)])
        spec["count"] = load.one_pair_messages
        rows.append(await lean_row(brokers, spec, work, f"1 -> 1 QoS {qos}", "one pair"))
    return rows


async def two_nodes(brokers: Brokers, load: Load, work: Path) -> list[LeanRow]:
    a, b = brokers.port, brokers.subscriber_port
    placements = {"pairs on one node each": [(a, a), (b, b)], "pairs split": [(a, b), (b, a)]}
    rows = []
    for qos in load.qos:
        for shape, ports in placements.items():
            spec = pairs_spec(brokers, load, qos, [ports[i % 2] for i in range(load.pairs)])
            rows.append(await lean_row(brokers, spec, work, f"QoS {qos}", shape))
    return rows


async def workers(brokers: Brokers, load: Load, work: Path) -> list[LeanRow]:
    rows = []
    ports = [(brokers.port, brokers.port)] * load.pairs
    one, shapes = brokers.workers == 1, set(load.shapes)
    for qos in load.qos:
        if "hash" in shapes or (one and "kept" in shapes):
            kernel = "pairs" if one else "pairs, kernel's hash"
            rows.append(await lean_row(brokers, pairs_spec(brokers, load, qos, ports), work,
                                       f"QoS {qos}", kernel))  # fmt: skip
        if "kept" in shapes and not one:
            spec = pairs_spec(brokers, load, qos, ports, place="kept")
            rows.append(await lean_row(brokers, spec, work, f"QoS {qos}", "pairs kept"))
        if "fleet" in shapes:
            spec = fleet_spec(brokers, load, qos, consumers=brokers.workers)
            shape = f"fleet, {brokers.workers} consumer(s)"
            rows.append(await lean_row(brokers, spec, work, f"QoS {qos}", shape))
    return rows


def report(rows: Sequence[LeanRow], load: Load) -> list[str]:
    lines = [
        f"Throughput, the lean generator ({CORES} cores; one pair of "
        f"{load.one_pair_messages:,} messages, {load.pairs} pairs of {load.messages:,} each, "
        f"or {len(load.fleet):,} devices of {load.fleet_messages:,}; per message delivered: "
        "broker CPU summed over the broker processes, the generator's own CPU over the timed "
        "phase, NATS's; busy: all three, of all cores; capacity: broker processes / broker "
        "CPU per message; crossed: messages forwarded to another member / messages received, "
        "from the members' figures; counts agree: the brokers received and sent exactly what "
        "the generator wrote and got; latency: from writing a slice to the delivery of its "
        "last message):",
        "",
        "| scenario | setup | shape | delivered | checks | msg/s | broker CPU ms/msg "
        "| generator CPU ms/msg | NATS CPU ms/msg | busy | capacity msg/s | crossed "
        "| counts agree | slice latency p50 / p99 ms |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        *(row.cells() for row in rows),
        "",
    ]
    notes = [f"- {row.scenario}, {row.setup}, {row.shape}: {n}" for row in rows for n in row.notes]
    return [*lines, *notes, *([""] if notes else []), *ratios(rows)]


def _base(shape: str) -> str:
    """The one-worker shape a two-worker shape compares with: its pairs, however placed."""
    first = shape.split(",")[0]
    return "pairs" if first.startswith("pairs") else first


def ratios(rows: Sequence[LeanRow]) -> list[str]:
    """Two workers against one, per QoS and shape: by wall clock and by capacity."""
    one = {(r.scenario, _base(r.shape)): r for r in rows if r.workers == 1 and "worker" in r.setup}
    lines = []
    for row in rows:
        base = one.get((row.scenario, _base(row.shape)))
        if row.workers != 2 or "worker" not in row.setup or base is None:
            continue
        lines.append(
            f"- {row.scenario}, {row.shape}: 2 workers / 1 worker {row.rate / base.rate:.2f}x "
            f"by wall clock, {row.capacity() / base.capacity():.2f}x by capacity"
            + (f", {row.crossed()} crossed" if row.crossed() else "")
        )
    return [*lines, ""] if lines else []
