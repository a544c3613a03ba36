"""A node dies holding a persistent session whose client is away; the client takes the session
to another node directly while a survivor adopts the dead node's other sessions and purges its
parked frames. The taking node reads the session from the store slowly (PostgreSQL holds the
sessions table locked until the purge was attempted): the frames parked for the session are
not purged before they are read for it, and every message its publisher had acknowledged
reaches it (MQTT 3.1.1 §4.3.2). Real nodes, paho clients, NATS JetStream and PostgreSQL.
"""

import asyncio
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.cluster.nodes import Cluster, cluster
from tests.cluster.test_parked import AFTER, _check, _collect, _kill_a, _logged, _set_up
from tests.e2e.harness import Client
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow


@contextmanager
def _sessions_locked(database_url: str) -> Iterator[threading.Event]:
    """The sessions table locked against reads until the event yielded is set."""
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    locked, release = threading.Event(), threading.Event()

    async def hold() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            async with connection.transaction():
                await connection.execute("LOCK TABLE mqtt_sessions IN ACCESS EXCLUSIVE MODE")
                locked.set()
                await asyncio.to_thread(release.wait, WAIT * 2)
        finally:
            await connection.close()

    thread = threading.Thread(target=asyncio.run, args=(hold(),), daemon=True)
    thread.start()
    assert locked.wait(WAIT)
    try:
        yield release
    finally:
        release.set()
        thread.join(WAIT)


def _connect_in_background(nodes: Cluster, node: str) -> "queue.Queue[Client | BaseException]":
    """The backend connecting to ``node`` (its CONNACK waits for the store)."""
    result: queue.Queue[Client | BaseException] = queue.Queue()

    def run() -> None:
        try:
            result.put(nodes.connect(node, app="backend", client_id="backend",
                                     clean_session=False))  # fmt: skip
        except BaseException as exc:  # reported in the test's thread
            result.put(exc)

    threading.Thread(target=run, daemon=True).start()
    return result


def test_frames_parked_for_a_session_taken_from_a_dead_node_outlive_the_adopters_purge(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HANDOVER_WINDOW"] = "0.5"  # the adopter purges soon
        publisher = _set_up(nodes, 1)
        _kill_a(nodes, publisher)
        publisher.until_acked(AFTER)  # parked for a
        with _sessions_locked(nodes.env["NANOIOT_DATABASE_URL"]) as release:
            connecting = _connect_in_background(nodes, "c")
            # c's claim replaced a's, before any adopter's could: the session is c's.
            taken = nodes.nodes["c"].log.wait_for(
                r"session \S+ was held by member a, which is gone|member a did not answer"
            )
            assert taken is not None
            _logged(nodes, "parked frames of member a", "b", "c")  # purged, or waiting
            release.set()
            backend = connecting.get(timeout=WAIT)
        assert isinstance(backend, Client), backend
        assert backend.session_present.get_nowait() is True
        publisher.until_acked(AFTER)
        acked = publisher.finish()
        _check(_collect(backend, acked), acked, 1)
