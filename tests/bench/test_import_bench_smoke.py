"""Smoke run of ``bench.import_bench``: both paths on SQLite with a few hundred real
certificates, end to end. The 60-second target belongs to the benchmark, not to the tests."""

from pathlib import Path

import pytest

from bench import import_bench

pytestmark = pytest.mark.slow


def test_small_run_imports_every_row_through_both_paths(tmp_path: Path) -> None:
    output = tmp_path / "import.md"

    assert (
        import_bench.main(["--devices", "300", "--backend", "sqlite", "--output", str(output)]) == 0
    )

    rows = [line.split("|")[1:-1] for line in output.read_text().splitlines() if line[:2] == "| "]
    header, *body = [[cell.strip() for cell in row] for row in rows]
    column = {name: header.index(name) for name in header}
    assert [(row[column["backend"]], row[column["path"]]) for row in body] == [
        ("sqlite", "CLI"),
        ("sqlite", "API"),
    ]
    for row in body:
        assert row[column["imported"]] == row[column["stored"]] == "300"
    assert "host: " in output.read_text()
