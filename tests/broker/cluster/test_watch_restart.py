"""A key-value watch goes on at once after its NATS server restarted on its store: each
watch is remade on the reconnection from the revision after the last it gave, so a write
made once the server is back is seen within a second or two, not after nats-py's ordered
consumer missed two 5 s idle heartbeats (up to ~20 s), and nothing given before the restart
is given again. A private ``nats-server -js`` (``tests.natsserver.restartable_nats``)."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.cluster.kv import KeyValue, Watch
from broker.cluster.link import ClusterLink
from nanoiot.errors import ClusterError
from nanoiot.settings import Settings
from tests.natsserver import RestartableNats, restartable_nats

SEEN_WITHIN = 2.0  # seconds from the write after the restart to the watch giving it
BACK_WITHIN = 20.0  # seconds for the client to reconnect and JetStream to take writes
POLL = 0.1  # seconds between writes while JetStream recovers its store (no event to wait on)
KEYS = 2_000  # in the bucket before the restart


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RestartableNats]:
    with restartable_nats(tmp_path / "nats") as nats_server:
        yield nats_server


async def joined(server: RestartableNats, tmp_path: Path) -> ClusterLink:
    settings = Settings(
        data_dir=tmp_path, nats_url=server.url, cluster_name="watched", node_name="node-a"
    )
    return await ClusterLink.connect(settings)


async def restarted(server: RestartableNats, link: ClusterLink) -> None:
    """The server killed and started again on its store; until the link is back on it."""
    back = asyncio.Event()
    link.on_reconnected(back.set)
    await asyncio.to_thread(server.kill)
    await asyncio.to_thread(server.start)
    async with asyncio.timeout(BACK_WITHIN):
        await back.wait()


async def written(bucket: KeyValue, key: str, value: bytes) -> int:
    """Write once JetStream takes it again (it recovers its streams after the listener is up)."""
    async with asyncio.timeout(BACK_WITHIN):
        while True:
            try:
                return await bucket.put(key, value)
            except ClusterError:
                await asyncio.sleep(POLL)


async def changes(watch: Watch, count: int) -> list[tuple[str, bytes | None]]:
    found = []
    for _ in range(count):
        change = await watch.value()
        assert change is not None
        found.append(change)
    return found


async def test_a_watch_gives_a_write_made_after_a_restart_at_once(
    server: RestartableNats, tmp_path: Path
) -> None:
    link = await joined(server, tmp_path)
    try:
        bucket = await link.key_value("routes")
        await bucket.put("a", b"1")
        watch = await bucket.watch()
        assert await changes(watch, 1) == [("a", b"1")]
        assert await watch.value() is None  # every value there was at the start
        await bucket.put("b", b"2")
        assert await changes(watch, 1) == [("b", b"2")]
        await restarted(server, link)
        revision = await written(bucket, "c", b"3")
        async with asyncio.timeout(SEEN_WITHIN):  # not remade: 19 s
            seen = await changes(watch, 1)
        assert seen == [("c", b"3")], "a value given before the restart came again"
        assert watch.revision == revision
        await bucket.put("a", b"4")  # and it goes on, each change once
        assert await changes(watch, 1) == [("a", b"4")]
        await watch.stop()
    finally:
        await link.close()


async def test_a_remade_watch_reads_what_changed_not_the_bucket(
    server: RestartableNats, tmp_path: Path
) -> None:
    """Remade from the revision after the last it gave: the keys given before the restart are
    not read again, and a deletion and a purge it had not given yet are given."""
    link = await joined(server, tmp_path)
    try:
        bucket = await link.key_value("routes")
        keys = [f"k{n}" for n in range(KEYS)]
        await asyncio.gather(*(bucket.put(key, b"1") for key in keys))
        watch = await bucket.watch()
        assert len(await changes(watch, KEYS)) == KEYS
        assert await watch.value() is None
        await bucket.delete("k1")  # not given before the restart
        nats_bucket = await link.client.jetstream().key_value(bucket.bucket)
        await nats_bucket.purge("k2")
        await restarted(server, link)
        await written(bucket, "c", b"3")
        async with asyncio.timeout(SEEN_WITHIN):
            seen = await changes(watch, 3)
        assert seen == [("k1", None), ("k2", None), ("c", b"3")]
        # Not the bucket's KEYS values again: at most the changes made since a remake began
        # (two remakes may overlap, the second begun before the first's were given).
        assert watch.repeated <= len(seen)
        await watch.stop()
    finally:
        await link.close()
