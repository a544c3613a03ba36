"""``nanoiot serve`` as a real process, to kill and restart, and paho clients for it.

The broker runs on the embedded SQLite store of its data directory; the tests provision
devices and read session rows through the same file with their own store (as the CLI does
next to a running server). Waits are bounded: the "ready:" line, a log line, the exit after
a signal, and polling the store (the broker is another process, so there is no event to
wait on).
"""

import asyncio
import os
import re
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue
from typing import Any, Self, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from auth.certificate import parse_credential
from bench.broker_process import broker_env
from storage.session_data import StoredSession
from storage.sql import SqlCredentialStore
from tests.certgen import Issued, issue
from tests.e2e.harness import V311_RETURN_CODE, WAIT, write_pem
from tests.paho_loop import stop_loop
from tests.serve_process import start

T = TypeVar("T")


class ServeProcess:
    """One ``nanoiot serve`` run on ``data_dir`` (``tests.serve_process.start``), ready; its
    log read as it comes."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.server_cert = data_dir / "certs" / "mqttserver.pub.pem"
        environment = {**broker_env(data_dir), "NANOIOT_LOG_LEVEL": "INFO", **env}
        self._served = start(environment, data_dir.parent)
        self.process = self._served.process
        self.log = self._served.log
        stdout = self._served.stdout
        self.port = int(stdout[-1].rsplit(":", 1)[1])
        http = re.search(r"admin API and web UI: (http://\S+)/ui", "".join(stdout))
        self.http_url = http.group(1) if http is not None else ""

    def log_tail(self, size: int = 3000) -> str:
        if self.process.poll() is not None:
            self.log.join()  # an ended process's last lines are read
        return "".join(self.log.lines)[-size:]

    def wait_for_log(self, fragment: str, within: float = WAIT) -> str:
        """The first line of this run's log containing ``fragment``, waited for at most
        ``within`` seconds."""
        return self.log.wait_for(f".*{re.escape(fragment)}.*", within=within).group(0)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self._served.stop(signal.SIGKILL)

    def terminate(self, within: float) -> tuple[int | None, float]:
        """SIGTERM; (exit code or None if still running after ``within`` s, seconds taken)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(within)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started


def database_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'nanoiot.db').resolve()}"


def with_store(data_dir: Path, use: Callable[[SqlCredentialStore], Coroutine[Any, Any, T]]) -> T:
    """Run ``use(store)`` on the data directory's store, opened for this call only."""

    data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> T:
        store = await SqlCredentialStore.open(database_url(data_dir), data_dir=data_dir)
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(run())


def provision_device(data_dir: Path, name: str, directory: Path) -> Path:
    """A device with a fresh certificate; returns its key-and-certificate file."""
    issued: Issued = issue(name)

    async def create(store: SqlCredentialStore) -> None:
        await store.create_device_with_credential(name, x509=parse_credential(issued.cert_pem))

    with_store(data_dir, create)
    return write_pem(directory, issued, name)


def provision_application(data_dir: Path, name: str, password: str) -> None:
    async def create(store: SqlCredentialStore) -> None:
        app = await store.create_device(name, type="application")
        await store.add_basic_credential(app.id, username=name, password=password, application=True)

    with_store(data_dir, create)


def stored_sessions(data_dir: Path) -> list[StoredSession]:
    return with_store(data_dir, lambda store: store.load_sessions())


def wait_for_store(data_dir: Path, what: str, check: Callable[[list[StoredSession]], bool]) -> None:
    """Poll the broker's store (another process) until ``check`` holds, within WAIT."""
    deadline = time.monotonic() + WAIT
    while not check(sessions := stored_sessions(data_dir)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the store never showed {what}: {sessions!r}")
        time.sleep(0.05)  # the other process signals no commit: read again


@dataclass
class Session:
    """A paho client that records CONNACK (return code, session present) and messages."""

    paho: mqtt.Client
    connack: "Queue[tuple[int, bool]]" = field(default_factory=Queue)
    messages: "Queue[mqtt.MQTTMessage]" = field(default_factory=Queue)
    subacks: "Queue[list[int]]" = field(default_factory=Queue)
    published: "Queue[int]" = field(default_factory=Queue)

    def wait_connack(self) -> tuple[int, bool]:
        return self.connack.get(timeout=WAIT)

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        self.paho.subscribe(topic, qos)
        return self.subacks.get(timeout=WAIT)

    def unsubscribe(self, topic: str) -> None:
        done = threading.Event()
        self.paho.on_unsubscribe = lambda *_args: done.set()
        self.paho.unsubscribe(topic)
        assert done.wait(WAIT), "no UNSUBACK"

    def receive(self, count: int) -> list[mqtt.MQTTMessage]:
        return [self.messages.get(timeout=WAIT) for _ in range(count)]

    def no_message(self, within: float = 0.3) -> bool:
        """True if nothing arrives: used only after a round trip proved delivery works."""
        try:
            self.messages.get(timeout=within)
        except Empty:
            return True
        return False

    def close(self) -> None:
        self.paho.disconnect()
        stop_loop(self.paho)
        self.paho._reset_sockets()  # its wake-up sockets: see ``tests.e2e.harness.Client.close``


def connect(
    broker: ServeProcess,
    certfile: Path | None,
    client_id: str,
    *,
    clean_session: bool,
    manual_ack: bool = False,
    credentials: tuple[str, str] | None = None,
) -> Session:
    paho = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
        manual_ack=manual_ack,
    )  # fmt: skip
    client = Session(paho)
    paho.tls_set(
        ca_certs=str(broker.server_cert),
        certfile=str(certfile) if certfile else None,
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    if credentials is not None:
        paho.username_pw_set(*credentials)
    paho.on_connect = lambda _c, _u, flags, rc, _p: client.connack.put(
        (V311_RETURN_CODE[rc.value], bool(flags.session_present))
    )
    paho.on_message = lambda _c, _u, message: client.messages.put(message)
    paho.on_subscribe = lambda _c, _u, _m, codes, _p: client.subacks.put([c.value for c in codes])
    paho.on_publish = lambda _c, _u, mid, _rc, _p: client.published.put(mid)
    paho.connect_async("127.0.0.1", broker.port, keepalive=60)
    paho.loop_start()
    return client


def stop_all(processes: list[ServeProcess]) -> None:
    """Whatever a test started, killed (a finished one is left as it is)."""
    for process in processes:
        process.kill()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- a subscriber device and a backend on brokers restarted over one data directory ---

PASSWORD = "backend-pass-1"


def payloads(count: int) -> list[bytes]:
    """Every byte value 0-255 in one payload, an empty one, and text."""
    special = [bytes(range(256)), bytes(range(255, -1, -1)), b"", b"\x00", "ünïcødé".encode()]
    return [*special, *(f"message {n}".encode() for n in range(count - len(special)))]


class Fleet:
    """One data directory, the brokers started on it, a subscriber device and a backend. As a
    context manager, its clients closed and its brokers killed on leaving."""

    def __init__(self, tmp_path: Path) -> None:
        self.data = tmp_path / "data"
        self.sensor = provision_device(self.data, "sensor", tmp_path)
        provision_application(self.data, "backend", PASSWORD)
        self.brokers: list[ServeProcess] = []
        self.clients: list[Session] = []

    def start(self, **env: str) -> ServeProcess:
        broker = ServeProcess(self.data, **env)
        self.brokers.append(broker)
        return broker

    def sensor_session(
        self, broker: ServeProcess, *, clean_session: bool = False, manual_ack: bool = False
    ) -> Session:
        client = connect(
            broker, self.sensor, "sensor", clean_session=clean_session, manual_ack=manual_ack
        )
        self.clients.append(client)
        return client

    def backend(self, broker: ServeProcess) -> Session:
        client = connect(
            broker, None, "backend", clean_session=True, credentials=("backend", PASSWORD)
        )
        self.clients.append(client)
        assert client.wait_connack() == (0, False)
        return client

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for broker in self.brokers:
            broker.kill()
