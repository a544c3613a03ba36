"""A real ``nanoiot serve`` process for the benchmarks: started on a free port, read its
"ready:" line, its CPU time from /proc, stopped with SIGTERM (killed if it hangs)."""

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench._report import process_cpu_seconds

HOST = "127.0.0.1"
WAIT_S = 30.0  # bound on any single wait: broker start, one connect, broker stop


@dataclass(frozen=True)
class Broker:
    pid: int
    port: int
    server_cert: Path
    startup_wall_s: float
    startup_cpu_s: float

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)


def broker_env(data_dir: Path) -> dict[str, str]:
    """This environment without any NanoIoT setting, plus the benchmark's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NANOIOT_", "MQTT_SSL_"))
    }
    env.update(
        NANOIOT_DATA_DIR=str(data_dir),
        MQTT_SSL_BIND_ADDRESS=HOST,
        MQTT_SSL_BIND_PORT="0",
        NANOIOT_HTTP_PORT="0",
        NANOIOT_LOG_LEVEL="WARNING",
    )
    return env


@contextlib.asynccontextmanager
async def running_broker(data_dir: Path, **env: str) -> AsyncIterator[Broker]:
    """``nanoiot serve`` on ``data_dir`` (cwd: its parent, so no conf/nanoiot.yaml is read),
    with ``env`` added to its environment; stopped with SIGTERM, killed if it does not exit,
    in any case."""
    executable = Path(sys.executable).with_name("nanoiot")
    log_file = data_dir.parent / f"{data_dir.name}-broker.log"
    with log_file.open("wb") as log:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            executable, "serve", cwd=data_dir.parent, env={**broker_env(data_dir), **env},
            stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
        try:
            port = await _ready_port(process, log_file)
            wall = time.perf_counter() - started
            cpu = process_cpu_seconds(process.pid)
            yield Broker(process.pid, port, data_dir / "certs/mqttserver.pub.pem", wall, cpu)
        finally:
            await _stop(process)


async def _ready_port(process: asyncio.subprocess.Process, log_file: Path) -> int:
    """The port of the "ready: mqtts://HOST:PORT" line; error if the broker exits first."""
    assert process.stdout is not None
    async with asyncio.timeout(WAIT_S):
        while line := await process.stdout.readline():
            if line.startswith(b"ready: mqtts://"):
                return int(line.decode().rsplit(":", 1)[1])
    await process.wait()
    raise RuntimeError(f"broker exited with {process.returncode} before ready:\n{_tail(log_file)}")


def _tail(path: Path, size: int = 2000) -> str:
    return path.read_text(errors="replace")[-size:]


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), WAIT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
