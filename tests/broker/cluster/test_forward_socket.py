"""A member forwarding faster than NATS takes in: the frames wait in the forwarder's outbox,
within ``max_forward_buffer`` (the rest dropped, QoS 0), never in the NATS connection's socket
buffer without bound (``broker.cluster.forward``, ``ClusterLink.taken_in``).

Before, nats-py's publish never waited for the socket: its buffer grew with what one device
published (110 MB for a device publishing 200 KB messages to a subscriber on another node),
and the member's heartbeat, written behind it, came too late, so that the member fenced
itself off and closed every client's connection. Here the member's NATS connection goes
through a proxy that stops reading it (a NATS that does not keep up), on the machine's NATS.
"""

import asyncio
from collections.abc import Callable

from broker.cluster.confirmations import ignore_outcome
from broker.cluster.link import REQUEST_TIMEOUT, ClusterLink
from broker.router import Message
from nanoiot.settings import Settings
from tests.broker.cluster.parking import MIB, parking_forwarder
from tests.cluster.proxy import nats_proxy

MESSAGE = Message("devices/d/telemetry", b"x" * (64 * 1024), 0)
# 40 MiB: more than the kernel's buffers on both sides of the proxy hold.
MESSAGES = 640
OTHER = "other-member"


def unsent(link: ClusterLink) -> int:
    """The bytes handed to the NATS client that its socket has not taken yet: those its
    flusher has not written, and those written that wait in the transport's buffer."""
    transport = link.client._transport
    assert transport is not None
    writer = transport._io_writer  # type: ignore[attr-defined]
    return link.client.pending_data_size + int(writer.transport.get_write_buffer_size())


async def test_a_sender_faster_than_nats_fills_its_outbox_not_the_socket_buffer(
    cluster_settings: Callable[..., Settings],
) -> None:
    with nats_proxy() as proxy:
        link = await ClusterLink.connect(cluster_settings(nats_url=proxy.url))
        try:
            async with parking_forwarder(link, max_buffer=MIB) as (forwarder, _parked):
                proxy.hold()
                most = 0
                for _ in range(MESSAGES):
                    assert forwarder.forward([OTHER], MESSAGE, [OTHER], {}) is None  # QoS 0
                    await asyncio.sleep(0)  # the turn ends: the frame goes to the sender
                    most = max(most, unsent(link))
                assert forwarder.frames_dropped > 0, f"{most} bytes waited for the socket"
                assert most <= 2 * MIB
                proxy.release()
                # The connection serves the member's other calls again at once (a heartbeat
                # is a key-value write like this one).
                bucket = await link.key_value("probe")
                async with asyncio.timeout(REQUEST_TIMEOUT * 2):
                    await bucket.put("written", b"1")
        finally:
            proxy.release()  # else closing the connection would wait for NATS to read it
            await link.close()


async def test_a_qos_0_flood_leaves_room_for_a_qos_1_message(
    cluster_settings: Callable[..., Settings],
) -> None:
    """QoS 0 frames fill half of ``max_forward_buffer`` at most: a QoS 1 message (its
    publisher waits for its PUBACK) is still queued behind a flood that fills it, where
    before it failed at once and its publisher was disconnected, over and over."""
    with nats_proxy() as proxy:
        link = await ClusterLink.connect(cluster_settings(nats_url=proxy.url))
        try:
            async with parking_forwarder(link, max_buffer=MIB) as (forwarder, _parked):
                proxy.hold()
                for _ in range(MESSAGES):
                    forwarder.forward([OTHER], MESSAGE, [OTHER], {})
                    await asyncio.sleep(0)
                assert forwarder.frames_dropped > 0  # full, for QoS 0
                # What room is left, filled up with smaller ones, until one is dropped: less
                # than one of them is left.
                small = Message("devices/d/telemetry", b"x" * 1000, 0)
                dropped = forwarder.frames_dropped
                for _ in range(MESSAGES):
                    forwarder.forward([OTHER], small, [OTHER], {})
                    await asyncio.sleep(0)
                    if forwarder.frames_dropped > dropped:
                        break
                dropped = forwarder.frames_dropped
                rpc = Message("devices/d/rpc", b"x" * 1100, 1)
                confirmed = forwarder.forward([OTHER], rpc, [OTHER], {})
                assert confirmed is not None
                ignore_outcome(confirmed)  # nobody answers here: it fails as the test ends
                await asyncio.sleep(0)  # its frame is queued (or dropped) as the turn ends
                assert forwarder.frames_dropped == dropped
        finally:
            proxy.release()
            await link.close()
