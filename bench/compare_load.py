"""Running load-generator processes (``bench.load_worker``, ``bench.fleet_worker``) from the
benchmark's event loop."""

import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WORKER_TIMEOUT_S = 900.0
REPO = Path(__file__).resolve().parent.parent


def _spec_file(spec: dict[str, Any], directory: Path) -> Path:
    with tempfile.NamedTemporaryFile(
        "w", suffix=".json", dir=directory, delete=False, encoding="utf-8"
    ) as f:
        json.dump(spec, f)
    return Path(f.name)


async def _spawn(
    spec: dict[str, Any], directory: Path, module: str = "bench.load_worker"
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, str(_spec_file(spec, directory)),
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _result(process: asyncio.subprocess.Process) -> dict[str, Any]:
    out, err = await asyncio.wait_for(process.communicate(), WORKER_TIMEOUT_S)
    lines = out.decode().strip().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"load worker failed ({process.returncode}):\n{err.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def run_workers(specs: Sequence[dict[str, Any]], directory: Path) -> list[dict[str, Any]]:
    """Run one worker per spec, all at once; their results in order."""
    processes = [await _spawn(spec, directory) for spec in specs]
    try:
        return list(await asyncio.gather(*(_result(p) for p in processes)))
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


class Worker:
    """A worker that announces its states and takes commands, one JSON line each way
    (``bench.worker_io``)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, spec: dict[str, Any], directory: Path, module: str) -> "Worker":
        return cls(await _spawn(spec, directory, module))

    async def state(self) -> dict[str, Any]:
        """The next line the worker prints; RuntimeError if it exits first."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), WORKER_TIMEOUT_S)
        if not line:
            raise RuntimeError(f"worker exited ({await self.process.wait()}):\n{await self._err()}")
        state: dict[str, Any] = json.loads(line)
        return state

    async def command(self, command: dict[str, Any]) -> dict[str, Any]:
        self.send(command)
        return await self.state()

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")

    async def finish(self) -> dict[str, Any]:
        """Close its stdin; its last line once it exits."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return await _result(self.process)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def _err(self) -> str:
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode()[-3000:]


class Workers:
    """Several workers of one scenario, started, commanded and finished together."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers

    @classmethod
    async def start(
        cls, specs: Sequence[dict[str, Any]], directory: Path, module: str
    ) -> "Workers":
        return cls([await Worker.start(spec, directory, module) for spec in specs])

    async def states(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(w.state() for w in self.workers)))

    async def command(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(w.command(command) for w in self.workers)))

    async def finish(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(w.finish() for w in self.workers)))

    async def kill(self) -> None:
        for worker in self.workers:
            await worker.kill()
