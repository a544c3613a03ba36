"""The scenarios' names, and the goals a run is held to: NanoIoT against Mosquitto in the same
run, or an absolute bound.

The goals are those of the performance work on the broker (mTLS connect within 1.2x of
Mosquitto's CPU with 100,000 devices provisioned, QoS 0 within 2x, QoS 1 within 1.5x, QoS 1
at a steady rate within 2x with p99 under 1 ms, 32 KiB per idle connection, 60 MiB with no
connection, no CPU when idle) and of the subscription index (at K = 10,000 idle sessions with a
filter each, QoS 0 and connect CPU within 1.2x of K = 0).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.compare_brokers import MOSQUITTO_NAME, NANOIOT
from bench.compare_report import Row, ratio

IDLE_RSS = "S6 RSS with no connection"
IDLE_CPU = "S6 CPU with no client"


def connect_name(kind: str) -> str:
    return f"S1 connect, {kind.upper()} device certs"


def pubsub_name(qos: int, publishers: int, subscribers: int) -> str:
    shape = " (fan-in)" if publishers > 1 else " (fan-out)" if subscribers > 1 else ""
    return f"S{2 + qos} QoS {qos}, {publishers} -> {subscribers}{shape}"


def idle_name(connections: int) -> str:
    return f"S4 {connections:,} idle connections"


def steady_name(qos: int, rate: int) -> str:
    return f"S5 QoS {qos} at {rate:,} msg/s"


def sessions_name(k: int, what: str) -> str:
    """``what``: "QoS 0 1 -> 1" or "connect"."""
    return f"S7 K={k:,}: {what}"


def fleet_name(devices: int, rate: int) -> str:
    return f"S8 fleet of {devices:,}: QoS 1 telemetry at {rate:,} msg/s"


@dataclass(frozen=True)
class Goal:
    text: str
    measure: Callable[[Sequence[Row]], float | None]  # None: not measured in this run
    bound: float
    unit: str  # "×" for a ratio, else the unit of an absolute figure


def goals(rate: int, k_levels: Sequence[int]) -> list[Goal]:
    def vs_mosquitto(scenario: str) -> Callable[[Sequence[Row]], float | None]:
        return lambda rows: ratio(rows, scenario, MOSQUITTO_NAME)

    def ours(
        scenario: str, value: Callable[[Row], float]
    ) -> Callable[[Sequence[Row]], float | None]:
        def measure(rows: Sequence[Row]) -> float | None:
            found = [r for r in rows if (r.scenario, r.broker) == (scenario, NANOIOT)]
            return value(found[0]) if found else None

        return measure

    def vs_k0(what: str) -> Callable[[Sequence[Row]], float | None]:
        def measure(rows: Sequence[Row]) -> float | None:
            top = ours(sessions_name(max(k_levels), what), Row.key_figure)(rows)
            base = ours(sessions_name(0, what), Row.key_figure)(rows)
            return top / base if top is not None and base else None

        return measure

    top_k = max(k_levels)
    steady = steady_name(1, rate)
    return [
        Goal("S1 mTLS connect (EC), CPU vs Mosquitto", vs_mosquitto(connect_name("ec")), 1.2, "×"),
        Goal(
            "S1 mTLS connect (RSA), CPU vs Mosquitto", vs_mosquitto(connect_name("rsa")), 1.2, "×"
        ),
        Goal("S2 QoS 0 1 -> 1, CPU vs Mosquitto", vs_mosquitto(pubsub_name(0, 1, 1)), 2.0, "×"),
        Goal("S3 QoS 1 1 -> 1, CPU vs Mosquitto", vs_mosquitto(pubsub_name(1, 1, 1)), 1.5, "×"),
        Goal(f"{steady}, CPU vs Mosquitto", vs_mosquitto(steady), 2.0, "×"),
        Goal(f"{steady}, p99", _p99(steady), 1.0, "ms"),
        Goal("S4 RSS per idle mTLS connection", lambda rows: _s4(rows), 32.0, "KiB"),
        Goal(IDLE_RSS, ours(IDLE_RSS, Row.key_figure), 60.0, "MiB"),
        Goal(IDLE_CPU, ours(IDLE_CPU, Row.key_figure), 0.1, "% of a core"),
        Goal(f"S7 QoS 0 CPU at K={top_k:,} vs K=0", vs_k0("QoS 0 1 -> 1"), 1.2, "×"),
        Goal(f"S7 connect CPU at K={top_k:,} vs K=0", vs_k0("connect"), 1.2, "×"),
    ]


def _p99(scenario: str) -> Callable[[Sequence[Row]], float | None]:
    def measure(rows: Sequence[Row]) -> float | None:
        found = [r for r in rows if (r.scenario, r.broker) == (scenario, NANOIOT) and r.latency]
        return found[0].latency["p99"] if found and found[0].latency else None

    return measure


def _s4(rows: Sequence[Row]) -> float | None:
    found = [r for r in rows if r.scenario.startswith("S4 ") and r.broker == NANOIOT]
    return found[0].kib_per_connection if found else None


def goals_table(rows: Sequence[Row], rate: int, k_levels: Sequence[int]) -> list[str]:
    lines = ["| goal | NanoIoT | bound | result |", "|---|---:|---:|---|"]
    for goal in goals(rate, k_levels):
        value = goal.measure(rows)
        if value is None:
            lines.append(
                f"| {goal.text} | no figure (not run, or under a clock tick) "
                f"| ≤ {goal.bound:g} {goal.unit} | |"
            )
            continue
        verdict = "met" if value <= goal.bound else "**not met**"
        lines.append(
            f"| {goal.text} | {value:.2f} {goal.unit} | ≤ {goal.bound:g} {goal.unit} | {verdict} |"
        )
    return lines
