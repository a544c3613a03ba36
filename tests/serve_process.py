"""``nanoiot serve`` as a real process for tests: its stdout up to ``ready:``, and its stderr
(the log) read line by line in a thread, so a test can wait for a log line with a bound.

``start`` launches it, ``serving`` is a context manager around that; the reliability tests'
``ServeProcess`` (to kill and restart) starts it the same way."""

import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.certgen import issue
from tests.cli.conftest import NANOIOT, Cli
from tests.e2e.harness import write_pem

WAIT = 30.0  # bound on any one wait: a worker's start includes a fresh interpreter


class Output:
    """A process's stderr (or another of its streams), line by line, that a test can wait on."""

    def __init__(self, process: "subprocess.Popen[str]", stream: "IO[str] | None" = None) -> None:
        self.lines: list[str] = []
        self.ended = False  # the stream reached its end: no line comes any more
        self._changed = threading.Condition()
        stream = stream if stream is not None else process.stderr
        assert stream is not None
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: "Iterator[str]") -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def join(self) -> None:
        self._thread.join(WAIT)  # ends at end of stream

    def wait_for(self, pattern: str, *, after: int = 0, within: float = WAIT) -> re.Match[str]:
        """The first line from index ``after`` on that matches ``pattern``; AssertionError if
        none came within ``within`` seconds or the stream ended without one."""
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            return next(filter(None, map(regex.search, self.lines[after:])), None)

        with self._changed:
            self._changed.wait_for(lambda: self.ended or found() is not None, within)
            match = found()
        if match is None:
            raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.lines)}")
        return match


@dataclass
class Served:
    """A ``nanoiot serve`` started by ``start``: its stdout up to the ``ready:`` line (the
    last), and its log."""

    process: "subprocess.Popen[str]"
    stdout: list[str]
    log: Output
    _stdout: Output

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        """Signal the process unless it has ended; wait for it and for the rest of its output."""
        process = self.process
        if process.poll() is None:
            process.send_signal(how)
        process.wait(WAIT)
        self.log.join()
        self._stdout.join()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def start(env: dict[str, str], cwd: Path, *args: str) -> Served:
    """``nanoiot serve *args`` started and ready; killed if not ready within WAIT."""
    process = subprocess.Popen(
        [NANOIOT, "serve", *args], env=env, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
    )  # fmt: skip
    stdout = Output(process, process.stdout)
    served = Served(process, [], Output(process), stdout)
    try:
        stdout.wait_for(r"^ready:")
    except BaseException as exc:
        served.stop(signal.SIGKILL)
        if isinstance(exc, AssertionError):
            raise AssertionError(
                f"serve not ready: {''.join(stdout.lines)}{''.join(served.log.lines)}"
            ) from None
        raise
    ready = next(n for n, line in enumerate(stdout.lines) if line.startswith("ready:"))
    served.stdout = stdout.lines[: ready + 1]
    return served


@contextmanager
def serving(
    env: dict[str, str], cwd: Path, *args: str
) -> Iterator[tuple["subprocess.Popen[str]", list[str], Output]]:
    served = start(env, cwd, *args)
    try:
        yield served.process, served.stdout, served.log
    finally:
        served.stop()


def provision_device(nanoiot: Cli, directory: Path, name: str) -> Path:
    """A device registered through the CLI with a fresh certificate; its .nopass.pem file."""
    nanoiot("device", "add", name)
    issued = issue(name)
    certificate = directory / f"{name}.pub.pem"
    certificate.write_text(issued.cert_pem)
    nanoiot("credentials", "add-x509", name, str(certificate))
    return write_pem(directory, issued, name)
