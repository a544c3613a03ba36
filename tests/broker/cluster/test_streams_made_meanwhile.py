"""A stream another member makes between this member's look for it and its making of it
(``broker.cluster.streams``): members starting together. The start goes on with the stream
as the other member made it (the bucket) or brings it to this member's configuration (the
parked stream); a stream of another name holding the same subjects still ends the start.

On the machine's NATS (a single server). The interleaving is forced: the look for the stream
is answered "not found" just after another connection made it, as it happens when the other
member's request comes between the two."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from broker.cluster.streams import open_bucket, open_stream
from tests.natsserver import NATS_URL, WAIT


class Overtaken(JetStreamContext):
    """JetStream whose first look for a stream comes just before ``other`` makes it."""

    def __init__(self, conn: Client, other: Callable[[], Awaitable[object]]) -> None:
        super().__init__(conn, timeout=WAIT)
        self._other: Callable[[], Awaitable[object]] | None = other

    async def stream_info(self, name: str, subjects_filter: str | None = None) -> api.StreamInfo:
        if self._other is not None:
            other, self._other = self._other, None
            await other()
            raise nats.js.errors.NotFoundError(code=404, err_code=10059, description="not found")
        return await super().stream_info(name, subjects_filter)


@asynccontextmanager
async def connected() -> AsyncIterator[Client]:
    client = await nats.connect(NATS_URL)
    try:
        yield client
    finally:
        await client.close()


async def test_a_bucket_made_meanwhile_with_another_age_is_opened_as_made(
    cluster_name: str,
) -> None:
    bucket = f"{cluster_name}_members"
    async with connected() as other, connected() as mine:
        other_js = other.jetstream(timeout=WAIT)
        made = Overtaken(mine, partial(other_js.create_key_value, bucket=bucket, ttl=30.0))
        store = await open_bucket(made, bucket, replicas=1, ttl=5.0)
        await store.put("a", b"alive")
        assert (await (await other_js.key_value(bucket)).get("a")).value == b"alive"
        kept = await other_js.stream_info(f"KV_{bucket}")
        assert kept.config.max_age == 30.0  # the first maker's: members do not fight over it


async def test_a_bucket_made_meanwhile_alike_is_opened(cluster_name: str) -> None:
    bucket = f"{cluster_name}_clients"
    async with connected() as other, connected() as mine:
        other_js = other.jetstream(timeout=WAIT)
        make = partial(other_js.create_key_value, bucket=bucket, history=1)
        store = await open_bucket(Overtaken(mine, make), bucket, replicas=1, ttl=None)
        await store.put("sensor", b"node-a")
        assert (await (await other_js.key_value(bucket)).get("sensor")).value == b"node-a"


async def test_a_stream_made_meanwhile_is_brought_to_this_members_configuration(
    cluster_name: str,
) -> None:
    name = f"{cluster_name}_parked"
    wanted = api.StreamConfig(
        name=name, subjects=[f"{cluster_name}.parked.*"], max_bytes=1 << 20,
        storage=api.StorageType.FILE,
    )  # fmt: skip
    theirs = api.StreamConfig(
        name=name, subjects=[f"{cluster_name}.parked.*"], max_bytes=1 << 16,
        storage=api.StorageType.FILE,
    )  # fmt: skip
    async with connected() as other, connected() as mine:
        other_js = other.jetstream(timeout=WAIT)
        await open_stream(Overtaken(mine, partial(other_js.add_stream, theirs)), wanted)
        assert (await other_js.stream_info(name)).config.max_bytes == 1 << 20


async def test_another_stream_holding_the_subjects_still_ends_the_start(
    cluster_name: str,
) -> None:
    bucket = f"{cluster_name}_routes"
    holder = api.StreamConfig(
        name=f"{cluster_name}_holder", subjects=[f"$KV.{bucket}.>"], storage=api.StorageType.MEMORY
    )
    async with connected() as mine:
        js = mine.jetstream(timeout=WAIT)
        await js.add_stream(holder)
        with pytest.raises(nats.js.errors.APIError) as refused:
            await open_bucket(js, bucket, replicas=1, ttl=None)
        assert refused.value.err_code == 10065
