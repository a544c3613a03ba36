"""A JetStream stream as NATS reports it, asked from outside the broker's code: its
configuration, and how many copies it keeps on which servers (``cluster_replicas``)."""

import nats
from nats.js import api

from tests.natsserver import WAIT


async def stream_info(urls: str, stream: str) -> api.StreamInfo:
    """The stream as JetStream reports it, asked from outside the broker's code."""
    client = await nats.connect(servers=urls.split(","))
    try:
        return await client.jetstream(timeout=WAIT).stream_info(stream)
    finally:
        await client.close()


async def copies(urls: str, stream: str) -> tuple[int, set[str]]:
    """(the stream's configured copies, the servers that hold one)."""
    info = await stream_info(urls, stream)
    assert info.cluster is not None
    peers = {peer.name or "?" for peer in info.cluster.replicas or []}
    return info.config.num_replicas or 1, peers | {info.cluster.leader or "(electing)"}
