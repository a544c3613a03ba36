"""Nodes of a cluster as separate ``nanoiot serve`` processes, for tests.

Every node joins the machine's NATS under the test's own ``cluster_name`` and shares one
fresh PostgreSQL database and one data folder (the development server certificate, made
before the first node starts). MQTT and HTTP ports are free ones. Devices and applications
are provisioned in the shared database by the store calls the CLI makes, in this process: a
``nanoiot`` process per step took about 2 s of CPU (its imports) for a few milliseconds of
work, and the cluster tests made over 300 of them (the CLI has tests of its own). Clients are
real paho clients over mutual TLS.
"""

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats

from auth.certificate import parse_credential
from broker.devcerts import with_development_credentials
from nanoiot.cli.common import open_store
from nanoiot.members import decode_member
from nanoiot.settings import Settings, load_settings
from storage.interface import CredentialStore
from storage.migrate import upgrade
from storage.token_key import settled_token_key
from tests.certgen import issue
from tests.cli.conftest import NANOIOT
from tests.cluster.proxy import Proxy
from tests.e2e.harness import Client, mqtt_client, write_pem
from tests.natsserver import NATS_URL, shared_cluster
from tests.output import Output
from tests.serve_process import WAIT, Served, launch, until_ready
from tests.storage.pg import fresh_database

ADMIN_TOKEN = "cluster-test-admin-token-0123456789"
APP_PASSWORD = "app-password"
# Seconds between heartbeats in tests that cut a node off: long enough for a test to act
# between the node's fencing and the others taking it as gone (one heartbeat).
SLOW_HEARTBEAT = 5.0


@dataclass
class Node:
    name: str
    process: "subprocess.Popen[str]"
    log: Output
    port: int
    http_url: str


class Cluster:
    def __init__(self, workdir: Path, env: dict[str, str], stack: ExitStack) -> None:
        self.workdir = workdir
        self.env = env
        self.nodes: dict[str, Node] = {}
        self._stack = stack
        self._clients: list[Client] = []

    @property
    def server_cert(self) -> Path:
        return Path(self.env["NANOIOT_DATA_DIR"]) / "certs" / "mqttserver.pub.pem"

    def cli(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [NANOIOT, *args], env=self.env, cwd=self.workdir, input=stdin,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"nanoiot {' '.join(args)}: {result.stderr}"
        return result.stdout

    def start(self, name: str, **settings: str) -> Node:
        """``nanoiot serve`` as node ``name``; ``settings``: NANOIOT_* variables of its own."""
        return self.start_all(name, **settings)[0]

    def start_all(self, *names: str, **settings: str) -> list[Node]:
        """``start`` of each of ``names``, launched at once and all ready on return: a node's
        start (a Python interpreter's imports, then joining NATS) takes about a second, and
        those of several overlap. For nodes whose order of joining does not matter."""
        launched = []
        for name in names:
            env = self.env | settings | {"NANOIOT_NODE_NAME": name}
            served = launch(env, self.workdir)
            self._stack.callback(served.stop)
            launched.append((name, served))
        return [self._ready(name, served) for name, served in launched]

    def _ready(self, name: str, served: Served) -> Node:
        stdout = until_ready(served).stdout
        port = int(stdout[-1].rsplit(":", 1)[1])
        http = re.search(r"admin API and web UI: (http://\S+)/ui", "".join(stdout))
        assert http is not None, stdout
        node = self.nodes[name] = Node(name, served.process, served.log, port, http.group(1))
        return node

    def kill(self, name: str) -> None:
        node = self.nodes[name]
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(WAIT)

    @property
    def settings(self) -> Settings:
        """The settings a ``nanoiot`` command run by ``cli`` reads."""
        return load_settings(environ=self.env, cwd=self.workdir)

    async def upgrade_database(self) -> None:
        """What ``nanoiot db upgrade`` does."""
        settings = self.settings
        key = await settled_token_key(settings)
        await upgrade(settings.effective_database_url, token_hash_key=key)

    def in_store(self, action: Callable[[CredentialStore], Awaitable[object]]) -> None:
        """``action`` on the shared database's store, opened as a ``nanoiot`` command opens it."""

        async def run() -> None:
            async with open_store(self.settings) as store:
                await action(store)

        asyncio.run(run())

    def device(self, name: str) -> Path:
        """A device with a fresh certificate (``nanoiot device add`` and ``credentials
        add-x509``); its .nopass.pem file."""
        issued = issue(name)
        certificate = self.workdir / f"{name}.pub.pem"
        certificate.write_text(issued.cert_pem)

        async def add(store: CredentialStore) -> None:
            device = await store.create_device(name)
            await store.add_x509_credential(device.id, parse_credential(certificate.read_bytes()))

        self.in_store(add)
        return write_pem(self.workdir, issued, name)

    def application(self, name: str, password: str = APP_PASSWORD) -> None:
        """An application with MQTT user name ``name`` (``nanoiot device add --type
        application`` and ``credentials add-basic --application``)."""

        async def add(store: CredentialStore) -> None:
            device = await store.create_device(name, type="application")
            await store.add_basic_credential(
                device.id, username=name, password=password, application=True
            )

        self.in_store(add)

    def connect(
        self, node: str, certfile: Path | None = None, *, app: str | None = None,
        password: str = APP_PASSWORD, **options: object,
    ) -> Client:  # fmt: skip
        """A client connected (CONNACK 0) to ``node``: a device (``certfile``) or an
        application (``app``, its user name)."""
        client = mqtt_client(
            self.nodes[node].port, self.server_cert, certfile, username=app,
            password=password if app else None, **options,  # type: ignore[arg-type]
        )  # fmt: skip
        self._clients.append(client)
        assert client.wait_connack() == 0
        return client

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()


@contextmanager
def cluster(workdir: Path) -> Iterator[Cluster]:
    with ExitStack() as stack, shared_cluster() as name, fresh_database() as database:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOIOT_", "MQTT_SSL_"))}
        env |= {
            "NANOIOT_DATA_DIR": str(workdir / "data"),
            "NANOIOT_DATABASE_URL": database,
            "NANOIOT_ADMIN_TOKEN": ADMIN_TOKEN,
            "NANOIOT_NATS_URL": NATS_URL,
            "NANOIOT_CLUSTER_NAME": name,
            "NANOIOT_HTTP_PORT": "0",
            "MQTT_SSL_BIND_ADDRESS": "127.0.0.1",
            "MQTT_SSL_BIND_PORT": "0",
            "NANOIOT_SYS_INTERVAL": "0",
        }
        made = Cluster(workdir, env, stack)
        asyncio.run(made.upgrade_database())
        # Made before any node starts: nodes started at once would each make their own.
        with_development_credentials(made.settings)
        try:
            yield made
        finally:
            made.close_clients()


def watched_on_b(nodes: Cluster) -> tuple[Path, Client]:
    """Nodes a and b, an application "watcher" on b subscribed to every device's telemetry at
    QoS 2 and reached from a; a device "sensor" (its .nopass.pem file), not connected."""
    sensor = nodes.device("sensor")
    prober = nodes.device("prober")
    nodes.application("watcher")
    nodes.start_all("a", "b")
    watcher = nodes.connect("b", app="watcher", client_id="watcher")
    assert watcher.subscribe("devices/+/telemetry", qos=2) == [2]
    probe = nodes.connect("a", prober, client_id="prober")
    until_routed(probe, "v1/devices/me/telemetry", watcher)
    return sensor, watcher


def cut_off_a_watched_on_b(nodes: Cluster, proxy: Proxy) -> Client:
    """Nodes a (reaching NATS through ``proxy``) and b, with ``SLOW_HEARTBEAT`` s heartbeats:
    once the proxy is cut, A fences itself off two heartbeats after its last one written and
    B may take it as gone one heartbeat later (``broker.cluster.fence``). An application
    "watcher" on B, subscribed to every device's status at QoS 1."""
    nodes.application("watcher")
    nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(SLOW_HEARTBEAT)
    nodes.start("a", NANOIOT_NATS_URL=proxy.url)
    nodes.start("b")
    watcher = nodes.connect("b", app="watcher", client_id="watcher")
    assert watcher.subscribe("devices/+/status", qos=1) == [1]
    return watcher


def until_routed(publisher: Client, topic: str, *subscribers: Client) -> None:
    """Publish probes at QoS 0 until each subscriber got one, then let the rest drain: a
    subscription made on one node reaches the others' route tables asynchronously
    (milliseconds)."""
    waiting = list(subscribers)
    for attempt in range(200):
        publisher.publish(topic, f"probe {attempt}".encode(), qos=0)
        waiting = [client for client in waiting if client.no_message(within=0.05)]
        if not waiting:
            break
    else:
        raise AssertionError(f"no probe on {topic} reached {len(waiting)} subscribers")
    for client in subscribers:
        while not client.no_message(within=0.3):
            pass  # probes still on their way


TELEMETRY = "v1/devices/me/telemetry"  # what the device "sensor" publishes to


def backend_away_on_a(
    nodes: Cluster,
    qos: int,
    *,
    also: tuple[str, ...] = (),
    a_settings: Mapping[str, str] | None = None,
) -> Client:
    """Node a (started with ``a_settings``), b and the nodes ``also``; the application
    "backend"'s persistent session on a, subscribed to every device's telemetry at ``qos``,
    its client away; the device "sensor" connected to b (returned)."""
    sensor = nodes.device("sensor")
    nodes.application("backend")
    nodes.start("a", **(a_settings or {}))
    nodes.start_all("b", *also)
    backend = nodes.connect("a", app="backend", client_id="backend", clean_session=False)
    assert backend.subscribe("devices/+/telemetry", qos=qos) == [qos]
    device = nodes.connect("b", sensor, client_id="sensor")
    until_routed(device, TELEMETRY, backend)
    backend.close()  # the session stays on a, its client away
    return device


def backend_acking_when_told(nodes: Cluster, node: str) -> Client:
    """The persistent subscriber, acknowledging nothing until told (``paho.ack``)."""
    client = nodes.connect(node, app="backend", client_id="backend", clean_session=False)
    client.paho.manual_ack_set(True)
    return client


def adopting_node(nodes: Cluster, *names: str) -> str:
    """The node whose log says it adopted the dead member's sessions."""
    return logged(nodes, "adopted 1 persistent sessions", *names)


def logged(nodes: Cluster, text: str, *names: str) -> str:
    """The first of ``names`` whose log has a line with ``text`` (either may: polled, as
    two processes' logs have no one event to wait on), within WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for name in names:
            if any(text in line for line in nodes.nodes[name].log.lines):
                return name
        threading.Event().wait(0.05)
    logs = "".join(
        f"--- {name} ---\n{''.join(nodes.nodes[name].log.lines[-40:])}" for name in names
    )
    raise AssertionError(f"no node logged {text!r}; their last lines:\n{logs}")


def any_closed(clients: list[Client]) -> bool:
    """Whether the server closed the connection of any of ``clients``."""
    return any(client.disconnected.is_set() for client in clients)


def wait_for(condition: Callable[[], bool], within: float = WAIT) -> bool:
    """Poll ``condition`` (paho's state has no event for it), bounded by ``within``."""
    done = threading.Event()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        done.wait(0.02)
    return False


async def heartbeat_runs(cluster_name: str, member: str, *, count: int) -> list[int]:
    """The ``run`` of each of the next ``count`` heartbeats of ``member``, as NATS has them."""
    client = await nats.connect(NATS_URL)
    try:
        bucket = await client.jetstream().key_value(f"{cluster_name}_members")
        watcher = await bucket.watch(member, include_history=False)
        runs: list[int] = []
        async with asyncio.timeout(WAIT):
            while len(runs) < count:
                entry = await watcher.updates(timeout=WAIT)  # type: ignore[no-untyped-call]
                if entry is not None and entry.value:
                    runs.append(decode_member(entry.value).run)
        await watcher.stop()  # type: ignore[no-untyped-call]
        return runs
    finally:
        await client.close()


def metrics(nodes: Cluster, node: str) -> str:
    """The text of ``node``'s ``/metrics``."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    answer = httpx.get(f"{nodes.nodes[node].http_url}/metrics", headers=headers, timeout=WAIT)
    answer.raise_for_status()
    return answer.text


def counter(text: str, name: str) -> float:
    """The value of the metric ``name`` (without labels) in ``text``."""
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))
