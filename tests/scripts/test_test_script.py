"""``scripts/test``, the README's test command, run in a copy of the project layout whose
``.venv`` tools are stubs that note what they were run with."""

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Each stub appends its name, its arguments and what PYTHONDONTWRITEBYTECODE was to RUNS.
STUB = '#!/bin/sh\necho "$(basename "$0") $* [${PYTHONDONTWRITEBYTECODE-unset}]" >> "$RUNS"\n'


def test_the_suite_runs_with_bytecode_cached_whatever_the_shell_says(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    for script in ("test", "bootstrap"):
        shutil.copy2(REPO / "scripts" / script, root / "scripts" / script)
    (root / "pyproject.toml").write_text("")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "ruff", "mypy", "pytest"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    (root / ".venv" / ".nanoiot-installed").touch()  # installed after pyproject.toml changed
    runs = tmp_path / "runs"
    env = {**os.environ, "RUNS": str(runs), "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(
        [str(root / "scripts" / "test"), "tests/auth"],
        env=env, check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = runs.read_text().splitlines()
    pytest_runs = [line for line in lines if line.startswith("pytest ")]
    assert len(pytest_runs) == 2, lines  # the parallel part, then the tests marked alone
    assert all(line.endswith("[unset]") for line in lines), lines
