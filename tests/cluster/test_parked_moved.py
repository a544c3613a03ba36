"""A node dies holding a persistent session whose client is away; a survivor adopts it (claims
it, reads it from the store) and is to give it the frames parked for the dead node, when the
client connects to the third node and takes the session from the survivor. The survivor reads
the session slowly (PostgreSQL holds the sessions table locked until the third node's claim
replaced the survivor's): the session takes along the dead node's parked frames it was not
given yet, the third node reads them for it, and every message its publisher had acknowledged
reaches it (MQTT 3.1.1 §4.3.2). Real nodes, paho clients, NATS JetStream and PostgreSQL.
"""

import asyncio
from pathlib import Path

import nats
import pytest

from broker.cluster.claim_value import holder_of
from broker.cluster.frames import from_key
from tests.cluster import parking
from tests.cluster.nodes import cluster
from tests.e2e.harness import Client
from tests.natsserver import NATS_URL
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow


def _claimed_by(cluster_name: str, members: set[str]) -> str:
    """Once the backend's session is claimed by one of ``members``: that member."""

    async def watch() -> str:
        client = await nats.connect(NATS_URL)
        try:
            bucket = await client.jetstream().key_value(f"{cluster_name}_clients")
            watcher = await bucket.watchall()
            async with asyncio.timeout(WAIT * 2):
                while True:
                    entry = await watcher.updates(timeout=WAIT * 2)  # type: ignore[no-untyped-call]
                    if entry is None or entry.value is None:
                        continue
                    holder = holder_of(entry.value)  # an adoption's claim says more
                    if from_key(entry.key).endswith("/backend") and holder in members:
                        return holder
        finally:
            await client.close()

    return asyncio.run(watch())


def test_a_session_taken_from_its_adopter_before_its_replay_gets_the_parked_frames(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HANDOVER_WINDOW"] = "0.5"  # the adopter purges soon
        publisher = parking.set_up(nodes, 1)
        name = nodes.env["NANOIOT_CLUSTER_NAME"]
        with parking.sessions_locked(nodes.env["NANOIOT_DATABASE_URL"]) as release:
            parking.kill_a(nodes, publisher)
            publisher.until_acked(parking.AFTER)  # parked for a
            # The adopter claimed the session and waits for the store to read it.
            adopter = _claimed_by(name, {"b", "c"})
            other = "c" if adopter == "b" else "b"
            connecting = parking.connect_in_background(nodes, other)
            assert _claimed_by(name, {other}) == other  # taken from the adopter
            release.set()
            backend = connecting.get(timeout=WAIT)
        assert isinstance(backend, Client), backend
        assert backend.session_present.get_nowait() is True
        publisher.until_acked(parking.AFTER)
        acked = publisher.finish()
        parking.check_numbers(parking.collect(backend, acked), acked, 1)
