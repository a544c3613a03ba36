"""S1's interleaved rounds (``bench.compare_connects``), with a fake measurement: the order the
brokers are measured in, and the medians, spreads and paired ratios the report shows."""

from pathlib import Path
from typing import Any

from bench.compare_brokers import MOSQUITTO_NAME, NANOIOT, BrokerProcess
from bench.compare_connects import interleaved_connects, paired_ratios, spread

# Broker CPU ms per connect, by broker and round: NanoIoT's third round hit a busy machine.
CPU_MS = {NANOIOT: [2.0, 2.2, 4.0, 2.1], MOSQUITTO_NAME: [1.6, 1.8, 3.2, 1.7]}
CONNECTS = 100


async def test_rounds_are_interleaved_abba_and_reported_as_medians() -> None:
    nanoiot = BrokerProcess(NANOIOT, 1, 1883, Path("ca.pem"))
    mosquitto = BrokerProcess(MOSQUITTO_NAME, 2, 1884, Path("ca.pem"))
    order: list[tuple[str, str]] = []

    def specs(broker: BrokerProcess, kind: str) -> list[dict[str, Any]]:
        return [{"broker": broker.name, "kind": kind}]

    async def measure(
        broker: BrokerProcess, worker_specs: list[dict[str, Any]]
    ) -> tuple[float, list[Any]]:
        order.append((broker.name, worker_specs[0]["kind"]))
        rounds_done = sum(1 for name, kind in order if (name, kind) == order[-1]) - 1
        cpu_s = CPU_MS[broker.name][rounds_done] * CONNECTS / 1000
        result = {"connects": CONNECTS, "failures": 0, "wall_s": 1.0, "cpu_s": 0.1}
        return cpu_s, [result | {"first_error": ""}]

    rows = await interleaved_connects([nanoiot, mosquitto], specs, measure, rounds=4)

    assert order[:8] == [
        (NANOIOT, "ec"), (NANOIOT, "rsa"), (MOSQUITTO_NAME, "ec"), (MOSQUITTO_NAME, "rsa"),
        (MOSQUITTO_NAME, "rsa"), (MOSQUITTO_NAME, "ec"), (NANOIOT, "rsa"), (NANOIOT, "ec"),
    ]  # fmt: skip
    by_key = {(row.broker, row.scenario): row for row in rows}
    ours = by_key[(NANOIOT, "S1 connect, EC device certs")]
    theirs = by_key[(MOSQUITTO_NAME, "S1 connect, EC device certs")]
    assert ours.ops == 4 * CONNECTS
    assert round(ours.cpu_ms_per_op, 6) == 2.15  # the median: the busy round does not count
    assert round(theirs.cpu_ms_per_op, 6) == 1.75
    assert "median of 4 rounds, 2.000-4.000 ms" in ours.note
    assert "per-round ratio to Mosquitto 1.24×" in ours.note


def test_spread_and_paired_ratios() -> None:
    assert spread([]) == ""
    assert spread([1.0, 3.0, 2.0]) == "median of 3 rounds, 1.000-3.000 ms"
    assert paired_ratios([2.0, 3.0], [1.0, 0.0]) == [2.0]  # a round without figure is skipped
