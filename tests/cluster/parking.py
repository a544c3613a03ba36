"""A node dies holding a persistent session whose client is away while a publisher on another
node keeps publishing numbered messages to it, for tests: the publisher, the kill, and the
checks that nothing acknowledged was lost (MQTT 3.1.1 §4.3.2, §4.3.3), QoS 2 came once and
each publisher's messages in order (§4.6). Real nodes, paho clients, NATS JetStream and
PostgreSQL.
"""

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import asyncpg  # type: ignore[import-untyped]
import nats
import nats.errors
import paho.mqtt.client as mqtt
from nats.aio.client import DEFAULT_MAX_PAYLOAD_SIZE

from broker.cluster.frames import FRAMING, groups_room
from nanoiot.settings import Settings
from tests.cluster.nodes import TELEMETRY, Cluster, backend_away_on_a, logged
from tests.e2e.harness import Client
from tests.natsserver import NATS_URL
from tests.serve_process import WAIT

BEFORE_KILL = 30  # messages acknowledged before node a is killed
AFTER = 30  # ... and after the session is taken
# Bytes of a large payload: two do not fit one NATS message, so each message is a frame of its
# own, and a node parks them one after the other, each once JetStream acknowledged the one
# before.
LARGE = 600_000
# The nodes' max_packet_size for LARGE payloads: the largest one NATS's default max_payload lets
# a node start with, by the same sums as the node's start-up check (``ClusterLink.connect``):
# a frame's own fields and what the default max_shared_subscription_bytes may name come first.
MAX_PACKET_SIZE = (
    DEFAULT_MAX_PAYLOAD_SIZE
    - FRAMING
    - groups_room(Settings.model_fields["max_shared_subscription_bytes"].default)
)


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


def set_up(
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


def kill_a(nodes: Cluster, publisher: Publisher, cut: Callable[[], None] | None = None) -> None:
    """SIGKILL node a (or ``cut`` it off from NATS) between two messages, and publish again
    once NATS noticed (before that, a message routed to a goes nowhere and its publisher is
    not acknowledged: a stall of ``CONFIRM_WITHIN`` that would hide what follows)."""
    publisher.pause()
    if cut is None:
        nodes.kill("a")
    else:
        cut()
    asyncio.run(until_nobody_listens(f"{nodes.env['NANOIOT_CLUSTER_NAME']}.route.a"))
    publisher.going.set()


async def until_nobody_listens(subject: str) -> None:
    """Once NATS answers that nobody listens on ``subject`` (a member's frames: it is gone)."""
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


def received(nodes: Cluster, node: str, acked: list[int]) -> list[int]:
    """The backend connected again on ``node``: the numbers it gets, in order, until every
    acknowledged one came (and a moment more for any second copy)."""
    backend = nodes.connect(node, app="backend", client_id="backend", clean_session=False)
    assert backend.session_present.get_nowait() is True
    return collect(backend, acked)


def collect(backend: Client, acked: list[int]) -> list[int]:
    """The numbers ``backend`` gets, in order, until every ``acked`` one came (and a quiet
    second more for any second copy)."""
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


def check_numbers(got: list[int], acked: list[int], qos: int) -> None:
    """None of ``acked`` lost, their first copies in order, at QoS 2 none twice."""
    lost = sorted(set(acked) - set(got))
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged messages lost: {lost[:20]}"
    firsts = list(dict.fromkeys(n for n in got if n in set(acked)))
    assert firsts == sorted(firsts), "acknowledged messages out of order"
    if qos == 2:
        assert len(got) == len(set(got)), "a QoS 2 message delivered twice"


def adopter_of_a(nodes: Cluster) -> str:
    """Node b or c, whichever logged that it adopted the session of the dead node a."""
    return logged(nodes, "adopted 1 persistent sessions of member a", "b", "c")


def large_payload(number: int) -> bytes:
    """``number`` padded to ``LARGE`` bytes."""
    return str(number).ljust(LARGE).encode()


def published(sent: list[mqtt.MQTTMessageInfo]) -> None:
    """Once each of ``sent`` is acknowledged (each must be)."""
    for info in sent:
        info.wait_for_publish(WAIT)
        assert info.is_published()


@contextmanager
def sessions_locked(database_url: str) -> Iterator[threading.Event]:
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


def connect_in_background(nodes: Cluster, node: str) -> "queue.Queue[Client | BaseException]":
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
