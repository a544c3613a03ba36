"""NATS for tests: the machine's server on 127.0.0.1:4222 (JetStream), and private servers.

The shared server is used with a fresh ``cluster_name`` per test (``t<random>``), so tests
never see each other's subjects or key-value buckets, and the buckets a test made are deleted
afterwards. When it cannot be reached, tests that need it are skipped locally and fail under
CI (``CI`` set). Private servers (``nats-server`` on a free port, with authentication or TLS)
are started and stopped by the test that needs them.
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
from contextlib import contextmanager
from functools import cache
from pathlib import Path

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
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        if os.environ.get("CI"):
            pytest.fail("nats-server is not installed (CI is set)", pytrace=False)
        pytest.skip("nats-server is not installed")
    ports = directory / "ports"
    ports.mkdir()
    process = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", str(ports), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield _client_url(ports, process)
    finally:
        process.terminate()
        process.wait(WAIT)
        if process.stderr is not None:
            process.stderr.close()


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
            assert process.stderr is not None
            raise AssertionError(f"nats-server exited: {process.stderr.read().decode()}")
        time.sleep(0.02)
    raise AssertionError("nats-server did not report its port in time")
