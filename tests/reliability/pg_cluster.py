"""A PostgreSQL server of a test's own, to stop and start again: Debian's PostgreSQL 15
binaries, a fresh cluster in a temporary directory, on a free port of 127.0.0.1.

PostgreSQL refuses to run as root, so as root the commands run as the ``postgres`` user.
Without the binaries the test is skipped locally and fails under CI (as ``tests.storage.pg``).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PgCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "server.log"), "-w", "start")  # fmt: skip

    def stop(self) -> None:
        """Immediate shutdown: every connection is cut, as when the server dies."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def pause(self) -> None:
        """SIGSTOP the server and every backend: connections stay open, nothing answers
        (a hung host, a VM paused, a stalled storage layer)."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def _pids(self) -> list[int]:
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == postmaster:  # the parent pid
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    def running(self) -> bool:
        status = subprocess.run(
            self._command("pg_ctl", "-D", str(self.data), "status"), capture_output=True
        )
        return status.returncode == 0

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(BIN / tool), *args]
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(self._command(tool, *args), check=True, capture_output=True, timeout=60)


@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A running cluster of this test's own, removed afterwards."""
    if not (BIN / "initdb").exists():
        problem = f"PostgreSQL 15 binaries not found in {BIN}"
        if os.environ.get("CI"):
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    root = Path(tempfile.mkdtemp(prefix="nanoiot-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        cluster = PgCluster(root)
        cluster.start()
        try:
            yield cluster
        finally:
            if cluster.running():
                cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
