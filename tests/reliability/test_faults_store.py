"""Nothing is acknowledged that the store has not saved, whatever keeps it from writing.

A real ``nanoiot serve`` on SQLite, a persistent subscriber that is away, and a backend
publishing at QoS 1 with paho. While the database cannot be written (its write lock held by
another process past the busy timeout, its file system read-only, or full) reads still work,
so clients still connect, but no PUBACK goes out (MQTT 3.1.1 §4.3.2: once acknowledged, the
message is the server's); ``/healthz`` answers 503 saying why and ``/metrics`` shows it. When
the fault ends, the waiting PUBACKs go out by themselves. A publisher whose PUBACK waits
``ack_timeout`` is closed, so that it sends the message again, and a SIGKILL of the broker
during the fault loses none of the messages that were acknowledged.
"""

import contextlib
import os
import signal
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.e2e.harness import WAIT, BrokerThread, broker_settings, device_client
from tests.paho_loop import stop_loop
from tests.reliability.serve_process import PASSWORD, Fleet, ServeProcess, Session
from tests.reliability.store_faults import ReadOnlyDisk, SqliteLock, Tmpfs

RPC = "v1/devices/me/rpc/request/+"
BUSY_TIMEOUT = 1.0  # database_statement_timeout: SQLite's wait for another's write lock
ACK_TIMEOUT = 4.0  # seconds; longer than the busy timeout, so a lock is seen first
BURST = 30
PAYLOAD = b"x" * 32 * 1024  # 30 of them outgrow the write-ahead log: a full disk is met


@dataclass
class Fault:
    name: str
    begin: Callable[[], None]
    end: Callable[[], None]
    live_recovery: bool = True  # ends while the broker runs (else: after the SIGKILL)


@pytest.fixture(params=["locked", "full", "read-only"])
def fault_fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Fault, Fleet]]:
    data = tmp_path / "data"
    with contextlib.ExitStack() as undo:
        if request.param == "full":
            disk = Tmpfs(data, size_mb=24)
            undo.callback(disk.close)
            fault = Fault("full", disk.fill, disk.free)
        elif request.param == "read-only":
            ext4 = ReadOnlyDisk(data, tmp_path / "backing", size_mb=24)
            undo.callback(ext4.close)
            fault = Fault("read-only", ext4.fail, ext4.repair, live_recovery=False)
        fleet = Fleet(tmp_path)
        undo.callback(fleet.close)
        if request.param == "locked":
            lock = SqliteLock(fleet.data / "nanoiot.db")
            undo.callback(lock.end)
            fault = Fault("locked", lock.begin, lock.end)
        yield fault, fleet


def start(fleet: Fleet) -> ServeProcess:
    return fleet.start(
        NANOIOT_ACK_TIMEOUT=str(ACK_TIMEOUT), NANOIOT_DATABASE_STATEMENT_TIMEOUT=str(BUSY_TIMEOUT)
    )


def publish(backend: Session, start_at: int, count: int) -> list[int]:
    topics = [f"devices/sensor/rpc/request/{n}" for n in range(start_at, start_at + count)]
    return [backend.paho.publish(topic, PAYLOAD + topic.encode(), qos=1).mid for topic in topics]


def wait_acknowledged(backend: Session, mids: list[int]) -> None:
    """Until a PUBACK came for each of ``mids`` (within WAIT of the previous one)."""
    missing = set(mids)
    while missing:
        missing.discard(backend.published.get(timeout=WAIT))


def acknowledged_so_far(backend: Session) -> set[int]:
    got: set[int] = set()
    with contextlib.suppress(Empty):
        while True:
            got.add(backend.published.get_nowait())
    return got


def test_no_puback_while_the_store_cannot_write_and_none_lost_at_sigkill(
    fault_fleet: tuple[Fault, Fleet],
) -> None:
    fault, fleet = fault_fleet
    broker = start(fleet)
    sensor = fleet.sensor_session(broker)
    assert sensor.wait_connack() == (0, False)
    assert sensor.subscribe(RPC) == [1]
    sensor.close()
    backend = fleet.backend(broker)

    # 1. The fault begins: PUBLISHes are taken, routed, and not acknowledged.
    fault.begin()
    first = publish(backend, 0, BURST)
    broker.wait_for_log("session changes cannot be saved", within=WAIT)
    assert backend.published.empty(), f"PUBACK while the store could not write ({fault.name})"
    health = httpx.get(f"{broker.http_url}/healthz", timeout=WAIT)
    assert health.status_code == 503
    assert "acknowledgements wait" in health.json()["sessions"]
    assert "nanoiot_session_store_writable 0.0" in _metrics(broker, fleet)

    # 2. It ends: every waiting PUBACK goes out, with no restart.
    acknowledged = len(first)
    if fault.live_recovery:
        fault.end()
        wait_acknowledged(backend, first)
        broker.wait_for_log("session changes saved again")
        assert httpx.get(f"{broker.http_url}/healthz", timeout=WAIT).status_code == 200
        fault.begin()
    else:
        acknowledged = 0

    # 3. Longer than ack_timeout: the publisher is closed; then SIGKILL.
    closed = threading.Event()
    backend.paho.on_disconnect = lambda *_args: closed.set()
    publish(backend, BURST, BURST)
    assert closed.wait(ACK_TIMEOUT + WAIT), "publisher not closed"
    broker.wait_for_log("acknowledgements waited")
    late = acknowledged_so_far(backend)
    assert not late, f"PUBACK while the store could not write ({fault.name})"
    os.kill(broker.process.pid, signal.SIGKILL)
    assert broker.process.wait(WAIT) == -signal.SIGKILL
    backend.close()
    fault.end()

    # Everything acknowledged is there after the restart, once each and in order.
    broker = start(fleet)
    sensor = fleet.sensor_session(broker)
    assert sensor.wait_connack() == (0, True)
    received = [m.topic for m in sensor.receive(acknowledged)]
    assert received == [f"v1/devices/me/rpc/request/{n}" for n in range(acknowledged)]


def _metrics(broker: ServeProcess, fleet: Fleet) -> str:
    token = (fleet.data / "admin-token").read_text().strip()
    response = httpx.get(
        f"{broker.http_url}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=WAIT
    )
    response.raise_for_status()
    return response.text


def test_an_mqtt5_publisher_is_told_server_unavailable_when_its_puback_times_out(
    tmp_path: Path,
) -> None:
    """MQTT 5 can say why (§3.14.2.1): DISCONNECT with reason 0x89, server busy (0x88,
    server unavailable, is a CONNACK code only: paho refuses it in a DISCONNECT)."""
    settings = broker_settings(tmp_path / "data", ack_timeout=1.0, database_statement_timeout=0.5)
    broker = BrokerThread(settings)
    lock = SqliteLock(tmp_path / "data" / "nanoiot.db")
    try:
        broker.application("backend", "backend", PASSWORD)
        sensor, _ = device_client(broker, tmp_path, "sensor", client_id="s", clean_session=False)
        assert sensor.wait_connack() == 0
        assert sensor.subscribe(RPC)[0].value == 1
        sensor.close()
        reasons: Queue[int] = Queue()
        publisher = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="backend", protocol=mqtt.MQTTv5
        )
        publisher.tls_set(ca_certs=str(broker.server_cert), cert_reqs=ssl.CERT_REQUIRED)
        publisher.username_pw_set("backend", PASSWORD)
        connected = threading.Event()
        publisher.on_connect = lambda *_args: connected.set()
        publisher.on_disconnect = lambda _c, _u, _f, reason, _p: reasons.put(reason.value)
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        try:
            assert connected.wait(WAIT)
            lock.begin()
            info = publisher.publish("devices/sensor/rpc/request/1", b"unsaved", qos=1)
            assert reasons.get(timeout=WAIT) == 0x89
            assert not info.is_published()
        finally:
            publisher.disconnect()
            stop_loop(publisher)
    finally:
        lock.end()
        broker.stop()
