"""The command ``client.keygen.sh`` prints for the next step can be pasted into a shell as it
is: the device name and the folder are the operator's text, and a quote, a space or
``$(...)`` in them stays text (the real scripts, the real ``nanoiot``, real bash)."""

import json
import subprocess
from pathlib import Path

from tests.keygen.conftest import Run, script_env

# An apostrophe ends a single-quoted word; $(...) then runs.
NAME = "o'brien $(touch pwned) 's sensor"


def test_the_printed_next_step_runs_as_shown(shipped: Path, run: Run) -> None:
    out = "out dir"  # a space: the certificate's path is one word only if quoted
    run("server.keygen.sh", "--dir", out)
    printed = run("client.keygen.sh", "--dir", out, "--cn", NAME).stdout
    next_step = next(line for line in printed.splitlines() if line.startswith("next:"))
    command = next_step.split(" or: ", 1)[1]
    env = script_env(shipped)
    pasted = subprocess.run(
        ["bash", "-c", command], cwd=shipped, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert not (shipped / "pwned").exists(), command
    assert pasted.returncode == 0, pasted.stderr
    listed = subprocess.run(
        ["nanoiot", "device", "list", "--json"], cwd=shipped, env=env, capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    assert [device["name"] for device in json.loads(listed.stdout)] == [NAME]
