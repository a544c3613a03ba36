"""S1 of the side-by-side benchmark: connect cost, measured in interleaved rounds.

One S1 figure is a broker's CPU per connect, and on a shared 2-core machine that moves by a
third between runs with whatever else runs. So every broker is measured in the same rounds:
round 1 is NanoIoT EC, NanoIoT RSA, Mosquitto EC, ..., round 2 runs the brokers in reverse
order (an ABBA pattern, so a steady drift of the machine's load hits each broker alike), and
so on. The report gives each broker's median CPU per connect over the rounds with its spread
(min-max), and for NanoIoT the median of the per-round ratios to the other brokers: both
halves of such a ratio were measured within seconds of each other.
"""

import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.compare_brokers import NANOIOT, BrokerProcess
from bench.compare_report import Row

KINDS = ("ec", "rsa")
Measure = Callable[[BrokerProcess, list[dict[str, Any]]], Awaitable[tuple[float, list[Any]]]]


@dataclass
class ConnectTally:
    """One broker and key kind over all rounds."""

    cpu_s: float = 0.0
    wall_s: float = 0.0
    done: int = 0
    failed: int = 0
    load_cpu_s: float = 0.0
    error: str = ""
    rounds_ms: list[float] = field(default_factory=list)  # broker CPU ms per connect, per round

    def add(self, cpu_s: float, results: Sequence[dict[str, Any]]) -> None:
        done = sum(r["connects"] for r in results)
        failed = sum(r["failures"] for r in results)
        self.cpu_s += cpu_s
        self.wall_s += max(r["wall_s"] for r in results)
        self.done += done
        self.failed += failed
        self.load_cpu_s += sum(r["cpu_s"] for r in results)
        self.error = self.error or next((r["first_error"] for r in results if r["failures"]), "")
        if done > failed:
            self.rounds_ms.append(1000 * cpu_s / (done - failed))


def round_order(brokers: Sequence[BrokerProcess], round_index: int) -> list[BrokerProcess]:
    """ABBA: even rounds in the given order, odd rounds reversed."""
    return list(brokers) if round_index % 2 == 0 else list(reversed(brokers))


def spread(values: Sequence[float]) -> str:
    """'median of N rounds, min-max' for a report note."""
    return (
        f"median of {len(values)} rounds, {min(values):.3f}-{max(values):.3f} ms" if values else ""
    )


def paired_ratios(ours: Sequence[float], theirs: Sequence[float]) -> list[float]:
    """Round-by-round ratios of two brokers' CPU per connect (rounds in the same order)."""
    return [a / b for a, b in zip(ours, theirs, strict=False) if b > 0]


def paired_note(name: str, ratios: Sequence[float]) -> str:
    if not ratios:
        return ""
    median = statistics.median(ratios)
    return f"per-round ratio to {name} {median:.2f}× ({min(ratios):.2f}-{max(ratios):.2f})"


async def interleaved_connects(
    brokers: Sequence[BrokerProcess],
    specs: Callable[[BrokerProcess, str], list[dict[str, Any]]],
    measure: Measure,
    rounds: int,
) -> list[Row]:
    """The S1 rows of every broker: ``rounds`` interleaved rounds, EC and RSA each time
    (alternating which goes first), ``specs(broker, kind)`` being one round's workers."""
    tallies = {(b.name, kind): ConnectTally() for b in brokers for kind in KINDS}
    for index in range(rounds):
        kinds = KINDS if index % 2 == 0 else tuple(reversed(KINDS))
        for broker in round_order(brokers, index):
            for kind in kinds:
                cpu, results = await measure(broker, specs(broker, kind))
                tallies[(broker.name, kind)].add(cpu, results)
    return [_row(broker, kind, tallies) for broker in brokers for kind in KINDS]


def _row(broker: BrokerProcess, kind: str, tallies: dict[tuple[str, str], ConnectTally]) -> Row:
    tally = tallies[(broker.name, kind)]
    notes = [tally.error, spread(tally.rounds_ms)]
    if broker.name == NANOIOT:
        for (name, other_kind), other in tallies.items():
            if name != NANOIOT and other_kind == kind:
                notes.append(paired_note(name, paired_ratios(tally.rounds_ms, other.rounds_ms)))
    return Row(
        f"S1 connect, {kind.upper()} device certs", broker.name, tally.done - tally.failed,
        "connects", tally.cpu_s, tally.wall_s, tally.load_cpu_s, failed=tally.failed,
        note="; ".join(note for note in notes if note), rounds_ms=tuple(tally.rounds_ms),
    )  # fmt: skip
