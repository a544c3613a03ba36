"""Writing the generated files: private material 0600 from the first byte, never half-written.

The only module here that touches the file system (besides reading the properties file).
"""

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nanoiot.errors import KeygenError

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class OutputFile:
    """One file to write. ``secret`` files hold a private key (also inside a keystore)."""

    path: Path
    data: bytes
    secret: bool
    purpose: str


def check_overwrite(
    paths: Sequence[Path], *, force: bool, confirm: Callable[[str], bool] | None
) -> None:
    """Refuse to replace earlier output unless forced or confirmed.

    ``confirm`` is None when nobody can answer (stdin is not a terminal): then the answer is
    no, at once, so a script or CI job never hangs on a prompt.
    """
    existing = [path for path in paths if path.exists()]
    if not existing or force:
        return
    names = ", ".join(str(path) for path in existing)
    if confirm is None:
        verb = "exists" if len(existing) == 1 else "exist"
        raise KeygenError(f"{names} already {verb}; pass --force to overwrite")
    if not confirm(f"Overwrite {names}?"):
        raise KeygenError("nothing written: existing files kept")


def write_files(files: Sequence[OutputFile]) -> None:
    for file in files:
        _write(file)


def _write(file: OutputFile) -> None:
    """Write to a temporary file in the same directory, then rename over the target.

    ``mkstemp`` creates the file 0600, so a key is never readable by others, not even for
    the moment between open and chmod; the rename replaces any earlier file atomically
    (and with it any looser mode the earlier file had).
    """
    directory = file.path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{file.path.name}.")
    except OSError as exc:
        raise KeygenError(f"cannot write in {directory}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(file.data)
            os.fchmod(handle.fileno(), SECRET_MODE if file.secret else PUBLIC_MODE)
        os.replace(temporary, file.path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise KeygenError(f"cannot write {file.path}: {exc.strerror}") from None


def copy_into(files: Sequence[OutputFile], directory: Path) -> list[Path]:
    """Copy already written files into ``directory`` (the server's ``--copy``), modes kept."""
    copied = []
    for file in files:
        target = directory / file.path.name
        _write(OutputFile(target, file.data, file.secret, file.purpose))
        copied.append(target)
    return copied


def read_bytes(path: Path, what: str, hint: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeygenError(f"{what} {path} not found: {hint}") from None
    except OSError as exc:
        raise KeygenError(f"cannot read {what} {path}: {exc.strerror}") from None
