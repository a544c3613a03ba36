"""Smoke run of ``bench.compare --smoke``: three real brokers, every scenario, under a minute.

Checked: every scenario has a row for every broker, nothing failed or was lost, the figures
are there and the report says where it ran. The speed targets belong to the benchmark.
"""

import time
from pathlib import Path

import pytest

from bench import compare
from bench.compare_brokers import KINDS, MOSQUITTO, NANOIOT

pytestmark = pytest.mark.skipif(not MOSQUITTO.exists(), reason="Debian's mosquitto is needed")

SCENARIOS = [
    "S1 connect, EC device certs",
    "S1 connect, RSA device certs",
    "S2 QoS 0, 1 -> 1",
    "S2 QoS 0, 100 -> 1",
    "S3 QoS 1, 1 -> 1",
    "S3 QoS 1, 100 -> 1",
    "S5 latency at 500 msg/s",
    "S4 60 idle connections",
]


def test_smoke_run_reports_every_scenario_for_every_broker(tmp_path: Path) -> None:
    output = tmp_path / "compare.md"
    started = time.monotonic()

    assert compare.main(["--smoke", "--output", str(output)]) == 0

    assert time.monotonic() - started < 60
    text = output.read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line[:2] == "| "]
    header, *body = [[cell.strip() for cell in row] for row in rows]
    column = {name: header.index(name) for name in header}
    assert sorted((row[0], row[1]) for row in body) == sorted(
        (scenario, broker) for scenario in SCENARIOS for broker in KINDS
    )
    assert {row[column["failed/lost"]] for row in body} == {"0"}
    for row in body:
        if row[0].startswith("S4"):
            assert row[column["RSS/conn"]].endswith("KiB")
        else:
            assert row[column["broker CPU/op"]].endswith("ms")
        if row[1] == NANOIOT and row[0].startswith("S1"):
            # Smoke sizes leave some figures under one clock tick (no ratio then), not S1's.
            assert row[column["NanoIoT / Mosquitto"]].endswith("×")
            assert row[column["NanoIoT / amqtt"]].endswith("×")
    assert "git commit" in text
    assert "load average" in text
