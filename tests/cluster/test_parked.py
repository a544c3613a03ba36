"""A node dies holding a persistent session whose client is away, while a publisher on another
node keeps publishing to it: nothing the publisher had acknowledged is lost (MQTT 3.1.1 §4.3.2,
§4.3.3), QoS 2 arrives once, and each publisher's messages arrive in order (§4.6), whether the
session is adopted by a survivor before its client comes back, taken by the client on another
node first, or restored by the node itself started again. Real nodes, paho clients, NATS
JetStream and PostgreSQL.
"""

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import pytest

from tests.cluster.nodes import TELEMETRY, Cluster, backend_away_on_a, cluster
from tests.cluster.proxy import nats_proxy
from tests.e2e.harness import Client
from tests.natsserver import NATS_URL
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

BEFORE_KILL = 30  # messages acknowledged before node a is killed
AFTER = 30  # ... and after the session is taken


@dataclass
class Publisher:
    """Numbered messages from the device "sensor" on node b, one after the other, each waited
    for; the numbers acknowledged (PUBACK, or PUBCOMP for QoS 2)."""

    client: Client
    qos: int
    size: int = 0  # bytes of each payload (its number, padded with spaces)
    acked: list[int] = field(default_factory=list)
    unacked: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    going: threading.Event = field(default_factory=threading.Event)
    paused: bool = False
    acked_event: threading.Condition = field(default_factory=threading.Condition)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.going.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        number = 0
        while not self.stop.is_set():
            if not self.going.is_set():
                self._wait_while_paused()
                continue
            payload = str(number).ljust(self.size).encode()
            info = self.client.paho.publish(TELEMETRY, payload, qos=self.qos)
            try:
                info.wait_for_publish(WAIT)
                published = info.is_published()
            except (RuntimeError, ValueError):
                published = False
            with self.acked_event:
                (self.acked if published else self.unacked).append(number)
                self.acked_event.notify_all()
            number += 1

    def _wait_while_paused(self) -> None:
        with self.acked_event:
            self.paused = True
            self.acked_event.notify_all()
        self.going.wait()
        with self.acked_event:
            self.paused = False

    def pause(self) -> None:
        """Once the message being published is acknowledged (or not), none is until
        ``going`` is set again."""
        self.going.clear()
        with self.acked_event:
            assert self.acked_event.wait_for(lambda: self.paused, WAIT * 2)

    def until_acked(self, count: int) -> None:
        """Once ``count`` more numbers than now were acknowledged."""
        with self.acked_event:
            target = len(self.acked) + count
            assert self.acked_event.wait_for(lambda: len(self.acked) >= target, WAIT * 3)

    def finish(self) -> list[int]:
        self.stop.set()
        self.going.set()
        assert self.thread is not None
        self.thread.join(WAIT * 2)
        return list(self.acked)


def _set_up(
    nodes: Cluster, qos: int, heartbeat: float = 0.5, size: int = 0, **a_settings: str
) -> Publisher:
    """Nodes a, b and c; the application "backend"'s persistent session on a, subscribed at
    ``qos``, its client away; the device "sensor" publishing on b."""
    nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(heartbeat)
    nodes.env["NANOIOT_MAX_QUEUED_MESSAGES"] = "100000"
    device = backend_away_on_a(nodes, qos, also=("c",), a_settings=a_settings)
    publisher = Publisher(device, qos, size)
    publisher.start()
    publisher.until_acked(BEFORE_KILL)
    return publisher


def _kill_a(nodes: Cluster, publisher: Publisher, cut: Callable[[], None] | None = None) -> None:
    """SIGKILL node a (or ``cut`` it off from NATS) between two messages, and publish again
    once NATS noticed (before that, a message routed to a goes nowhere and its publisher is
    not acknowledged: a stall of ``CONFIRM_WITHIN`` that would hide what follows)."""
    publisher.pause()
    if cut is None:
        nodes.kill("a")
    else:
        cut()
    asyncio.run(_until_nobody_listens(f"{nodes.env['NANOIOT_CLUSTER_NAME']}.route.a"))
    publisher.going.set()


async def _until_nobody_listens(subject: str) -> None:
    client = await nats.connect(NATS_URL)
    try:
        async with asyncio.timeout(WAIT):
            while True:
                try:
                    await client.request(subject, b"", timeout=0.5)
                except nats.errors.NoRespondersError:
                    return
                except nats.errors.TimeoutError:
                    continue
    finally:
        await client.close()


def _received(nodes: Cluster, node: str, acked: list[int]) -> list[int]:
    """The backend connected again on ``node``: the numbers it gets, in order, until every
    acknowledged one came (and a moment more for any second copy)."""
    backend = nodes.connect(node, app="backend", client_id="backend", clean_session=False)
    assert backend.session_present.get_nowait() is True
    return _collect(backend, acked)


def _collect(backend: Client, acked: list[int]) -> list[int]:
    got: list[int] = []
    missing = set(acked)
    while missing:
        try:
            message = backend.next_message()
        except Exception:
            break  # reported below
        number = int(message.payload)
        got.append(number)
        missing.discard(number)
    while not backend.no_message(within=1.0):
        pass  # never a message after a quiet second: the second copies checked below
    return got


def _check(got: list[int], acked: list[int], qos: int) -> None:
    lost = sorted(set(acked) - set(got))
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged messages lost: {lost[:20]}"
    firsts = list(dict.fromkeys(n for n in got if n in set(acked)))
    assert firsts == sorted(firsts), "acknowledged messages out of order"
    if qos == 2:
        assert len(got) == len(set(got)), "a QoS 2 message delivered twice"


def _adopter(nodes: Cluster) -> str:
    return _logged(nodes, "adopted 1 persistent sessions of member a", "b", "c")


def _logged(nodes: Cluster, text: str, *names: str) -> str:
    from tests.cluster.test_sessions import _logged as logged

    return logged(nodes, text, *names)


@pytest.mark.parametrize("qos", [1, 2])
def test_messages_for_a_dead_nodes_session_reach_its_adopter(tmp_path: Path, qos: int) -> None:
    with cluster(tmp_path) as nodes:
        publisher = _set_up(nodes, qos)
        _kill_a(nodes, publisher)
        _adopter(nodes)
        publisher.until_acked(AFTER)
        acked = publisher.finish()
        _check(_received(nodes, "c", acked), acked, qos)


@pytest.mark.parametrize("qos", [1, 2])
def test_messages_for_a_dead_nodes_session_reach_its_client_back_before_adoption(
    tmp_path: Path, qos: int
) -> None:
    with cluster(tmp_path) as nodes:
        publisher = _set_up(nodes, qos)
        _kill_a(nodes, publisher)
        backend = nodes.connect("c", app="backend", client_id="backend", clean_session=False)
        assert backend.session_present.get_nowait() is True
        _logged(nodes, "member a is gone", "b", "c")  # its departure: wills, adoption
        publisher.until_acked(AFTER)
        acked = publisher.finish()
        _check(_collect(backend, acked), acked, qos)


@pytest.mark.parametrize("qos", [1, 2])
def test_messages_for_a_dead_nodes_session_reach_it_when_the_node_restarts(
    tmp_path: Path, qos: int
) -> None:
    with cluster(tmp_path) as nodes:
        publisher = _set_up(nodes, qos, heartbeat=5.0)  # restarted before it is taken as gone
        _kill_a(nodes, publisher)
        nodes.start("a")
        nodes.nodes["a"].log.wait_for(r"restored 1 persistent sessions")
        publisher.until_acked(AFTER)
        acked = publisher.finish()
        _check(_received(nodes, "a", acked), acked, qos)


def test_a_full_parked_stream_refuses_publishers_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    """cluster_max_parked_bytes at its least (64 KiB) and 8 KiB messages: the stream fills
    before the session is adopted; the publisher is disconnected unacknowledged (it sends
    again), and every message it had acknowledged reaches the subscriber."""
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_MAX_PARKED_BYTES"] = str(64 * 1024)
        publisher = _set_up(nodes, 1, heartbeat=1.0, size=8 * 1024)
        _kill_a(nodes, publisher)
        refused = nodes.nodes["b"].log.wait_for(r"parking a frame for member a: .*")
        assert "its publishers are not acknowledged" in refused.group(0)
        assert publisher.client.disconnected.wait(WAIT)
        _adopter(nodes)
        publisher.until_acked(AFTER)
        acked = publisher.finish()
        _check(_received(nodes, "c", acked), acked, 1)


def test_messages_parked_while_a_node_was_away_from_nats_reach_its_sessions(
    tmp_path: Path,
) -> None:
    """Node a's connection to NATS is cut for a moment, shorter than it takes to fence itself
    off: what b parked for a's session meanwhile is given to it once a is back on NATS."""
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        publisher = _set_up(nodes, 1, heartbeat=2.0, NANOIOT_NATS_URL=proxy.url)
        _kill_a(nodes, publisher, cut=proxy.cut)
        nodes.nodes["b"].log.wait_for(r"cluster member a is gone \(.*\): frames for it are parked")
        publisher.until_acked(AFTER)  # parked
        proxy.restore()
        nodes.nodes["b"].log.wait_for(r"cluster member a is back")
        publisher.until_acked(AFTER)
        acked = publisher.finish()
        _check(_received(nodes, "a", acked), acked, 1)
