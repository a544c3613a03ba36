"""The side-by-side benchmark's markdown: one table, ratios to Mosquitto and amqtt, the goals,
the machine.

Every ratio divides two figures of the same run: results of two runs, let alone two hosts,
are never divided (``bench._report``).
"""

import datetime as dt
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from OpenSSL import SSL

from bench._report import machine_lines
from bench.compare_brokers import AMQTT, MOSQUITTO, MOSQUITTO_NAME, NANOIOT

# What a row's ratios compare: CPU per operation, RSS per connection, or its own figure.
Key = Literal["cpu", "rss", "figure"]


@dataclass(frozen=True)
class Row:
    scenario: str
    broker: str
    ops: int  # connects, delivered messages, or open connections
    unit: str
    cpu_s: float  # broker CPU over the measurement
    wall_s: float
    load_cpu_s: float  # the load generator's own CPU
    failed: int = 0  # failed connects, or messages lost
    note: str = ""
    latency: dict[str, float] | None = None
    rss_kib: tuple[int, int] | None = None  # broker VmRSS before and with the connections
    rounds_ms: tuple[float, ...] = ()  # S1: CPU ms per connect of each interleaved round
    figure: tuple[float, str] | None = None  # S6: (value, unit), e.g. (52.1, "MiB")

    @property
    def key(self) -> Key:
        if self.figure is not None:
            return "figure"
        return "rss" if self.rss_kib is not None else "cpu"

    @property
    def rate(self) -> float:
        return self.ops / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_ms_per_op(self) -> float:
        """The median over the rounds when measured in rounds (robust to a noisy neighbour)."""
        if self.rounds_ms:
            return statistics.median(self.rounds_ms)
        return 1000 * self.cpu_s / self.ops if self.ops else float("nan")

    @property
    def ops_per_cpu_s(self) -> float:
        return self.ops / self.cpu_s if self.cpu_s else float("nan")

    @property
    def kib_per_connection(self) -> float:
        if self.rss_kib is None or not self.ops:
            return float("nan")
        return (self.rss_kib[1] - self.rss_kib[0]) / self.ops

    def key_figure(self) -> float:
        """What the ratios compare: lower is better for each."""
        if self.figure is not None:
            return self.figure[0]
        if self.rss_kib is not None:
            return self.kib_per_connection
        return self.cpu_ms_per_op

    def summary(self) -> str:
        return f"{self.scenario} | {self.broker} | {self._figures()}"

    def _figures(self) -> str:
        if self.figure is not None:
            return f"{self.figure[0]:.2f} {self.figure[1]}"
        if self.rss_kib is not None:
            return f"{self.kib_per_connection:.1f} KiB/connection, {self.ops:,} open"
        text = f"{self.rate:,.0f} {self.unit}/s, {self.cpu_ms_per_op:.4f} ms CPU/op"
        if self.latency:
            text += f", p50 {self.latency['p50']:.2f} ms, p99 {self.latency['p99']:.2f} ms"
        return text


HEADER = (
    "| scenario | broker | done | failed/lost | wall rate | broker CPU/op | ops per broker "
    "CPU-s | latency p50 / p99 | RSS/conn | figure | load-gen CPU | NanoIoT / Mosquitto | "
    "NanoIoT / amqtt | note |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def table(rows: Sequence[Row]) -> str:
    by_key = {(row.scenario, row.broker): row for row in rows}
    return "\n".join([HEADER, *(_line(row, by_key) for row in rows)])


def ratio(rows: Sequence[Row], scenario: str, other: str) -> float | None:
    """NanoIoT's key figure over ``other``'s in ``scenario``, both from ``rows`` (one run)."""
    by_key = {(row.scenario, row.broker): row for row in rows}
    ours, theirs = by_key.get((scenario, NANOIOT)), by_key.get((scenario, other))
    if ours is None or theirs is None:
        return None
    value = theirs.key_figure()
    if not value or value != value:  # zero, or NaN: under one clock tick
        return None
    return ours.key_figure() / value


def _ratio_cell(row: Row, by_key: dict[tuple[str, str], Row], other: str) -> str:
    if row.broker != NANOIOT:
        return ""
    found = ratio(list(by_key.values()), row.scenario, other)
    return "" if found is None else f"{found:.2f}×"


def _line(row: Row, by_key: dict[tuple[str, str], Row]) -> str:
    timed = row.key == "cpu"
    latency = f"{row.latency['p50']:.2f} / {row.latency['p99']:.2f} ms" if row.latency else ""
    cells = [
        row.scenario,
        row.broker,
        f"{row.ops:,}",
        f"{row.failed:,}",
        f"{row.rate:,.0f}/s" if timed else "",
        f"{row.cpu_ms_per_op:.4f} ms" if timed else "",
        (f"{row.ops_per_cpu_s:,.0f}" if row.cpu_s else "< 1 tick") if timed else "",
        latency,
        f"{row.kib_per_connection:.1f} KiB" if row.key == "rss" else "",
        f"{row.figure[0]:.2f} {row.figure[1]}" if row.figure is not None else "",
        f"{row.load_cpu_s:.1f} s",
        _ratio_cell(row, by_key, MOSQUITTO_NAME),
        _ratio_cell(row, by_key, AMQTT),
        row.note.replace("|", "/")[:240],
    ]
    return "| " + " | ".join(cells) + " |"


def _mosquitto_openssl() -> str:
    try:
        done = subprocess.run(
            ["ldd", str(MOSQUITTO)], capture_output=True, text=True, check=False, timeout=10
        )
    except OSError:
        return "?"
    libs = [line.split()[0] for line in done.stdout.splitlines() if "libssl" in line]
    return libs[0] if libs else "?"


def machine() -> list[str]:
    return machine_lines(
        f"NanoIoT TLS: pyOpenSSL over {SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}; "
        f"amqtt and load generator: the stdlib ssl above; Mosquitto 2.0.11 linked to "
        f"{_mosquitto_openssl()}",
        dirty_note="+ uncommitted changes",
    )


def report(
    rows: Sequence[Row], sizes: Any, argv: Sequence[str], title: str, goals: Sequence[str]
) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    heading = f"# NanoIoT, Mosquitto and amqtt side by side, {when}" + (
        f" ({title})" if title else ""
    )
    return "\n".join(
        [
            heading,
            "",
            table(rows),
            "",
            f"`python -m bench.compare {' '.join(argv)}`; sizes: {sizes}.",
            "Broker CPU/op = the broker process's user+system CPU (/proc) over the measurement "
            "divided by connects or delivered messages. Ratios divide NanoIoT's figure by the "
            "other broker's, both of this run: CPU/op, RSS per connection (S4), or the figure "
            "column (S6); below 1 means NanoIoT is cheaper. Every scenario that holds "
            "connections checked, before measuring, that the broker itself counted exactly "
            "those live connections (NanoIoT `nanoiot_connected_clients`, Mosquitto and amqtt "
            "`$SYS/broker/clients/connected`); client ids are never used twice in a run. "
            "S2/S3 publish with at most 1,000 messages in flight, so 'lost' is real loss. "
            "NanoIoT's store holds the fake devices plus every device certificate, pinned; "
            "Mosquitto and amqtt trust the devices' CA.",
            "",
            "## Goals (this run only)",
            "",
            *goals,
            "",
            "## Machine",
            "",
            *machine(),
            "",
        ]
    )
