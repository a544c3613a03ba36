"""A node dies holding a persistent session whose client is away; the client takes the session
to another node directly while a survivor adopts the dead node's other sessions and purges its
parked frames. The taking node reads the session from the store slowly (PostgreSQL holds the
sessions table locked until the purge was attempted): the frames parked for the session are
not purged before they are read for it, and every message its publisher had acknowledged
reaches it (MQTT 3.1.1 §4.3.2). Real nodes, paho clients, NATS JetStream and PostgreSQL.
"""

from pathlib import Path

import pytest

from tests.cluster.nodes import cluster, logged
from tests.cluster.parking import (
    AFTER,
    check_numbers,
    collect,
    connect_in_background,
    kill_a,
    sessions_locked,
    set_up,
)
from tests.e2e.harness import Client
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow


def test_frames_parked_for_a_session_taken_from_a_dead_node_outlive_the_adopters_purge(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HANDOVER_WINDOW"] = "0.5"  # the adopter purges soon
        publisher = set_up(nodes, 1)
        kill_a(nodes, publisher)
        publisher.until_acked(AFTER)  # parked for a
        with sessions_locked(nodes.env["NANOIOT_DATABASE_URL"]) as release:
            connecting = connect_in_background(nodes, "c")
            # c's claim replaced a's, before any adopter's could: the session is c's.
            taken = nodes.nodes["c"].log.wait_for(
                r"session \S+ was held by member a, which is gone|member a did not answer"
            )
            assert taken is not None
            logged(nodes, "parked frames of member a", "b", "c")  # purged, or waiting
            release.set()
            backend = connecting.get(timeout=WAIT)
        assert isinstance(backend, Client), backend
        assert backend.session_present.get_nowait() is True
        publisher.until_acked(AFTER)
        acked = publisher.finish()
        check_numbers(collect(backend, acked), acked, 1)
