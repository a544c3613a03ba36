"""Running load-generator processes (``bench.load_worker``) from the benchmark's event loop."""

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


async def _spawn(spec: dict[str, Any], directory: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.load_worker", str(_spec_file(spec, directory)),
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


class IdleFleet:
    """Worker processes holding idle connections until ``release()``."""

    def __init__(self, processes: list[asyncio.subprocess.Process]) -> None:
        self.processes = processes

    @classmethod
    async def open(cls, specs: Sequence[dict[str, Any]], directory: Path) -> "IdleFleet":
        return cls([await _spawn(spec, directory) for spec in specs])

    async def ready(self) -> tuple[int, int]:
        """(open connections, failures), once every worker has opened all of its own."""
        opened = failed = 0
        for process in self.processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), WORKER_TIMEOUT_S)
            if not line:
                raise RuntimeError("idle worker exited before it was ready")
            state = json.loads(line)
            opened += state["ready"]
            failed += state["failures"]
        return opened, failed

    async def release(self) -> list[dict[str, Any]]:
        results = []
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in self.processes:
            results.append(await _result(process))
        return results

    async def kill(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
