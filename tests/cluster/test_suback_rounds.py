"""SUBSCRIBEs a client sends one after another (pipelined) in a cluster share the rounds of
asking the other members whether their route tables hold the new filters, which each SUBACK
waits for (MQTT 3.1.1 and 5.0 §3.8.4, ``broker.cluster.routes_seen``): the connection is read
on while SUBACKs wait, at most ``cluster_max_subacks_waiting`` of them, and its answers still
go out in the order of the packets they answer (§4.6). Counted by node A's rounds in its
``/metrics`` (``nanoiot_cluster_routes_seen_rounds_total``): a round confirms only SUBACKs
held, so with at most ``waiting`` held ``SUBSCRIBES`` SUBSCRIBEs take ``SUBSCRIBES /
waiting`` rounds at least, and one each when they do not share them. A raw client (the
exact packets, sent in one write) on node A of two, separate processes on the machine's NATS
and PostgreSQL."""

from pathlib import Path

import pytest

from broker.mqtt.packets import (
    MQTT_3_1_1,
    Connect,
    Suback,
    Subscribe,
    SubscribeRequest,
    Unsuback,
    Unsubscribe,
)
from tests.cluster.nodes import cluster, counter, metrics
from tests.cluster.proxy import nats_proxy
from tests.e2e.peers import Raw

pytestmark = pytest.mark.slow

SUBSCRIBES = 100
WAITING = 20  # cluster_max_subacks_waiting
LAG = 0.2  # seconds B's route watch is held back
ROUNDS = "nanoiot_cluster_routes_seen_rounds_total"


def _filter(n: int) -> str:
    return f"v1/devices/me/rpc/request/{n}"


def test_pipelined_subscribes_share_rounds_at_most_so_many_subacks_waiting(
    tmp_path: Path,
) -> None:
    """B's route watch lags ``LAG`` s, so each round takes that long, while A's writes take
    milliseconds: a round that starts as the first of ``WAITING`` SUBSCRIBEs read is written
    confirms that one, the next one all the others (written meanwhile), and their SUBACKs go
    out: 2 rounds for each ``WAITING`` SUBSCRIBEs, instead of one each."""
    with nats_proxy() as to_b, cluster(tmp_path) as nodes:
        name = nodes.env["NANOIOT_CLUSTER_NAME"]
        sensor = nodes.device("sensor")
        a = nodes.start(
            "a", NANOIOT_MAX_SUBSCRIPTIONS=str(SUBSCRIBES),
            NANOIOT_CLUSTER_MAX_SUBACKS_WAITING=str(WAITING),
        )  # fmt: skip
        nodes.start("b", NANOIOT_NATS_URL=to_b.url)
        to_b.delay(LAG, subjects=(f"$KV.{name}_routes.",))
        with Raw(a.port, nodes.server_cert, sensor) as raw:
            raw.connect(Connect(MQTT_3_1_1, "sensor", True, 60))
            before = counter(metrics(nodes, "a"), ROUNDS)
            subscribes = [
                Subscribe(n, (SubscribeRequest(_filter(n), 1),)) for n in range(1, SUBSCRIBES + 1)
            ]
            # An UNSUBACK answers at once: it still goes after the SUBACKs before it.
            raw.send(*subscribes, Unsubscribe(SUBSCRIBES + 1, (_filter(1),)))
            for n in range(1, SUBSCRIBES + 1):
                assert raw.read() == Suback(n, (1,))
            assert raw.read() == Unsuback(SUBSCRIBES + 1)
            rounds = counter(metrics(nodes, "a"), ROUNDS) - before
        assert SUBSCRIBES / WAITING <= rounds <= 2 * SUBSCRIBES / WAITING + 2
