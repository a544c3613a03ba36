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
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO

import pytest

NATS_URL = "nats://127.0.0.1:4222"
WAIT = 10.0


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


def fresh_cluster_name() -> str:
    return f"t{secrets.token_hex(6)}"


async def delete_buckets(cluster: str) -> None:
    """Remove the key-value buckets (JetStream streams KV_<cluster>_*) and the streams
    (<cluster>_*) a test made."""
    import nats

    client = await nats.connect(NATS_URL)
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
def private_nats(directory: Path, *options: str) -> Iterator[str]:
    """A ``nats-server`` of its own on 127.0.0.1 and a free port; yields its URL."""
    ports = directory / "ports"
    ports.mkdir()
    with _nats_server(ports, options, stderr=subprocess.PIPE) as process:
        yield _client_url(ports, process)


@contextmanager
def _nats_server(
    ports: Path, options: tuple[str, ...], stderr: "int | IO[bytes]"
) -> Iterator["subprocess.Popen[bytes]"]:
    """``nats-server`` on 127.0.0.1, a free client port (written to a file in ``ports``)."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        if os.environ.get("CI"):
            pytest.fail("nats-server is not installed (CI is set)", pytrace=False)
        pytest.skip("nats-server is not installed")
    process = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", str(ports), *options],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        yield process
    finally:
        stop(process)


def stop(process: "subprocess.Popen[bytes]") -> None:
    if process.poll() is None:
        process.terminate()
    process.wait(WAIT)
    if process.stderr is not None:
        process.stderr.close()


@dataclass
class NatsCluster:
    """JetStream servers ``n1``, ``n2``, ... routed to each other as one NATS cluster."""

    urls: dict[str, str] = field(default_factory=dict)  # server name -> its client URL
    processes: dict[str, "subprocess.Popen[bytes]"] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Every server, as a node's ``nats_url`` lists them."""
        return ",".join(self.urls.values())

    def stop(self, name: str) -> None:
        """Stop server ``name`` (SIGTERM; its store stays on disk)."""
        stop(self.processes[name])

    def kill(self, name: str) -> None:
        """Kill server ``name`` (SIGKILL: a crash, nothing handed over to the others)."""
        self.processes[name].kill()
        stop(self.processes[name])


@contextmanager
def nats_cluster(directory: Path, size: int = 3) -> Iterator[NatsCluster]:
    """``size`` JetStream servers in a NATS cluster of their own, each with its own store,
    logging to ``<directory>/<name>.log``; yields once JetStream has elected its leader.
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
    a free client port) and logging to ``<directory>/<name>.log``; yields once each logged
    JetStream's leader (their routes make them one NATS cluster)."""
    directory.mkdir(exist_ok=True)
    cluster = NatsCluster()
    with ExitStack() as stack:
        for name, arguments in options.items():
            (directory / name).mkdir()
            log = stack.enter_context((directory / f"{name}.log").open("wb"))
            process = stack.enter_context(_nats_server(directory / name, arguments, stderr=log))
            cluster.processes[name] = process
            cluster.urls[name] = _client_url(directory / name, process)
        for name in cluster.urls:
            _wait_for_line(directory / f"{name}.log", b"metadata leader", cluster.processes[name])
        yield cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_line(log: Path, text: bytes, process: "subprocess.Popen[bytes]") -> None:
    """Until the server's log has ``text`` (polled: the log is a file, bounded wait)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if text in log.read_bytes():
            return
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"no {text.decode()!r} in {log}:\n{log.read_text(errors='replace')}")


def _client_url(ports: Path, process: "subprocess.Popen[bytes]") -> str:
    """The server writes <name>_<pid>.ports once it listens (a file event, bounded wait)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for found in ports.glob("*.ports"):
            try:
                listed = json.loads(found.read_text()).get("nats", [])
            except json.JSONDecodeError:  # still being written
                continue
            if listed:
                return str(listed[0])
        if process.poll() is not None:
            why = process.stderr.read().decode() if process.stderr else "see its log"
            raise AssertionError(f"nats-server exited: {why}")
        time.sleep(0.02)
    raise AssertionError("nats-server did not report its port in time")
