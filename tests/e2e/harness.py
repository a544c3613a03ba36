"""A real NanoIoT broker on a free port in a background thread, and real paho clients.

The broker runs in its own event loop (as in `nanoiot serve`), so tests use blocking MQTT
clients the way device code does, and wait on events, never on time.
"""

import asyncio
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue
from typing import Any, Self, TypeVar

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from auth.certificate import parse_credential
from broker.server import RunningBroker
from nanoiot.node import Node
from nanoiot.settings import Settings
from storage.records import Device
from tests.certgen import Issued, issue
from tests.paho_loop import stop_loop
from tests.sqlite_template import migrated_sqlite

T = TypeVar("T")
WAIT = 10.0  # seconds: a bound on waiting for an event, never a sleep
# paho 2 turns MQTT 3.1.1 CONNACK return codes into MQTT 5 reason codes; this undoes it.
V311_RETURN_CODE = {0: 0, 132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


def broker_settings(data_dir: Path, **overrides: object) -> Settings:
    """The tests' broker settings: ``data_dir``, free ports on 127.0.0.1; ``overrides``."""
    values: dict[str, object] = {
        "data_dir": data_dir,
        "mqtt_ssl_bind_address": "127.0.0.1",
        "mqtt_ssl_bind_port": 0,
        "http_bind_address": "127.0.0.1",
        "http_port": 0,
        "tls_handshake_timeout": 5.0,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@contextmanager
def running_broker(data_dir: Path, **overrides: object) -> Iterator["BrokerThread"]:
    """A broker on ``broker_settings(data_dir, **overrides)``, stopped on leaving. Without a
    ``database_url`` its SQLite file starts as a copy of the migrated template
    (tests.sqlite_template), which saves the migrations; tests of what a first start makes in
    a data directory start ``BrokerThread`` on ``broker_settings`` themselves."""
    if "database_url" not in overrides and not (data_dir / "nanoiot.db").exists():
        migrated_sqlite(data_dir / "nanoiot.db")
    with BrokerThread(broker_settings(data_dir, **overrides)) as running:
        yield running


class BrokerThread:
    """A NanoIoT node (broker + admin HTTP) in a thread with its own loop, as under
    ``nanoiot serve``; ``call`` runs coroutines there. As a context manager, stopped on
    leaving."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.node: Node = self.call(Node.start(settings))
        self.running: RunningBroker = self.node.broker

    @property
    def http_url(self) -> str:
        """The admin API and web UI, e.g. ``http://127.0.0.1:PORT``."""
        return self.node.http_url

    @property
    def admin_token(self) -> str:
        return self.node.admin_token

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def server_cert(self) -> Path:
        cert = self.running.settings.mqtt_ssl_pem_cert
        assert cert is not None
        return cert

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def metrics(self) -> str:
        """The admin API's ``/metrics`` text (Prometheus), read with the admin token."""
        response = httpx.get(
            f"{self.http_url}/metrics",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=WAIT,
        )
        response.raise_for_status()
        return response.text

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.node.stop())
        finally:
            # As asyncio.run does: let every task still running (a connection accepted while
            # the listener closed) see its cancellation and close its transport.
            self.call(_cancel_remaining_tasks())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(WAIT)
            self.loop.close()

    def provision(self, name: str, device: Issued | None = None) -> tuple[Device, Issued]:
        """A device with a fresh self-signed certificate registered for it."""
        device = device or issue(name)
        store = self.running.store
        created, _ = self.call(
            store.create_device_with_credential(name, x509=parse_credential(device.cert_pem))
        )
        return created, device

    def application(self, name: str, username: str, password: str) -> Device:
        """A backend application with MQTT basic credentials."""
        store = self.running.store

        async def create() -> Device:
            app = await store.create_device(name, type="application")
            await store.add_basic_credential(
                app.id, username=username, password=password, application=True
            )
            return app

        return self.call(create())


async def _cancel_remaining_tasks() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def device_client(
    broker: BrokerThread, directory: Path, name: str, issued: Issued | None = None, **options: Any
) -> tuple["Client", Issued]:
    """Provision ``name`` (unless ``issued`` is given: then reuse that certificate) and connect."""
    if issued is None:
        _, issued = broker.provision(name)
    certfile = write_pem(directory, issued, name)
    return mqtt_client(broker.port, broker.server_cert, certfile, **options), issued


def application_client(broker: BrokerThread, name: str, password: str, **options: Any) -> "Client":
    """Register the application ``name`` (user name ``name``, no certificate) and connect."""
    broker.application(name, name, password)
    return mqtt_client(
        broker.port, broker.server_cert, None, username=name, password=password, **options
    )


def write_pem(directory: Path, issued: Issued, name: str) -> Path:
    """The reference's .nopass.pem: key then certificate, one file."""
    path = directory / f"{name}.nopass.pem"
    path.write_text(issued.key_pem + issued.cert_pem)
    return path


@dataclass
class Client:
    """A paho client whose callbacks feed queues the test waits on."""

    paho: mqtt.Client
    connack: "Queue[ReasonCode]" = field(default_factory=Queue)
    messages: "Queue[mqtt.MQTTMessage]" = field(default_factory=Queue)
    subacks: "Queue[list[ReasonCode]]" = field(default_factory=Queue)
    disconnected: threading.Event = field(default_factory=threading.Event)
    session_present: "Queue[bool]" = field(default_factory=Queue)  # of each CONNACK

    def wait_connack(self) -> int:
        """The MQTT 3.1.1 CONNACK return code (paho reports MQTT 5 reason codes)."""
        return V311_RETURN_CODE[self.connack.get(timeout=WAIT).value]

    def subscribe(self, topic: str, qos: int = 1) -> list[ReasonCode]:
        self.paho.subscribe(topic, qos)
        return self.subacks.get(timeout=WAIT)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        info = self.paho.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(WAIT)

    def next_message(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=WAIT)

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
        # paho closes its wake-up socket pair only when collected; collected as part of a
        # reference cycle (its callbacks hold this object), the sockets may be finalized
        # first and warn (ResourceWarning, an error under filterwarnings). Closed here.
        self.paho._reset_sockets()


def mqtt_client(
    port: int,
    server_cert: Path,
    certfile: Path | None,
    *,
    client_id: str = "",
    clean_session: bool = True,
    username: str | None = None,
    password: str | None = None,
    keepalive: int = 60,
    will: tuple[str, bytes] | None = None,
    on_connack: Callable[[], None] | None = None,
) -> Client:
    """Connect the way the product text shows (tls_set with the server cert as ca_certs).
    ``on_connack``: as for ``wired``."""
    paho = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
    )
    client = wired(paho, on_connack)
    paho.tls_set(
        ca_certs=str(server_cert),
        certfile=str(certfile) if certfile else None,
        keyfile=None,
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    if username is not None:
        paho.username_pw_set(username, password)
    if will is not None:
        paho.will_set(will[0], will[1], qos=1)
    paho.connect_async("127.0.0.1", port, keepalive=keepalive)
    paho.loop_start()
    return client


def wired(paho: mqtt.Client, on_connack: Callable[[], None] | None = None) -> Client:
    """The queue-fed ``Client`` around a paho client the caller configures and connects.
    ``on_connack``: called in paho's thread as each CONNACK arrives, before it is queued."""
    client = Client(paho)

    def on_connect(
        _c: object, _u: object, flags: mqtt.ConnectFlags, rc: ReasonCode, _p: object
    ) -> None:
        if on_connack is not None:
            on_connack()
        client.session_present.put(flags.session_present)
        client.connack.put(rc)

    paho.on_connect = on_connect
    paho.on_message = lambda _c, _u, message: client.messages.put(message)
    paho.on_subscribe = lambda _c, _u, _mid, codes, _p: client.subacks.put(list(codes))
    paho.on_disconnect = lambda *_args: client.disconnected.set()
    return client
