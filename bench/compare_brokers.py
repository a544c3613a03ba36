"""The three brokers of the side-by-side benchmark, each a subprocess on a free loopback port.

``started(kind, ...)`` yields a ``BrokerProcess`` once the broker accepts TLS connections and
stops it (SIGTERM, killed if it hangs) afterwards. Its CPU time and resident memory come from
/proc, so what the load generator costs never counts against a broker.
"""

import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from bench._report import process_cpu_seconds
from bench.compare_setup import Pki, amqtt_config, mosquitto_conf, nanoiot_env

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
MOSQUITTO = Path("/usr/sbin/mosquitto")
WAIT_S = 60.0
_READY = re.compile(rb"^ready: (?:mqtts://[^\s]+:)?(\d+)\s*$")
_ADMIN = b"admin API and web UI: "

NANOIOT, MOSQUITTO_NAME, AMQTT = "NanoIoT", "Mosquitto", "amqtt"
KINDS = (NANOIOT, MOSQUITTO_NAME, AMQTT)


@dataclass
class BrokerProcess:
    name: str
    pid: int
    port: int
    ca_file: Path  # what clients verify the server certificate with
    _drain: "asyncio.Task[None] | None" = field(default=None, repr=False)
    http_url: str = ""  # NanoIoT's admin API (its /metrics)
    admin_token: str = field(default="", repr=False)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        """VmRSS of the broker process (proc(5))."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {self.pid}")


def raise_fd_limit() -> int:
    """Soft open-file limit up to the hard one, for us and the brokers we spawn."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    """A loopback port free right now (for brokers that cannot bind port 0 and tell us)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def started(
    kind: str, pki: Pki, work: Path, logs: Path | None = None
) -> AsyncIterator[BrokerProcess]:
    """Start ``kind`` (NANOIOT, MOSQUITTO_NAME or AMQTT) with its files under ``work`` and its
    stderr in ``logs`` (default: ``work``)."""
    log_file = (logs or work) / f"{kind}.log"
    token = secrets.token_urlsafe(32)
    if kind == NANOIOT:
        command = [str(Path(sys.executable).with_name("nanoiot")), "serve"]
        env = nanoiot_env(work / "nanoiot-data", pki, token)
        port = 0
    elif kind == MOSQUITTO_NAME:
        port = free_port()
        command = [str(MOSQUITTO), "-c", str(mosquitto_conf(work, pki, port))]
        env = None
    else:
        port = free_port()
        config = work / "amqtt.json"
        config.write_text(json.dumps(amqtt_config(pki, port)))
        command = [sys.executable, "-m", "bench.amqtt_server", str(config)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log_file.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=work, env=env, stdout=asyncio.subprocess.PIPE, stderr=log
        )
        drain: asyncio.Task[None] | None = None
        try:
            assert process.stdout is not None
            http_url = ""
            if kind == MOSQUITTO_NAME:
                await _listening(port, process, log_file)
            else:
                port, http_url = await _ready_port(process, log_file)
            drain = asyncio.create_task(_discard(process.stdout))
            yield BrokerProcess(kind, process.pid, port, pki.ca_file, drain, http_url, token)
        finally:
            await _stop(process)
            if drain is not None:
                await drain


async def _ready_port(process: asyncio.subprocess.Process, log_file: Path) -> tuple[int, str]:
    """The MQTT port of the ``ready:`` line, and NanoIoT's admin URL (printed before it)."""
    assert process.stdout is not None
    http_url = ""
    async with asyncio.timeout(WAIT_S):
        while line := await process.stdout.readline():
            if line.startswith(_ADMIN):
                http_url = line[len(_ADMIN) :].split()[0].decode().removesuffix("/ui")
            if found := _READY.match(line):
                return int(found.group(1)), http_url
    await process.wait()
    raise RuntimeError(f"broker exited with {process.returncode}:\n{_tail(log_file)}")


async def _listening(port: int, process: asyncio.subprocess.Process, log_file: Path) -> None:
    """Polls the port (an external process: no event to wait on), bounded by WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if process.returncode is not None:
            break
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(HOST, port)
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"broker not listening on {port}:\n{_tail(log_file)}")


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


def _tail(path: Path, size: int = 2000) -> str:
    return path.read_text(errors="replace")[-size:]


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()
