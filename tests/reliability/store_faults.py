"""Ways a SQLite store stops taking writes while reads still work, made for real.

- ``SqliteLock``: another process holds the database's write lock (``BEGIN IMMEDIATE``, as a
  backup or a CLI transaction would) for as long as the test says.
- ``Tmpfs``: the data directory on a small tmpfs of its own, to fill up (ENOSPC).
- ``ReadOnlyDisk``: the data directory on ext4 (``errors=remount-ro``) in a loop device whose
  backing file lies on a tmpfs; filling that tmpfs makes the disk fail writes, and ext4 turns
  itself read-only, as it does on a failing disk. (Linux refuses ``mount -o remount,ro``
  while a process has files open for writing, so a plain remount cannot do it.) Afterwards
  the operator's way back: unmount, ``e2fsck``, mount again.

Mounting needs root (CAP_SYS_ADMIN); without it those cases are skipped, with the reason.
"""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import WAIT

_HOLD_LOCK = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
connection.execute("ROLLBACK")
"""


class SqliteLock:
    """Another process holding the write lock of ``database`` between begin() and end()."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self._process: subprocess.Popen[str] | None = None

    def begin(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _HOLD_LOCK, str(self.database)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self._process.stdout is not None
        assert self._process.stdout.readline().strip() == "locked"

    def end(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            assert process.stdin is not None
            assert process.stdout is not None
            process.stdin.close()
            process.wait(WAIT)
            process.stdout.close()


class Tmpfs:
    """A tmpfs of ``size_mb`` mounted on ``where`` (created), unmounted by close()."""

    def __init__(self, where: Path, size_mb: int) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self.where = where
        if os.geteuid() != 0:
            pytest.skip("mounting a file system needs root")
        mounted = _mount("-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(where))
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        self._filler = where / "filler"

    def fill(self) -> None:
        """Write until the file system is full (ENOSPC)."""
        descriptor = os.open(self._filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (1 << 20, 4096):  # then the last pages too
                with contextlib.suppress(OSError):
                    while os.write(descriptor, b"\0" * size):
                        pass
        finally:
            os.close(descriptor)

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def close(self) -> None:
        _run("umount", "-l", str(self.where))


class ReadOnlyDisk:
    """ext4 of ``size_mb`` on ``where``, in a loop device over a file on a tmpfs of its own."""

    def __init__(self, where: Path, backing: Path, size_mb: int) -> None:
        self._backing = Tmpfs(backing, size_mb + 8)
        self.where = where
        self._image = backing / "disk.img"
        self._device = ""
        try:
            _run("truncate", "-s", f"{size_mb}M", str(self._image), check=True)
            _run("mkfs.ext4", "-q", str(self._image), check=True)
            attached = _run("losetup", "-f", "--show", str(self._image))
            if attached.returncode != 0:
                pytest.skip(f"no loop device here: {attached.stderr.strip()}")
            self._device = attached.stdout.strip()
            where.mkdir(parents=True, exist_ok=True)
            self._mount()
        except BaseException:
            self.close()
            raise

    def fail(self) -> None:
        """The disk under the file system fails its writes: ext4 turns read-only. What was
        written before reaches the disk first (files written without fsync, such as the
        generated admin token, would otherwise be lost with it)."""
        os.sync()
        self._backing.fill()

    def repair(self) -> None:
        """Space for the disk again, then unmount, check and mount (nothing may use it)."""
        self._backing.free()
        _run("umount", str(self.where), check=True)
        _run("e2fsck", "-fy", self._device)  # exit 1: errors corrected
        self._mount()

    def read_only(self) -> bool:
        mounts = Path("/proc/mounts").read_text().splitlines()
        return any(
            line.split()[1] == str(self.where) and ("ro," in line or "emergency_ro" in line)
            for line in mounts
        )

    def _mount(self) -> None:
        _run("mount", "-o", "errors=remount-ro,commit=1", self._device, str(self.where),
             check=True)  # fmt: skip

    def close(self) -> None:
        _run("umount", "-l", str(self.where))
        if self._device:
            _run("losetup", "-d", self._device)
        self._backing.close()


def _run(*args: str, check: bool = False) -> "subprocess.CompletedProcess[str]":
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _mount(*args: str) -> "subprocess.CompletedProcess[str]":
    return _run("mount", *args)
