"""A numbered stream from a publisher P on one node to a persistent subscriber S whose
session moves between nodes (``Publisher``, ``Subscriber``): what P got acknowledged
(MQTT 3.1.1 §4.3.2, §4.3.3) and what each of S's connections delivered, in order, for a test
to check. Real paho clients over TLS on ``tests.cluster.nodes``' cluster."""

import collections
import itertools
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes

from tests.cluster.nodes import APP_PASSWORD, Cluster, until_routed
from tests.e2e.harness import WAIT, Client, wired
from tests.e2e.v5_client import make_properties

TELEMETRY = "v1/devices/me/telemetry"
FILTER = "devices/+/telemetry"
# S at QoS 2 drains slower than P publishes: its queue must hold the whole run, or messages
# past max_queued_messages are dropped by design (that limit has tests of its own).
ROOMY_QUEUES = {"NANOIOT_MAX_QUEUED_MESSAGES": "100000", "NANOIOT_MAX_QUEUED_BYTES": "100000000"}
WINDOW = 20  # P's unacknowledged messages at most (paho's own in-flight bound is 20 too)
SESSION_EXPIRY = 600  # seconds (MQTT 5 §3.1.2.11.2): longer than the test
NO_RECONNECT = 600  # seconds paho waits before reconnecting: a closed client stays closed


def ranges(numbers: list[int]) -> str:
    """``[3, 4, 5, 9]`` as ``3-5, 9``."""
    spans = []
    for _, run in itertools.groupby(enumerate(numbers), lambda pair: pair[1] - pair[0]):
        values = [n for _, n in run]
        spans.append(f"{values[0]}-{values[-1]}" if len(values) > 1 else f"{values[0]}")
    return ", ".join(spans)


class Publisher:
    """P: numbered payloads from a thread, at most ``WINDOW`` unacknowledged; which numbers
    were acknowledged (paho's on_publish: PUBACK, or PUBCOMP after PUBREC); ``patience``:
    seconds it waits for room in its window (longer across an outage of the cluster)."""

    def __init__(self, client: Client, qos: int, *, patience: float = WAIT) -> None:
        self._paho = client.paho
        self._qos = qos
        self._patience = patience
        self._numbers: dict[int, int] = {}  # packet id -> number
        self._acknowledged: list[int] = []  # packet ids
        self._changed = threading.Condition()
        self._last: int | None = None  # the last number to publish, once known
        self._sent = 0
        self._error: BaseException | None = None
        self._paho.on_publish = self._on_publish
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_publish(self, _c: object, _u: object, mid: int, *_rest: object) -> None:
        with self._changed:  # paho's thread; never held while calling paho (its locks)
            self._acknowledged.append(mid)
            self._changed.notify_all()

    def _run(self) -> None:
        try:
            while (number := self._next()) is not None:
                info = self._paho.publish(TELEMETRY, str(number).encode(), qos=self._qos)
                # NO_CONN: published while its connection was closed; paho keeps it and
                # sends it on its next connection.
                assert info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)
                with self._changed:
                    self._numbers[info.mid] = number
        except BaseException as error:  # raised again in the test's thread
            self._error = error

    def _next(self) -> int | None:
        """The next number, once the window has room for it; None after the last."""

        def ready() -> bool:
            stopping = self._last is not None and self._sent > self._last
            return stopping or self._sent - len(self._acknowledged) < WINDOW

        with self._changed:
            waited = self._changed.wait_for(ready, self._patience)
            assert waited, f"no acknowledgement in {self._patience} s"
            if self._last is not None and self._sent > self._last:
                return None
            self._sent += 1  # counted before it goes: its acknowledgement may come first
            return self._sent - 1

    def stop_after(self, more: int) -> None:
        with self._changed:
            self._last = self._sent + more - 1
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._last = -1 if self._last is None else self._last
            self._changed.notify_all()
        self._thread.join(WAIT)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def acknowledged_within(self, count: int, within: float) -> bool:
        """Whether ``count`` more numbers are acknowledged within ``within`` seconds."""
        with self._changed:
            target = len(self._acknowledged) + count
            done = self._changed.wait_for(lambda: len(self._acknowledged) >= target, within)
        if self._error is not None:
            raise self._error
        return done

    def acknowledged(self) -> set[int]:
        """Once every number up to the last is sent and acknowledged: the numbers."""
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the publisher did not finish"
        if self._error is not None:
            raise self._error
        with self._changed:
            done = self._changed.wait_for(lambda: len(self._acknowledged) == self._sent, WAIT)
            assert done, f"{self._sent - len(self._acknowledged)} never acknowledged"
            assert len(self._numbers) == self._sent, "packet ids used twice"
            return {self._numbers[mid] for mid in self._acknowledged}


@dataclass(repr=False)  # a failure shows the numbers that matter, not every one
class Subscriber:
    """S: one persistent session, used through one paho client after another; each
    connection's deliveries in order, as (number, QoS)."""

    nodes: Cluster
    client_id: str
    version: int  # 4: MQTT 3.1.1, 5: MQTT 5
    connections: list[list[tuple[int, int]]] = field(default_factory=list)
    _clients: list[Client] = field(default_factory=list)
    _closed: set[int] = field(default_factory=set)  # indexes in _clients
    _seen: set[int] = field(default_factory=set)
    _new: list[int] = field(default_factory=list)  # per connection: numbers first seen there
    _qos2: "collections.OrderedDict[int, mqtt.MQTTMessage]" = field(
        default_factory=collections.OrderedDict
    )

    def connect(self, node: str) -> Client:
        """A connection to ``node``, once its CONNACK (return code 0) came."""
        client = self._client(node)
        self._clients.append(client)
        self.connections.append([])
        self._new.append(0)
        try:
            code = client.connack.get(timeout=WAIT)
        except Empty:
            raise AssertionError(f"no CONNACK from {node} in {WAIT} s{self._logs()}") from None
        assert code.value == 0, f"CONNACK {code.value} ({code}) from {node}{self._logs()}"
        assert client.session_present.get_nowait() is (len(self._clients) > 1)
        return client

    def _logs(self) -> str:
        """The nodes' last log lines, for a failure to show what the cluster did."""
        return "".join(
            f"\n--- node {name} ---\n{''.join(node.log.lines[-60:])}"
            for name, node in self.nodes.nodes.items()
        )

    def move(self, node: str, how: str) -> None:
        old = len(self._clients) - 1
        if how == "disconnect":
            self._finish(old)
            self.connect(node)
        else:  # take-over: the server closes the connection still up
            self.connect(node)
            assert self._clients[old].disconnected.wait(WAIT), "the first connection stays"
            self._finish(old)

    def receive_new(self, count: int) -> bool:
        """Wait until the current connection delivered ``count`` numbers not seen before."""
        return self._receive_until(lambda: self._new[-1] >= count)

    def receive_all(self, numbers: set[int]) -> None:
        """Wait until every number in ``numbers`` was delivered (or none comes for a while:
        the check then says which are missing)."""
        self._receive_until(lambda: numbers <= self._seen)

    def take_delivered(self) -> int:
        """Take what the current connection delivered so far, without waiting: how many."""
        current, taken = len(self._clients) - 1, 0
        while True:
            try:
                message = self._clients[current].messages.get_nowait()
            except Empty:
                return taken
            self._take(current, message)
            taken += 1

    def unread(self, index: int) -> int:
        """How many deliveries connection ``index`` has that were not taken yet."""
        return self._clients[index].messages.qsize()

    def connection(self, index: int) -> Client:
        return self._clients[index]

    @property
    def seen(self) -> set[int]:
        """The numbers delivered on any connection so far (taken)."""
        return self._seen

    def counts(self) -> list[int]:
        return [len(conn) for conn in self.connections]

    def close(self) -> None:
        for index in range(len(self._clients)):
            self._finish(index)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _receive_until(self, done: Callable[[], bool]) -> bool:
        """Deliveries of the current connection until ``done``, or ``WAIT`` s without any."""
        current = len(self._clients) - 1
        while not done():
            try:
                message = self._clients[current].messages.get(timeout=WAIT)
            except Empty:
                return False
            self._take(current, message)
        return True

    def _finish(self, index: int) -> None:
        """Close the connection, then take what it delivered meanwhile."""
        if index in self._closed:
            return
        self._closed.add(index)
        client = self._clients[index]
        client.close()
        while True:
            try:
                self._take(index, client.messages.get_nowait())
            except Empty:
                return

    def _take(self, index: int, message: mqtt.MQTTMessage) -> None:
        if not message.payload.isdigit():
            return  # a routing probe (QoS 0)
        number = int(message.payload)
        self.connections[index].append((number, message.qos))
        if number not in self._seen:
            self._seen.add(number)
            self._new[index] += 1

    def _client(self, node: str) -> Client:
        """A paho client of S's session (MQTT 3.1.1 clean session 0, or MQTT 5 with a
        session expiry interval) connecting to ``node``; what it receives goes to its queue."""
        v5 = self.version == 5
        session: dict[str, Any] = {"protocol": mqtt.MQTTv5} if v5 else {"clean_session": False}
        paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, **session)
        paho._in_messages = self._qos2  # the session's QoS 2 receiving state, shared
        paho.reconnect_delay_set(NO_RECONNECT, NO_RECONNECT)
        paho.tls_set(
            ca_certs=str(self.nodes.server_cert),
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        paho.username_pw_set(self.client_id, APP_PASSWORD)
        client = wired(paho)
        port = self.nodes.nodes[node].port
        if v5:
            expiry = make_properties(PacketTypes.CONNECT, SessionExpiryInterval=SESSION_EXPIRY)
            paho.connect_async("127.0.0.1", port, clean_start=False, properties=expiry)
        else:
            paho.connect_async("127.0.0.1", port)
        paho.loop_start()
        return client


def subscribed_on_a(
    subscriber: Subscriber,
    topic_filter: str,
    qos: int,
    sensor: Path,
    publisher_on: str,
    client_id: str,
) -> Client:
    """S's first connection, to node a, subscribed to ``topic_filter`` at ``qos``; the
    device's client (``sensor``: its .nopass.pem file) on node ``publisher_on``, once what it
    publishes reaches S (other nodes' route tables learn of S's subscription
    asynchronously). At QoS 2 the device's session outlives its connection: a PUBLISH it
    sends again after its node closed it unacknowledged (another node refused the message)
    is then the same message (MQTT 3.1.1 §4.3.3), where with Clean Session 1 it is a new one
    on a new session (§3.1.2.4) and may rightly reach S twice."""
    first = subscriber.connect("a")
    assert first.subscribe(topic_filter, qos) == [qos]
    device = subscriber.nodes.connect(
        publisher_on, sensor, client_id=client_id, clean_session=qos != 2
    )
    until_routed(device, TELEMETRY, first)
    return device


def acknowledged_and_received(publisher: Publisher, subscriber: Subscriber, more: int) -> set[int]:
    """P stopped after ``more`` numbers more: the numbers it got acknowledged, once S received
    them all (or none came for ``WAIT`` s: the test's check then says which are missing)."""
    publisher.stop_after(more)
    acknowledged = publisher.acknowledged()
    subscriber.receive_all(acknowledged)
    return acknowledged


def check_moved(subscriber: Subscriber, acknowledged: set[int], qos: int) -> None:
    """Every ``acknowledged`` number reached the moving subscriber, at its ``qos``; at QoS 2
    none twice; on each connection the numbers new to it in their order (§4.6)."""
    received = collections.Counter(n for conn in subscriber.connections for n, _ in conn)
    problems = []
    missing = sorted(acknowledged - received.keys())
    if missing:
        problems.append(
            f"{len(missing)} of {len(acknowledged)} acknowledged messages never reached the "
            f"subscriber: {ranges(missing)}"
        )
    twice = sorted(n for n, count in received.items() if count > 1)
    if qos == 2 and twice:
        problems.append(f"{len(twice)} QoS 2 messages delivered twice: {ranges(twice)}")
    wrong_qos = sorted({got for conn in subscriber.connections for _, got in conn} - {qos})
    if wrong_qos:
        problems.append(f"delivered at QoS {wrong_qos}, subscribed at {qos}")
    seen: set[int] = set()
    for index, conn in enumerate(subscriber.connections):
        firsts = []  # redeliveries (numbers an earlier delivery had) left out
        for number, _ in conn:
            if number not in seen:
                seen.add(number)
                firsts.append(number)
        behind = [(a, b) for a, b in itertools.pairwise(firsts) if b <= a]
        if behind:
            problems.append(f"connection {index}: new numbers out of order: {behind[:10]}")
    assert not problems, "\n".join(problems)
