"""Smoke run of ``bench.broker_bench --quick``: end to end, every scenario in the report.

Only the report's shape and that every device connected are checked here: the speed targets
belong to the benchmark (``--check``), not to the test suite.
"""

from pathlib import Path

import pytest

from bench import broker_bench

pytestmark = pytest.mark.slow


def test_quick_run_reports_every_scenario(tmp_path: Path) -> None:
    output = tmp_path / "broker.md"

    assert broker_bench.main(["--quick", "--output", str(output)]) == 0

    rows = [line.split("|")[1:-1] for line in output.read_text().splitlines() if line[:2] == "| "]
    header, *scenarios = [[cell.strip() for cell in row] for row in rows]
    assert [row[0] for row in scenarios] == [
        broker_bench.UNIQUE,
        broker_bench.SAME_DN,
        broker_bench.LARGE,
    ]
    connected = header.index("devices connected")
    assert [row[connected] for row in scenarios] == ["100 / 100", "100 / 100", "50 / 50"]
    assert {row[header.index("all connect")] for row in scenarios} == {"PASS"}
