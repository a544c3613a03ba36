"""The scripts source ``keygen.properties`` with bash, so the file is code run as whoever runs
them, and ``./keygen.properties`` is picked up from the working directory. Run in a shared
folder (/tmp, a team share), a file another user put or could change there must not run:
the scripts refuse it in one line, before bash reads it."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.keygen.conftest import CONF, script_env, ship
from tests.keygen.test_script_usage import one_error_line

# What another user would write: a command run as the operator (root, often) at `source`.
PLANTED = 'ORGANIZATION="$(touch pwned)NanoIoT"\n'


def run_in(folder: Path, scripts: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(scripts / "server.keygen.sh"), *args], cwd=folder, env=script_env(folder),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "keygen.properties").write_text((CONF / "keygen.properties").read_text() + PLANTED)
    return folder


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_properties_file_of_another_user_is_not_sourced(tmp_path: Path, shared: Path) -> None:
    scripts = ship(tmp_path / "scripts")
    planted = shared / "keygen.properties"
    os.chown(planted, 65534, 65534)  # nobody's
    for args in ((), ("-p", str(planted))):
        error = one_error_line(run_in(shared, scripts, *args))
        assert "belongs to another user: sourcing it would run their commands as you" in error
        assert not (shared / "pwned").exists()


def test_a_world_writable_properties_file_is_not_sourced(tmp_path: Path, shared: Path) -> None:
    scripts = ship(tmp_path / "scripts")
    (shared / "keygen.properties").chmod(0o666)
    error = one_error_line(run_in(shared, scripts))
    assert error == (
        "error: keygen.properties is writable by every user: sourcing it would run their "
        "commands as you (chmod o-w keygen.properties)"
    )
    assert not (shared / "pwned").exists()


def test_the_operators_own_group_writable_file_is_sourced(tmp_path: Path, shared: Path) -> None:
    scripts = ship(tmp_path / "scripts")
    own = shared / "keygen.properties"
    own.chmod(0o664)  # group-writable, as a umask of 002 leaves every file
    assert run_in(shared, scripts, "--dir", "out").returncode == 0
    assert (shared / "pwned").exists()  # the operator's own file runs as written
