"""The side-by-side benchmark's markdown: one table, ratios to Mosquitto and amqtt, the machine."""

import datetime as dt
import os
import platform
import ssl
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL

from bench._report import cpu_model, git_commit
from bench.compare_brokers import AMQTT, MOSQUITTO, MOSQUITTO_NAME, NANOIOT


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
        if self.rss_kib is not None:
            return self.kib_per_connection
        if self.latency:
            return self.latency["p99"]
        return self.cpu_ms_per_op

    def summary(self) -> str:
        return f"{self.scenario} | {self.broker} | {self._figures()}"

    def _figures(self) -> str:
        if self.rss_kib is not None:
            return f"{self.kib_per_connection:.1f} KiB/connection, {self.ops:,} open"
        text = f"{self.rate:,.0f} {self.unit}/s, {self.cpu_ms_per_op:.3f} ms CPU/op"
        if self.latency:
            text += f", p50 {self.latency['p50']:.2f} ms, p99 {self.latency['p99']:.2f} ms"
        return text


HEADER = (
    "| scenario | broker | done | failed/lost | wall rate | broker CPU/op | ops per broker "
    "CPU-s | latency p50 / p99 | RSS/conn | load-gen CPU | NanoIoT / Mosquitto | "
    "NanoIoT / amqtt | note |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def table(rows: Sequence[Row]) -> str:
    by_key = {(row.scenario, row.broker): row for row in rows}
    lines = [HEADER]
    for row in rows:
        lines.append(_line(row, by_key))
    return "\n".join(lines)


def _ratio(row: Row, by_key: dict[tuple[str, str], Row], other: str) -> str:
    if row.broker != NANOIOT or (row.scenario, other) not in by_key:
        return ""
    theirs = by_key[(row.scenario, other)].key_figure()
    if not theirs or theirs != theirs:
        return ""
    return f"{row.key_figure() / theirs:.2f}×"


def _line(row: Row, by_key: dict[tuple[str, str], Row]) -> str:
    idle = row.rss_kib is not None
    latency = f"{row.latency['p50']:.2f} / {row.latency['p99']:.2f} ms" if row.latency else ""
    cells = [
        row.scenario,
        row.broker,
        f"{row.ops:,}",
        f"{row.failed:,}",
        "" if idle else f"{row.rate:,.0f}/s",
        "" if idle else f"{row.cpu_ms_per_op:.3f} ms",
        "" if idle else (f"{row.ops_per_cpu_s:,.0f}" if row.cpu_s else "< 1 tick"),
        latency,
        f"{row.kib_per_connection:.1f} KiB" if idle else "",
        f"{row.load_cpu_s:.1f} s",
        _ratio(row, by_key, MOSQUITTO_NAME),
        _ratio(row, by_key, AMQTT),
        row.note.replace("|", "/")[:200],
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
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores; load average at the end {load}",
        f"- Python {platform.python_version()} ({platform.platform()})",
        f"- NanoIoT TLS: pyOpenSSL over {SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}; "
        f"amqtt and load generator: stdlib ssl over {ssl.OPENSSL_VERSION}; "
        f"Mosquitto 2.0.11 linked to {_mosquitto_openssl()}",
        f"- git commit {git_commit('+ uncommitted changes')}",
    ]


def report(rows: Sequence[Row], sizes: Any, argv: Sequence[str], title: str) -> str:
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
            "divided by connects, delivered messages; ratios compare CPU/op (S1-S3), p99 (S5) "
            "and RSS per connection (S4): below 1 means NanoIoT is cheaper. S2/S3 publish with "
            "at most 1,000 messages in flight, so 'lost' is real loss, not queue overflow. "
            "NanoIoT's store holds the fake devices plus every device certificate, pinned; "
            "Mosquitto and amqtt trust the devices' CA.",
            "",
            *machine(),
            "",
        ]
    )
