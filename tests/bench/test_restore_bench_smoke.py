"""Smoke run of ``bench.restore_bench``: a few hundred stored sessions, two real starts of
``nanoiot serve``, every session restored. The 2-second target belongs to the benchmark."""

from pathlib import Path

import pytest

from bench import restore_bench

pytestmark = pytest.mark.slow


def test_small_run_starts_twice_and_restores_every_session(tmp_path: Path) -> None:
    output = tmp_path / "restore.md"

    assert restore_bench.main(["--sessions", "300", "--output", str(output)]) == 0

    report = output.read_text()
    assert "restored 300 persistent sessions, 600 messages" in report
    assert "host: " in report
