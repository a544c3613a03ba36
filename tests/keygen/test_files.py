"""File output: modes from the first byte, atomic replacement, the overwrite policy."""

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from nanoiot.errors import KeygenError
from nanoiot.keygen.files import OutputFile, check_overwrite, copy_into, write_files


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_files_are_0600_and_public_files_0644(tmp_path: Path) -> None:
    write_files(
        [
            OutputFile(tmp_path / "new" / "k.pem", b"key", True, "key"),
            OutputFile(tmp_path / "new" / "c.pem", b"cert", False, "cert"),
        ]
    )
    assert mode(tmp_path / "new" / "k.pem") == 0o600
    assert mode(tmp_path / "new" / "c.pem") == 0o644


def test_replacing_a_world_readable_file_leaves_a_private_one(tmp_path: Path) -> None:
    target = tmp_path / "k.pem"
    target.write_bytes(b"old")
    target.chmod(0o666)
    write_files([OutputFile(target, b"new", True, "key")])
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k.pem"]


def test_copy_keeps_modes(tmp_path: Path) -> None:
    files = [OutputFile(tmp_path / "k.pem", b"key", True, "key")]
    write_files(files)
    [copied] = copy_into(files, tmp_path / "etc")
    assert copied.read_bytes() == b"key"
    assert mode(copied) == 0o600


def test_unwritable_directory_is_one_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(KeygenError, match="cannot write in"):
        write_files([OutputFile(blocker / "sub" / "k.pem", b"k", True, "key")])


def test_nothing_existing_needs_no_question(tmp_path: Path) -> None:
    def never(_question: str) -> bool:
        raise AssertionError("asked")

    check_overwrite([tmp_path / "a"], force=False, confirm=never)


def test_existing_files_without_a_terminal_are_refused_naming_force(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("")
    with pytest.raises(KeygenError, match="already exists; pass --force to overwrite"):
        check_overwrite([tmp_path / "a", tmp_path / "b"], force=False, confirm=None)
    check_overwrite([tmp_path / "a"], force=True, confirm=None)


def test_existing_files_at_a_terminal_are_asked_about(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("")
    questions: list[str] = []

    def answer(reply: bool) -> Callable[[str], bool]:
        def confirm(question: str) -> bool:
            questions.append(question)
            return reply

        return confirm

    check_overwrite([tmp_path / "a"], force=False, confirm=answer(True))
    assert questions == [f"Overwrite {tmp_path / 'a'}?"]
    with pytest.raises(KeygenError, match="nothing written"):
        check_overwrite([tmp_path / "a"], force=False, confirm=answer(False))
