"""``scripts/link-nanoiot`` (run by ``scripts/run``): the README's bare ``nanoiot ...`` commands
work in a new shell because ``nanoiot`` is linked into a folder already on the user's PATH.

Each case runs the real script in a copy of the project layout, with its own HOME and PATH, and
a stub ``.venv/bin/nanoiot`` that says where it was run from.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/bin:/bin"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "link-nanoiot", root / "scripts" / "link-nanoiot")
    stub = root / ".venv" / "bin" / "nanoiot"
    stub.parent.mkdir(parents=True)
    stub.write_text(f'#!/bin/sh\necho "nanoiot of {root}" "$@"\n')
    stub.chmod(0o755)
    return root


def run(project: Path, home: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "PATH": path}
    return subprocess.run(
        [str(project / "scripts" / "link-nanoiot")],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def bare_nanoiot(home: Path, path: str) -> str:
    """``nanoiot --version`` typed in a new shell with that PATH."""
    env = {**os.environ, "HOME": str(home), "PATH": path}
    done = subprocess.run(
        ["bash", "-c", "nanoiot --version"], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_linked_into_local_bin_on_path_and_silent_the_second_time(
    project: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    path = f"{home}/.local/bin:{SYSTEM_PATH}"  # on PATH, not created yet
    first = run(project, home, path)
    assert first.returncode == 0, first.stderr
    link = home / ".local" / "bin" / "nanoiot"
    assert first.stdout.strip() == (
        f"nanoiot is on your PATH now: {link} -> {project}/.venv/bin/nanoiot"
    )
    assert bare_nanoiot(home, path) == f"nanoiot of {project} --version"
    again = run(project, home, path)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


def test_home_bin_is_used_when_it_is_the_folder_on_path(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = f"{SYSTEM_PATH}:{home}/bin"
    assert run(project, home, path).returncode == 0
    assert (home / "bin" / "nanoiot").resolve() == project / ".venv" / "bin" / "nanoiot"
    assert not (home / ".local").exists()


def test_no_user_folder_on_path_says_what_to_do(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = run(project, home, SYSTEM_PATH)
    assert result.returncode == 0
    assert result.stdout.strip() == (
        f'To run nanoiot by name: export PATH="{project}/.venv/bin:$PATH" '
        "(or type .venv/bin/nanoiot)"
    )
    assert not home.exists()


def test_a_foreign_nanoiot_is_left_alone(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    local_bin = home / ".local" / "bin"
    local_bin.mkdir(parents=True)
    (local_bin / "nanoiot").write_text("#!/bin/sh\necho mine\n")
    result = run(project, home, f"{local_bin}:{SYSTEM_PATH}")
    assert result.returncode == 0
    assert "is not a link to a NanoIoT .venv; left as it is" in result.stderr
    assert (local_bin / "nanoiot").read_text() == "#!/bin/sh\necho mine\n"


def test_a_link_to_another_checkout_is_moved_to_this_one(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    local_bin = home / ".local" / "bin"
    local_bin.mkdir(parents=True)
    (local_bin / "nanoiot").symlink_to(tmp_path / "old-clone" / ".venv" / "bin" / "nanoiot")
    path = f"{local_bin}:{SYSTEM_PATH}"
    assert run(project, home, path).returncode == 0
    assert bare_nanoiot(home, path) == f"nanoiot of {project} --version"


@pytest.mark.parametrize("name", ["run", "bootstrap", "link-nanoiot", "test"])
def test_scripts_are_shellcheck_clean(name: str) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck; .ci/run does)")
    result = subprocess.run(
        ["shellcheck", str(REPO / "scripts" / name)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
