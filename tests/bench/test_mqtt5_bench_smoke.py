"""Smoke run of ``bench.mqtt5_bench``: every row measured and reported against its 3.1.1 row.

Only the report's shape is checked here: the 1.2x goal belongs to the benchmark's own run
(``bench/results``), not to the test suite.
"""

from pathlib import Path

import pytest

from bench import mqtt5_bench

pytestmark = pytest.mark.slow


def test_small_run_reports_every_row(tmp_path: Path) -> None:
    output = tmp_path / "mqtt5.md"

    assert mqtt5_bench.main(["--messages", "300", "--rounds", "1", "--output", str(output)]) == 0

    rows = [line.split("|")[1:-1] for line in output.read_text().splitlines() if line[:2] == "| "]
    _header, *measured = [[cell.strip() for cell in row] for row in rows]
    assert [row[0] for row in measured] == [row.name for row in mqtt5_bench.ROWS]
    assert all(float(row[1]) >= 0 for row in measured)
    assert {row[2] for row in measured if row[0].startswith("3.1.1")} <= {"1.00x", "n/a"}
