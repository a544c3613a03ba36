"""``nanoiot serve`` as a real process for tests: its stdout up to ``ready:``, and its stderr
(the log) read line by line in a thread (``Output``), so a test can wait for a log line with a
bound.

``start`` launches it and waits until it is ready (``launch`` and ``until_ready``, for
several at once), ``serving`` is a context manager around that; the reliability tests'
``ServeProcess`` (to kill and restart) starts it the same way."""

import asyncio
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from auth.certificate import parse_credential
from nanoiot.cli.common import open_store
from nanoiot.settings import load_settings
from tests.certgen import issue
from tests.cli.conftest import NANOIOT
from tests.e2e.harness import write_pem
from tests.output import Output

WAIT = 30.0  # bound on any one wait: a worker's start includes a fresh interpreter


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
    return until_ready(launch(env, cwd, *args))


def launch(env: dict[str, str], cwd: Path, *args: str) -> Served:
    """``nanoiot serve *args`` started, not waited for (``until_ready``): a caller starting
    several lets their interpreters start at once."""
    process = subprocess.Popen(
        [NANOIOT, "serve", *args], env=env, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
    )  # fmt: skip
    return Served(process, [], Output(process), Output(process, process.stdout))


def until_ready(served: Served) -> Served:
    """``served`` once it wrote ``ready:``; killed if not ready within WAIT."""
    stdout = served._stdout
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


def provision_device(env: Mapping[str, str], directory: Path, name: str) -> Path:
    """A device with a fresh certificate, in the store that ``nanoiot`` run with ``env`` in
    ``directory`` uses; its .nopass.pem file. What ``nanoiot device add`` and ``credentials
    add-x509`` do, done in this process: a command per step cost a Python start-up each, and
    the CLI has tests of its own."""
    issued = issue(name)
    settings = load_settings(environ=env, cwd=directory)

    async def add() -> None:
        async with open_store(settings) as store:
            credential = parse_credential(issued.cert_pem)
            await store.create_device_with_credential(name, x509=credential)

    asyncio.run(add())
    return write_pem(directory, issued, name)
