"""``bench.cluster_bench`` stopped by a signal stops the brokers it started.

Its ``run`` is replaced by one that starts a node with the bench's own launcher
(``nanoiot_node``) and waits: what a benchmark does between its nodes' start and stop. SIGTERM
used to end the bench at once and leave the node running (its port, its store, its NATS
subscriptions in a cluster run).
"""

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60.0

_BENCH = """
import asyncio, sys
from bench import cluster_bench
from bench.compare_setup import make_pki, prepare_nanoiot_store

async def run(args, work):
    pki, made = make_pki(work, {"ec": 1})
    await prepare_nanoiot_store(work / "nanoiot-data", 0, made["ec"])
    async with cluster_bench.nanoiot_node(work / "nanoiot-data", pki, work, "a", {}) as node:
        print(node.pid, flush=True)
        await asyncio.Event().wait()

cluster_bench.run = run
sys.argv = ["cluster_bench", "--no-save"]
cluster_bench.main()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _line(process: "subprocess.Popen[str]") -> str:
    """The bench's next line, within WAIT_S."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], WAIT_S)
    assert ready, "the node did not start"
    return process.stdout.readline()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_bench_stops_the_nodes_it_started(signum: signal.Signals) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    bench = subprocess.Popen(
        [sys.executable, "-c", _BENCH], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    node = 0
    try:
        node = int(_line(bench))
        assert _alive(node)
        bench.send_signal(signum)
        code = bench.wait(WAIT_S)
        # The bench stopped the node and reaped it before it exited.
        assert not _alive(node), "the node outlived the bench"
        assert code == 128 + signum  # as a shell reports a process a signal ended
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        if node and _alive(node):
            os.kill(node, signal.SIGKILL)
        assert bench.stdout is not None
        bench.stdout.close()
