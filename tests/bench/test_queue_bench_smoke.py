"""Smoke run of ``bench.queue_bench``: every row measured on a few messages, the report
written with its machine section. The figures belong to the benchmark."""

from pathlib import Path

from bench import queue_bench


def test_small_run_measures_every_row(tmp_path: Path) -> None:
    output = tmp_path / "queue.md"

    assert queue_bench.main(["--messages", "300", "--rounds", "1", "--output", str(output)]) == 0

    report = output.read_text()
    assert report.count("\n| ") == len(queue_bench.ROWS) + 1  # and the header
    assert "clock passed: True" in report
    assert "host: " in report
