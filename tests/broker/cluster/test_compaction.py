"""Delete markers purged from the routes bucket while another member watches it
(``broker.cluster.compaction``): on a private nats-server 2.10 (2.9.12 and later purge
without moving open watches), and refused on the machine's 2.9.10."""

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.cluster.compaction import Compaction
from broker.cluster.link import ClusterLink
from broker.cluster.routes import BUCKET, RouteAnnouncer, RouteTable
from nanoiot.settings import Settings
from tests.natsserver import fresh_cluster_name, modern_nats

GONE = 2000  # filters subscribed to and unsubscribed from for good
LIVE = 500  # filters written while the purge runs


@pytest.fixture
async def modern(tmp_path: Path) -> AsyncIterator[tuple[ClusterLink, ClusterLink]]:
    """Members node-a and node-b of a cluster on a private nats-server 2.10."""
    name = fresh_cluster_name()
    with modern_nats(tmp_path) as url:
        links = []
        try:
            for member in ("node-a", "node-b"):
                settings = Settings(
                    data_dir=tmp_path, nats_url=url, cluster_name=name, node_name=member
                )
                links.append(await ClusterLink.connect(settings))
            yield links[0], links[1]
        finally:
            for link in links:
                await link.close()


async def _stored(link: ClusterLink) -> int:
    """Messages (values and delete markers) the routes bucket's stream holds."""
    info = await link.client.jetstream().stream_info(f"KV_{link.cluster}_{BUCKET}")
    return info.state.messages


async def test_purged_markers_bound_the_bucket_and_no_live_route_is_missed(
    modern: tuple[ClusterLink, ClusterLink],
) -> None:
    a, b = modern
    on_a = RouteAnnouncer(await a.key_value(BUCKET), a.member, RouteTable())
    table = RouteTable()  # node-b's view of the others' routes
    on_b = RouteAnnouncer(await b.key_value(BUCKET), b.member, table)
    await on_a.start()
    await on_b.start()
    try:
        for number in range(GONE):
            on_a.add(f"gone/{number}")
        await on_a.written()
        for number in range(GONE):
            on_a.remove(f"gone/{number}")
        await on_a.written()
        await on_b.reached(on_a.revision)
        assert await _stored(a) == GONE  # one delete marker per filter, kept for good
        assert table.counts() == {}

        compaction = Compaction(a.client, [on_a.bucket], every=0.0, kept=0.0)
        # Routes written while the markers are purged: node-b's watch has some of them
        # still to deliver when a purge comes (before 2.9.12 it skipped them).
        purging = asyncio.ensure_future(compaction.compact())
        for number in range(LIVE):
            on_a.add(f"live/{number}")
            if number % 50 == 0:
                await asyncio.sleep(0)  # let the writer and the purge interleave
        await on_a.written()
        assert await purging == GONE
        await on_b.reached(on_a.revision)

        assert table.counts() == {a.member: LIVE}  # not one live route missed
        assert all(table.members_for(f"live/{n}") == {a.member} for n in range(LIVE))
        assert not table.members_for("gone/7")
        assert await _stored(a) == LIVE  # bounded: the live values only
        assert compaction.purged == GONE
    finally:
        await on_a.stop()
        await on_b.stop()


async def test_markers_younger_than_kept_and_keys_written_again_stay(
    modern: tuple[ClusterLink, ClusterLink],
) -> None:
    a, _ = modern
    bucket = await a.key_value(BUCKET)
    await bucket.put("node-a.again", b"v")
    await bucket.delete("node-a.again")
    await bucket.put("node-a.again", b"v")  # written again after its marker (history=1)
    await bucket.put("node-a.young", b"v")
    await bucket.delete("node-a.young")
    assert await Compaction(a.client, [bucket], every=0.0, kept=3600.0).compact() == 0
    assert await Compaction(a.client, [bucket], every=0.0, kept=0.0).compact() == 1
    assert await bucket.get("node-a.again") is not None
    assert await _stored(a) == 1


async def test_a_key_written_again_after_its_marker_was_read_keeps_its_value(
    modern: tuple[ClusterLink, ClusterLink],
) -> None:
    a, _ = modern
    bucket = await a.key_value(BUCKET)
    await bucket.put("node-a.back", b"v")
    await bucket.delete("node-a.back")
    markers = await bucket.delete_markers(0.0)
    assert [key for key, _ in markers] == ["node-a.back"]
    await bucket.put("node-a.back", b"again")  # subscribed again before the purge
    await bucket.purge(markers)
    entry = await bucket.get("node-a.back")
    assert entry is not None
    assert entry.value == b"again"


async def test_an_old_server_is_named_once_and_nothing_is_purged(
    link: ClusterLink, caplog: pytest.LogCaptureFixture
) -> None:
    """On the machine's nats-server 2.9.10 a purge could make watches skip entries."""
    version = link.client.connected_server_version
    if (version.major, version.minor, version.patch) >= (2, 9, 12):
        pytest.skip(f"the machine's NATS is {version.major}.{version.minor}.{version.patch}")
    bucket = await link.key_value(BUCKET)
    await bucket.put("node-a.x", b"")
    await bucket.delete("node-a.x")
    compaction = Compaction(link.client, [bucket], every=600.0, kept=0.0)
    with caplog.at_level(logging.WARNING, "broker.cluster.compaction"):
        assert not compaction.start()
        assert await compaction.compact() == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "broker.cluster.compaction"]
    assert len(warnings) == 1
    assert "NATS server 2.9.10 is older than 2.9.12" in warnings[0]
    assert "routes bucket grows" in warnings[0]
