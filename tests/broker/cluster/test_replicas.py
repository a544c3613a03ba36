"""Copies of the cluster's JetStream state (``cluster_replicas``, ``broker.cluster.streams``):
on a private NATS cluster of three JetStream servers, buckets and the parked stream are made
with, or brought to, that many copies, and a session claim and a parked frame outlive the
server leading their stream; with one copy they do not. More copies than NATS can keep end
the start in one line, on that cluster and on the machine's single server."""

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.cluster.barriers import READ_WITHIN
from broker.cluster.link import ClusterLink
from broker.cluster.parked import ParkedFrames
from nanoiot.errors import ClusterError, ClusterUnavailableError
from nanoiot.settings import Settings
from tests.broker.cluster.joined import joined
from tests.broker.cluster.stream_copies import copies, stream_info
from tests.natsserver import NATS_URL, NatsCluster, nats_cluster

WAIT = 10.0
# A stream whose leader is gone has none until a follower, silent for its election timeout
# (nats-server's Raft: a random 4-9 s), campaigns and wins; a split vote takes another round.
# The claims' stream, the parked stream and JetStream's own group (which places the reader)
# may each have lost their leader and elect on their own, and an attempt to read started just
# before takes up to a request's timeout more. Measured after a stop: 0 to 8.5 s on a busy
# machine; this allows two whole rounds and then some.
ELECTED_WITHIN = 40.0
CLUSTER = "c"
CLAIMS = f"KV_{CLUSTER}_clients"
PARKED = f"{CLUSTER}_parked"
FRAME = (1, b"acknowledged frame")  # the stream sequence and bytes of the one frame parked
READERS = 6  # each placed by JetStream on any of the 3 copies


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[NatsCluster]:
    with nats_cluster(tmp_path / "nats") as started:
        yield started


@pytest.fixture
def on_servers(servers: NatsCluster, tmp_path: Path) -> Callable[..., Settings]:
    """Settings joining the private NATS cluster (every server in nats_url)."""

    def make(**overrides: Any) -> Settings:
        values = {
            "data_dir": tmp_path, "nats_url": servers.url, "cluster_name": CLUSTER,
            "node_name": "node-a",
        }  # fmt: skip
        return Settings(**(values | overrides))

    return make


async def claim_and_park(link: ClusterLink) -> None:
    """A session claim in the clients bucket and a frame parked for member gone."""
    claims = await link.key_value("clients")
    await claims.put("sensor", b"node-a")
    parked = ParkedFrames(link, 1024 * 1024)
    await parked.start()
    await parked.park("gone", FRAME[1])


async def read_back(link: ClusterLink) -> tuple[bytes | None, tuple[int, bytes] | None]:
    """The claim's value and the first frame parked for member gone (its stream sequence),
    read as a replay reads it: up to the last frame the stream's leader has."""
    entry = await (await link.key_value("clients")).get("sensor")
    parked = ParkedFrames(link, 1024 * 1024)
    last = await parked.last("gone")
    async with parked.reading("gone") as reader:
        frame = await reader.next(WAIT, there=last)
    return entry.value if entry else None, frame


async def until_readable(link: ClusterLink) -> tuple[bytes | None, tuple[int, bytes] | None]:
    """``read_back``, once JetStream answers again: a stream whose leader stopped has none
    until the others elect one (within seconds), and a loaded machine may take longer than a
    request's timeout to answer just after."""
    async with asyncio.timeout(ELECTED_WITHIN):
        while True:
            try:
                return await read_back(link)
            except ClusterUnavailableError:
                await asyncio.sleep(0.1)  # no leader yet: ask again


async def test_buckets_and_the_parked_stream_have_the_configured_copies(
    servers: NatsCluster, on_servers: Callable[..., Settings]
) -> None:
    async with joined(on_servers(cluster_replicas=3)) as link:
        await claim_and_park(link)
        await link.key_value("members", ttl=6.0)
    for stream in (CLAIMS, PARKED, f"KV_{CLUSTER}_members"):
        assert await copies(servers.url, stream) == (3, {"n1", "n2", "n3"}), stream


async def test_existing_streams_are_brought_to_the_setting_with_their_data(
    servers: NatsCluster, on_servers: Callable[..., Settings]
) -> None:
    async with joined(on_servers(cluster_replicas=1)) as link:
        await claim_and_park(link)
    assert (await copies(servers.url, CLAIMS))[0] == 1
    async with joined(on_servers(cluster_replicas=3)) as link:
        await ParkedFrames(link, 2 * 1024 * 1024).start()  # new limits are applied too
        assert await until_readable(link) == (b"node-a", FRAME)
    for stream in (CLAIMS, PARKED):
        assert (await copies(servers.url, stream))[0] == 3, stream
    assert (await stream_info(servers.url, PARKED)).config.max_bytes == 2 * 1024 * 1024
    async with joined(on_servers(cluster_replicas=2)) as link:  # and down again
        await link.key_value("clients")
    assert (await copies(servers.url, CLAIMS))[0] == 2


async def test_a_frame_parked_before_a_rescale_is_read_at_once_from_any_copy(
    servers: NatsCluster, on_servers: Callable[..., Settings]
) -> None:
    """Readers opened while the copies new after a rescale are brought up to date: JetStream
    places each reader's consumer on any copy, and each gets the frame within the time a
    replay waits for one it knows is there. (A reader on a new copy got it only at its
    consumer's idle heartbeat, 5 s, or later: the frame reached the copy after the consumer
    was made there without waking it, and a copy's catch-up stalled for 10 s once.)"""
    async with joined(on_servers(cluster_replicas=1)) as link:
        await claim_and_park(link)
    async with joined(on_servers(cluster_replicas=3)) as link:
        parked = ParkedFrames(link, 1024 * 1024)
        await parked.start()  # 1 -> 3
        last = await parked.last("gone")
        loop, took = asyncio.get_running_loop(), list[float]()
        for _ in range(READERS):
            started = loop.time()
            async with parked.reading("gone") as reader:
                assert await reader.next(READ_WITHIN, there=last) == FRAME, took
            took.append(round(loop.time() - started, 2))
    assert (await copies(servers.url, PARKED))[0] == 3


@pytest.mark.parametrize(
    "end",
    ["stop", pytest.param("kill", marks=pytest.mark.slow)],  # killed: an election, ~5 s
)
async def test_with_3_copies_a_claim_and_a_parked_frame_outlive_their_leader(
    servers: NatsCluster, on_servers: Callable[..., Settings], end: str
) -> None:
    async with joined(on_servers(cluster_replicas=3)) as link:
        await claim_and_park(link)
    placed = (await stream_info(servers.url, PARKED)).cluster
    assert placed is not None
    assert placed.leader is not None
    getattr(servers, end)(placed.leader)
    survivors = ",".join(url for name, url in servers.urls.items() if name != placed.leader)
    async with joined(on_servers(nats_url=survivors, cluster_replicas=3)) as link:
        assert await until_readable(link) == (b"node-a", FRAME)


async def test_with_1_copy_the_claim_is_lost_with_its_server(
    servers: NatsCluster, on_servers: Callable[..., Settings]
) -> None:
    async with joined(on_servers(cluster_replicas=1)) as link:
        await claim_and_park(link)
    _, holders = await copies(servers.url, CLAIMS)
    [holder] = holders
    servers.stop(holder)
    survivors = ",".join(url for name, url in servers.urls.items() if name != holder)
    async with joined(on_servers(nats_url=survivors)) as link:
        # No other server has it: nobody to elect. NATS answers "stream is offline", or
        # nothing (its request goes to the server that is gone).
        with pytest.raises(ClusterUnavailableError, match=r"c_clients: (timeout|stream is off)"):
            await read_back(link)


async def test_more_copies_than_servers_is_one_line(
    on_servers: Callable[..., Settings],
) -> None:
    async with joined(on_servers(cluster_replicas=5)) as link:
        with pytest.raises(ClusterError) as raised:
            await link.key_value("clients")
    assert str(raised.value) == (
        "cluster_replicas is 5, but NATS cannot place 5 copies of stream KV_c_clients (no "
        "suitable peers for placement): it needs 5 JetStream servers up in its cluster; add "
        "servers or lower cluster_replicas"
    )


async def test_copies_on_a_single_server_are_one_line(
    cluster_settings: Callable[..., Settings],
) -> None:
    """The machine's NATS runs JetStream on one server. It refuses a new stream with 3
    copies, but would take an existing one to 3 (and report 3 while it keeps 1): both end
    here, and the existing stream is left as it was."""
    single = "cluster_replicas is 3, but NATS runs JetStream on a single server, which cannot "
    async with joined(cluster_settings()) as link:
        await link.key_value("clients")  # one copy, as before the setting
        await ParkedFrames(link, 1024 * 1024).start()
    async with joined(cluster_settings(cluster_replicas=3)) as link:
        cluster = link.cluster
        for name in ("clients", "routes"):  # existing, and new
            with pytest.raises(ClusterError) as raised:
                await link.key_value(name)
            assert str(raised.value) == (
                f"{single}keep 3 copies of stream KV_{cluster}_{name}: run a NATS cluster of "
                "at least 3 JetStream servers, or set cluster_replicas to 1"
            )
        with pytest.raises(ClusterError, match=f"^{single}keep 3 copies of stream {cluster}_"):
            await ParkedFrames(link, 1024 * 1024).start()
    info = await stream_info(NATS_URL, f"KV_{cluster}_clients")
    assert info.config.num_replicas == 1
