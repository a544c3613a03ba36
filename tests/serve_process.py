"""``nanoiot serve`` as a real process for tests: its stdout up to ``ready:``, and its stderr
(the log) read line by line in a thread, so a test can wait for a log line with a bound."""

import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.certgen import issue
from tests.cli.conftest import NANOIOT, Cli
from tests.e2e.harness import write_pem

WAIT = 30.0  # bound on any one wait: a worker's start includes a fresh interpreter


class Output:
    """A process's stderr, line by line, that a test can wait on."""

    def __init__(self, process: "subprocess.Popen[str]") -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        assert process.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: "Iterator[str]") -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def join(self) -> None:
        self._thread.join(WAIT)  # ends at end of stream

    def wait_for(self, pattern: str, *, after: int = 0) -> re.Match[str]:
        """The first line from index ``after`` on that matches ``pattern``."""
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            return next(filter(None, map(regex.search, self.lines[after:])), None)

        with self._changed:
            if not self._changed.wait_for(found, WAIT):
                raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.lines)}")
        match = found()
        assert match is not None
        return match


@contextmanager
def serving(
    env: dict[str, str], cwd: Path, *args: str
) -> Iterator[tuple["subprocess.Popen[str]", list[str], Output]]:
    process = subprocess.Popen(
        [NANOIOT, "serve", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = Output(process)
    stdout: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            stdout.append(line)
            if line.startswith("ready:"):
                break
        else:
            raise AssertionError(f"serve exited early: {''.join(stdout)}{''.join(stderr.lines)}")
        yield process, stdout, stderr
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(WAIT)
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()
        stderr.join()
        process.stderr.close()


def provision_device(nanoiot: Cli, directory: Path, name: str) -> Path:
    """A device registered through the CLI with a fresh certificate; its .nopass.pem file."""
    nanoiot("device", "add", name)
    issued = issue(name)
    certificate = directory / f"{name}.pub.pem"
    certificate.write_text(issued.cert_pem)
    nanoiot("credentials", "add-x509", name, str(certificate))
    return write_pem(directory, issued, name)
