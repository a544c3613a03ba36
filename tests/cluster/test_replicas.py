"""``nanoiot serve`` with ``cluster_replicas`` 3: on a NATS cluster of three JetStream servers
every bucket and stream the node makes has three copies, one on each server; on the machine's
single NATS server the start ends in one line saying what to do."""

import asyncio
import re
import subprocess
from pathlib import Path

import nats
import pytest

from tests.cli.conftest import NANOIOT
from tests.cluster.nodes import cluster
from tests.natsserver import nats_cluster
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

STREAMS = ("KV_{}_routes", "KV_{}_retained", "KV_{}_clients", "KV_{}_wills",
           "KV_{}_departures", "KV_{}_members", "KV_{}_devices", "{}_parked")  # fmt: skip


async def copies(urls: str) -> dict[str, tuple[int, int]]:
    """Every stream on the NATS cluster: (configured copies, servers holding one)."""
    client = await nats.connect(servers=urls.split(","))
    try:
        found: dict[str, tuple[int, int]] = {}
        for info in await client.jetstream().streams_info():
            assert info.cluster is not None
            held = len(info.cluster.replicas or []) + (info.cluster.leader is not None)
            found[info.config.name or ""] = (info.config.num_replicas or 1, held)
        return found
    finally:
        await client.close()


def test_a_node_keeps_every_bucket_and_stream_on_three_servers(tmp_path: Path) -> None:
    with nats_cluster(tmp_path / "nats") as servers, cluster(tmp_path) as nodes:
        nodes.start("a", NANOIOT_NATS_URL=servers.url, NANOIOT_CLUSTER_REPLICAS="3")
        name = nodes.env["NANOIOT_CLUSTER_NAME"]
        assert asyncio.run(copies(servers.url)) == {s.format(name): (3, 3) for s in STREAMS}


def test_three_copies_on_a_single_nats_server_is_one_line(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        result = subprocess.run(
            [NANOIOT, "serve"], env=nodes.env | {"NANOIOT_CLUSTER_REPLICAS": "3"},
            cwd=tmp_path, capture_output=True, text=True, timeout=WAIT, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert re.fullmatch(
        r"error: cluster_replicas is 3, but NATS runs JetStream on a single server, which "
        r"cannot keep 3 copies of stream \S+: run a NATS cluster of at least 3 JetStream "
        r"servers, or set cluster_replicas to 1",
        last,
    ), result.stderr
