"""Smoke run of ``bench.compare --smoke``: three real brokers, every scenario, under a minute.

Checked: every scenario has a row for every broker, nothing failed or was lost, the figures
are there, the goals are evaluated, and the report says where it ran. The speed targets
belong to the benchmark.
"""

from pathlib import Path

import pytest

from bench import compare
from bench.compare_brokers import KINDS, MOSQUITTO, NANOIOT
from bench.compare_goals import (
    IDLE_CPU,
    IDLE_RSS,
    connect_name,
    fleet_name,
    goals,
    idle_name,
    pubsub_name,
    sessions_name,
    steady_name,
)

pytestmark = pytest.mark.skipif(not MOSQUITTO.exists(), reason="Debian's mosquitto is needed")

SIZES = compare.SMOKE
FAN = SIZES.fan
SHARED = [
    IDLE_RSS,
    IDLE_CPU,
    connect_name("ec"),
    connect_name("rsa"),
    pubsub_name(0, 1, 1),
    pubsub_name(0, FAN, 1),
    pubsub_name(0, 1, FAN),
    pubsub_name(1, 1, 1),
    pubsub_name(1, FAN, 1),
    steady_name(0, SIZES.rate),
    steady_name(1, SIZES.rate),
    idle_name(SIZES.idle),
    *(sessions_name(k, what) for k in SIZES.k_levels for what in ("QoS 0 1 -> 1", "connect")),
]


def fleet_row(broker: str) -> str:
    rate = SIZES.fleet_rate // 5 if broker == "amqtt" else SIZES.fleet_rate
    return fleet_name(SIZES.fleet, rate)


def test_smoke_run_reports_every_scenario_for_every_broker(tmp_path: Path) -> None:
    output = tmp_path / "compare.md"

    assert compare.main(["--smoke", "--output", str(output)]) == 0

    text = output.read_text()
    table, goals_part = text.split("## Goals", 1)
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line[:2] == "| "]
    header, *body = [[cell.strip() for cell in row] for row in rows]
    column = {name: header.index(name) for name in header}
    expected = [(s, b) for b in KINDS for s in SHARED] + [(fleet_row(b), b) for b in KINDS]
    assert sorted((row[0], row[1]) for row in body) == sorted(expected)
    assert {row[column["failed/lost"]] for row in body} == {"0"}
    for row in body:
        if row[0].startswith("S4"):
            assert row[column["RSS/conn"]].endswith("KiB")
        elif row[0].startswith("S6"):
            assert row[column["figure"]].endswith(("MiB", "% of a core"))
        else:
            assert row[column["broker CPU/op"]].endswith("ms")
        if row[1] == NANOIOT and row[0].startswith(("S1", "S4", "S6 RSS")):
            # Smoke sizes leave some figures under one clock tick (no ratio then), not these.
            assert row[column["NanoIoT / Mosquitto"]].endswith("×")
            assert row[column["NanoIoT / amqtt"]].endswith("×")
    for goal in goals(SIZES.rate, SIZES.k_levels):
        assert f"| {goal.text} |" in goals_part
    assert "- host: " in text
    assert "git commit" in text
    assert "load average" in text
