"""Delete markers purged from the routes bucket while another member watches it
(``broker.cluster.compaction``): on a private nats-server 2.10 (2.9.12 and later purge
without moving open watches), and refused on the machine's 2.9.10."""

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.cluster.compaction import Compaction
from broker.cluster.kv import KeyValue
from broker.cluster.link import ClusterLink
from broker.cluster.routes import BUCKET, RouteAnnouncer, RouteTable
from broker.cluster.sessions import BUCKET as CLIENTS
from nanoiot.settings import Settings
from tests.natsserver import fresh_cluster_name, modern_nats

GONE = 2000  # filters subscribed to and unsubscribed from for good
LIVE = 500  # filters written while the purge runs
FEW = 20  # delete markers there before a compaction starts
MANY = 100  # written after
WAIT = 30.0


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


async def _added_and_removed(announcer: RouteAnnouncer, prefix: str, count: int) -> None:
    """``count`` filters subscribed to, written, then unsubscribed from: a marker each."""
    for number in range(count):
        announcer.add(f"{prefix}/{number}")
    await announcer.written()
    for number in range(count):
        announcer.remove(f"{prefix}/{number}")
    await announcer.written()


async def _claims_stored(link: ClusterLink) -> int:
    info = await link.client.jetstream().stream_info(f"KV_{link.cluster}_{CLIENTS}")
    return info.state.messages


async def test_one_member_purges_what_its_watches_noted_reading_each_bucket_whole_once(
    modern: tuple[ClusterLink, ClusterLink], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = modern
    reads: list[str] = []  # buckets read whole
    whole = KeyValue.delete_markers

    async def counted(bucket: KeyValue, older_than: float) -> list[tuple[str, int]]:
        reads.append(bucket.bucket)
        return await whole(bucket, older_than)

    monkeypatch.setattr(KeyValue, "delete_markers", counted)
    on_a = RouteAnnouncer(await a.key_value(BUCKET), a.member, RouteTable())
    on_b = RouteAnnouncer(await b.key_value(BUCKET), b.member, RouteTable())
    claims_a, claims_b = await a.key_value(CLIENTS), await b.key_value(CLIENTS)
    await on_a.start()
    await on_b.start()
    await _added_and_removed(on_b, "early", FEW)  # markers there before the notes began
    await claims_b.put("early", b"node-b")
    await claims_b.delete("early")
    first = Compaction(a.client, [on_a.bucket, claims_a], every=3600.0, kept=0.0)
    other = Compaction(b.client, [on_b.bucket, claims_b], every=3600.0, kept=0.0)
    first.watched, other.watched = {on_a.bucket.bucket}, {on_b.bucket.bucket}
    other.first = lambda: False  # node-a is the lowest-named live member
    assert first.start()
    assert other.start()
    try:
        async with asyncio.timeout(WAIT):
            # Its first pass: the routes read whole once, the claims by its own watch.
            assert await first.compact() == FEW + 1
            assert reads == [on_a.bucket.bucket]
            assert await _stored(a) == 0
            assert await _claims_stored(a) == 0
            # Later markers, of node-b's routes and claims: noted by node-a's watches.
            await _added_and_removed(on_b, "later", MANY)
            for number in range(MANY):
                await claims_b.put(f"later{number}", b"node-b")
                await claims_b.delete(f"later{number}")
            await on_a.reached(on_b.revision)  # node-a's table (and notes) has every marker
            assert await other.compact() == 0  # not the first: nothing read, nothing purged
            assert len(on_b.bucket.markers or ()) == 0  # its notes of old markers dropped
            assert await first.compact() >= MANY  # the routes' markers, and claims' noted
            while await _claims_stored(a):  # the claims watch delivers as it goes
                await first.compact()
            assert await _stored(a) == 0
            assert first.purged == FEW + 1 + 2 * MANY
            assert reads == [on_a.bucket.bucket]  # never read whole again
            # No longer the first: its claims watch closed; the first again: read whole.
            first.first = lambda: False
            assert await first.compact() == 0
            assert not first._watches
            first.first = lambda: True
            await first.compact()
            assert reads == [on_a.bucket.bucket] * 2
    finally:
        await first.stop()
        await other.stop()
        await on_a.stop()
        await on_b.stop()
