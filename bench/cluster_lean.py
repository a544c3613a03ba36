"""The cluster benchmark's throughput scenarios, driven by the lean load generator
(``bench.lean_worker``) and checked from the brokers' side.

Each run: the generator connects (and places) its clients and says so; the brokers' CPU is
read once they are idle, and their message counters; "go"; once the generator says it is
done, its clients still connected, the brokers' CPU once idle again (what they do for the
clients' disconnects is not the messages' work: the fleet's 1,024 devices closing came to
about a tenth of its broker CPU, partly on the store's thread, and most of its NATS CPU);
the generator's result; the brokers' counters once they count every message the generator
sent: a NanoIoT broker must have received exactly the PUBLISH packets the generator wrote
and sent exactly those it received (``counts agree``), and in a cluster the
members' own figures say how many messages crossed from one member to another (``crossed``:
messages forwarded / messages received, summed over the members). A cluster's figures come
with each member's heartbeat (``cluster_heartbeat_interval``), so the second reading waits
for them.
"""

import asyncio
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench._report import CLK_TCK, process_cpu_seconds
from bench.compare_load import Workers

NATS_URL = "nats://127.0.0.1:4222"
CORES = len(os.sched_getaffinity(0))
FIGURES_WITHIN_S = 15.0  # a few heartbeats of every member
HEARTBEAT_S = 2.0  # cluster_heartbeat_interval, as the benchmark leaves it


@dataclass
class Brokers:
    """The broker processes of one setup: where publishers and subscribers connect, the
    processes whose CPU counts, and (NanoIoT) the admin URL whose ``/metrics`` counts."""

    name: str
    port: int
    subscriber_port: int
    ca_file: Path
    pids: list[int]
    workers: int = 1
    http_url: str = ""
    token: str = ""
    cluster: str = ""  # the NATS cluster name, for asking where clients are
    counted: "Counts | None" = None  # the counters as the last lean run left them

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.all_pids())

    def all_pids(self) -> list[int]:
        """The processes and their children (the workers of ``--workers N``)."""
        found = list(self.pids)
        for pid in self.pids:
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    found += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
        return found

    async def settled_cpu(self, quiet_s: float = 0.3, limit_s: float = 5.0) -> float:
        """CPU seconds once idle (at most ``limit_s`` later): the work of connects and of
        the messages still on their way belongs to what came before."""
        last = self.cpu_seconds()
        for _ in range(int(limit_s / quiet_s)):
            await asyncio.sleep(quiet_s)
            now = self.cpu_seconds()
            if now - last <= 1.001 / CLK_TCK:
                return now
            last = now
        return last


@dataclass
class Counts:
    """Messages received from clients, sent to clients, forwarded to other members."""

    received: int = 0
    sent: int = 0
    forwarded: int = 0

    def __sub__(self, other: "Counts") -> "Counts":
        return Counts(
            self.received - other.received, self.sent - other.sent,
            self.forwarded - other.forwarded,
        )  # fmt: skip


def _values(text: str, name: str) -> list[float]:
    return [float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)]


async def broker_counts(brokers: Brokers) -> Counts | None:
    """The brokers' own counters: every member's figures in a cluster, the node's own
    otherwise; None without an admin URL (Mosquitto)."""
    if not brokers.http_url:
        return None
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(
            f"{brokers.http_url}/metrics", headers={"Authorization": f"Bearer {brokers.token}"}
        )
    answer.raise_for_status()
    text = answer.text
    member = "nanoiot_cluster_member_messages_"
    if brokers.cluster:
        received, sent, forwarded = (
            _values(text, f"{member}{kind}_total") for kind in ("received", "sent", "forwarded")
        )
        return Counts(int(sum(received)), int(sum(sent)), int(sum(forwarded)))
    received, sent = (_values(text, f"nanoiot_messages_{k}_total") for k in ("received", "sent"))
    return Counts(int(sum(received)), int(sum(sent)))


async def counts_before(brokers: Brokers) -> "Counts | None":
    """The counters before a run: a cluster's once every member's heartbeat has caught up
    with what came before (unchanged for a heartbeat interval, or as the last run left them)."""
    now = await broker_counts(brokers)
    if now is None or not brokers.cluster or now == brokers.counted:
        return now
    loop = asyncio.get_running_loop()
    deadline, still_since = loop.time() + FIGURES_WITHIN_S, loop.time()
    while loop.time() < deadline and loop.time() - still_since < HEARTBEAT_S + 0.5:
        await asyncio.sleep(0.25)  # another process's heartbeat: nothing here to wait on
        latest = await broker_counts(brokers)
        if latest != now:
            now, still_since = latest, loop.time()
    return now


async def counts_after(brokers: Brokers, before: Counts, published: int, delivered: int) -> Counts:
    """The counters since ``before`` once they count the run (or ``FIGURES_WITHIN_S``)."""
    deadline = asyncio.get_running_loop().time() + FIGURES_WITHIN_S
    while True:
        now = await broker_counts(brokers)
        assert now is not None
        change = now - before
        done = change.received >= published and change.sent >= delivered
        if done or asyncio.get_running_loop().time() > deadline:
            return change
        await asyncio.sleep(0.25)  # another process's heartbeat: nothing here to wait on


@dataclass
class LeanRow:
    scenario: str
    setup: str
    shape: str
    result: dict[str, Any]
    cpu_s: float
    nats_cpu_s: float
    counts: Counts | None
    workers: int
    notes: list[str] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return int(self.result["received"])

    @property
    def rate(self) -> float:
        return self.delivered / self.result["wall_s"] if self.result["wall_s"] else 0.0

    def per_message_ms(self, cpu: float) -> float:
        return cpu / self.delivered * 1e3 if self.delivered else 0.0

    def capacity(self) -> float:
        """msg/s the broker processes would carry with a core each."""
        return self.workers * self.delivered / self.cpu_s if self.cpu_s else 0.0

    def crossed(self) -> str:
        if self.counts is None or not self.counts.received or self.workers < 2:
            return ""
        return f"{self.counts.forwarded / self.counts.received:.0%}"

    def agree(self) -> str:
        """Whether the brokers counted what the generator claims (published, delivered)."""
        if self.counts is None:
            return "not read"
        sent, got = int(self.result["sent"]), self.delivered
        if (self.counts.received, self.counts.sent) == (sent, got):
            return "yes"
        return f"no: {self.counts.received:,} in, {self.counts.sent:,} out"

    def checked(self) -> str:
        """What the generator's own checks found: "ok", or what differed."""
        result, found = self.result, []
        if self.result["sent"] != self.delivered:
            found.append(f"{result['sent'] - self.delivered:,} lost")
        bad = [n for n in result.get("first_bad", []) if n >= 0]
        if bad:
            found.append(f"differs from message {min(bad):,}")
        if result.get("checksum_ok") is False or result.get("bad_headers"):
            found.append("sum or headers differ")
        if result.get("bad_pubacks"):
            found.append("bad PUBACKs")
        return ", ".join(found) or "ok"

    def cells(self) -> str:
        latency = self.result.get("latency_ms") or {}
        busy = (self.cpu_s + self.result["phase_cpu_s"] + self.nats_cpu_s) / (
            self.result["wall_s"] * CORES
        )
        return (
            f"| {self.scenario} | {self.setup} | {self.shape} | {self.delivered:,} | "
            f"{self.checked()} | {self.rate:,.0f} | {self.per_message_ms(self.cpu_s):.4f} | "
            f"{self.per_message_ms(self.result['phase_cpu_s']):.4f} | "
            f"{self.per_message_ms(self.nats_cpu_s):.4f} | {busy:.0%} | {self.capacity():,.0f} "
            f"| {self.crossed()} | {self.agree()} | "
            f"{latency.get('p50', 0):.1f} / {latency.get('p99', 0):.1f} |"
        )


def nats_cpu_seconds() -> float:
    """CPU time of the machine's nats-server process (0 if it is not found)."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "nats-server":
                return process_cpu_seconds(int(comm.parent.name))
        except OSError:
            continue
    return 0.0


async def lean_row(
    brokers: Brokers, spec: dict[str, Any], work: Path, scenario: str, shape: str
) -> LeanRow:
    """One run of the lean generator against ``brokers``."""
    workers = await Workers.start([spec], work, "bench.lean_worker")
    try:
        (ready,) = await workers.states()
        before = await counts_before(brokers)  # first: a scrape costs the broker CPU
        cpu, nats = await brokers.settled_cpu(), nats_cpu_seconds()
        workers.workers[0].send({"go": True})
        await workers.states()  # done, its clients still connected
        cpu, nats = await brokers.settled_cpu() - cpu, nats_cpu_seconds() - nats
        (result,) = await workers.finish()
    finally:
        await workers.kill()
    counts = None
    if before is not None:
        counts = await counts_after(brokers, before, result["sent"], result["received"])
        brokers.counted = Counts(
            before.received + counts.received, before.sent + counts.sent,
            before.forwarded + counts.forwarded,
        )  # fmt: skip
    row = LeanRow(scenario, brokers.name, shape, result, cpu, nats, counts, brokers.workers)
    if ready.get("tries", 0) > ready.get("ready", 0):
        row.notes.append(f"{ready['tries'] - ready['ready']} reconnects to place clients")
    if taken := shares(result):
        row.notes.append(f"messages written by the clients on each member: {taken}")
    print(f"  {row.cells()}", flush=True)
    return row


def shares(result: dict[str, Any]) -> str:
    """How the run's messages were shared between the members the publishers were on (the
    generator gives the next slice to whichever pair or lane has room): "" for one member."""
    placement = result.get("placement")
    if "per_pair" in result and placement:
        members = [at for at, _ in placement]
        written = result["per_pair"]
    elif "per_lane" in result and placement:
        members = [*placement["consumers"], "not placed"]
        written = result["per_lane"]
    else:
        return ""
    by_member: dict[str, int] = {}
    for member, count in zip(members, written, strict=True):
        by_member[member] = by_member.get(member, 0) + count
    total = sum(by_member.values())
    if len([m for m, n in by_member.items() if n]) < 2:
        return ""
    return ", ".join(f"{m} {n / total:.0%}" for m, n in sorted(by_member.items()) if n)


# The workers' shapes (``bench.cluster_shapes.workers``): the pairs where the kernel's hash
# puts them, the pairs kept on one worker each, the fleet on a shared subscription.
WORKER_SHAPES: tuple[str, ...] = ("hash", "kept", "fleet")


@dataclass
class Load:
    """What the lean scenarios are given: devices as [name, pem, id], sizes, and which QoS
    levels and workers' shapes to run (all by default)."""

    devices: list[list[str]]
    fleet: list[list[str]]
    messages: int  # per pair
    fleet_messages: int  # per fleet device
    pairs: int
    one_pair_messages: int = 100_000  # of the 1 -> 1 rows
    # At most ``window`` messages in flight per pair: below a session's queue bound
    # (max_queued_messages, 1,000) at QoS 1, so that nothing is dropped for being late.
    slice: int = 100
    window: int = 1000
    qos0_window: int = 0  # at QoS 0, when set (no queue bound: max_outgoing_buffer, 1 MB)
    fleet_slice: int = 64
    fleet_window: int = 960  # per member of the shared subscription
    qos: tuple[int, ...] = (0, 1)
    shapes: tuple[str, ...] = WORKER_SHAPES


def base_spec(brokers: Brokers, load: Load, qos: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ca": str(brokers.ca_file), "qos": qos, "prefix": f"l{secrets.token_hex(3)}-",
        "slice": load.slice, "window": load.qos0_window if qos == 0 and load.qos0_window
        else load.window, "count": load.messages,
    }  # fmt: skip
    if brokers.cluster:
        spec |= {"nats_url": NATS_URL, "cluster": brokers.cluster, "members": brokers.workers}
    return spec


def pairs_spec(
    brokers: Brokers, load: Load, qos: int, ports: Sequence[tuple[int, int]], place: str = ""
) -> dict[str, Any]:
    """``len(ports)`` pairs, pair i with its publisher and subscriber on ``ports[i]``."""
    devices = load.devices
    pairs = [
        {
            "publisher": devices[(2 * i) % len(devices)],
            "subscriber": devices[(2 * i + 1) % len(devices)],
            "port": port,
            "subscriber_port": subscriber_port,
            "topic": f"bench/pair{i}",
        }
        for i, (port, subscriber_port) in enumerate(ports)
    ]
    return base_spec(brokers, load, qos) | {"mode": "pairs", "pairs": pairs, "place": place}


def fleet_spec(brokers: Brokers, load: Load, qos: int, consumers: int) -> dict[str, Any]:
    return base_spec(brokers, load, qos) | {
        "mode": "fleet", "port": brokers.port, "fleet_devices": load.fleet,
        "consumer_devices": load.devices, "consumers": consumers, "place": "kept",
        "count": load.fleet_messages, "slice": load.fleet_slice, "window": load.fleet_window,
    }  # fmt: skip
