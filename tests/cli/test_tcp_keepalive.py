"""TCP keepalive on the broker's MQTT connections (``tcp_keepalive_idle``), seen from outside:
a real ``nanoiot serve`` on a free port, real paho devices that ask for no MQTT keep-alive
(0), and the kernel's own view of the broker's end of each connection (``ss -o``:
``timer:(keepalive,<time left>,<probes sent>)``)."""

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nanoiot.errors import ConfigError
from nanoiot.settings import load_settings
from tests.e2e.harness import Client, mqtt_client
from tests.natsserver import NATS_URL, shared_cluster
from tests.output import Output
from tests.paho_loop import stop_loop
from tests.serve_process import WAIT, provision_device, serving

_TIMER = re.compile(r"timer:\(keepalive,(?:(\d+)min)?(?:(\d+)sec)?,\d+\)")
# linux/tcp.h: a socket in repair mode is closed without a FIN or RST (CRIU's way to take a
# connection away); Python names no constant for it.
_TCP_REPAIR = 19


def broker_ends(port: int, count: int) -> list[str]:
    """``ss``'s lines for the ``count`` established connections whose local port is ``port``,
    once the broker's sends on them are all acknowledged: until then ss shows the
    retransmission timer instead of keepalive's (a silent client delays its ACKs)."""
    binary = shutil.which("ss")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("ss is not installed (CI is set)", pytrace=False)
        pytest.skip("ss is not installed (apt-get install iproute2)")
    deadline = time.monotonic() + WAIT
    while True:
        shown = subprocess.run(
            [binary, "-tnoH", "state", "established", f"( sport = :{port} )"],
            capture_output=True, text=True, check=True, timeout=WAIT,
        ).stdout.splitlines()  # fmt: skip
        # Fields: Recv-Q, Send-Q (bytes sent and not acknowledged), local, peer, timer.
        settled = len(shown) == count and all(line.split()[1] == "0" for line in shown)
        if settled or time.monotonic() > deadline:
            assert settled, shown
            return shown
        time.sleep(0.02)  # the kernel signals no acknowledgement: look again


def keepalive_left(line: str) -> int | None:
    """Seconds to the next keepalive probe ``ss`` shows on ``line`` (whole seconds: ss drops
    the milliseconds past a second), or None without a keepalive timer."""
    match = _TIMER.search(line)
    if match is None:
        return None
    minutes, seconds = match.groups()
    return int(minutes or 0) * 60 + int(seconds or 0)


@pytest.fixture
def device(cli_env: dict[str, str], tmp_path: Path) -> Path:
    return provision_device(cli_env, tmp_path, "thermo")


def broker_env(cli_env: dict[str, str], idle: str | None) -> dict[str, str]:
    env = cli_env | {
        "MQTT_SSL_BIND_ADDRESS": "127.0.0.1",
        "MQTT_SSL_BIND_PORT": "0",
        "NANOIOT_HTTP_PORT": "0",
    }
    return env if idle is None else env | {"NANOIOT_TCP_KEEPALIVE_IDLE": idle}


@contextmanager
def connected(
    port: int,
    workdir: Path,
    certfile: Path,
    *,
    client_id: str = "",
    keepalive: int = 0,
    will: tuple[str, bytes] | None = None,
) -> Iterator[Client]:
    """A device connected over mutual TLS; by default with MQTT keep-alive 0, so that it
    sends nothing after its CONNECT."""
    server_cert = workdir / "data/certs/mqttserver.pub.pem"
    client = mqtt_client(
        port, server_cert, certfile, client_id=client_id, keepalive=keepalive, will=will
    )
    try:
        assert client.wait_connack() == 0
        yield client
    finally:
        client.close()


@pytest.mark.parametrize(
    ("setting", "idle"), [(None, 300), ("517", 517), ("0", None)], ids=["default", "517", "off"]
)
def test_the_broker_end_of_a_silent_device_has_the_configured_keepalive(
    cli_env: dict[str, str], device: Path, tmp_path: Path, setting: str | None, idle: int | None
) -> None:
    with serving(broker_env(cli_env, setting), tmp_path) as (_process, stdout, _log):
        port = int(stdout[-1].rsplit(":", 1)[1])
        with connected(port, tmp_path, device):
            (line,) = broker_ends(port, 1)
            left = keepalive_left(line)
            if idle is None:
                assert left is None, line
            else:
                # Counted down since the connection was accepted, moments ago.
                assert left is not None, line
                assert idle - WAIT <= left <= idle, line


def test_a_device_whose_host_vanished_is_dropped_and_its_will_published(
    cli_env: dict[str, str], device: Path, tmp_path: Path
) -> None:
    """The device's socket is taken away without a FIN or RST, as by a host that lost power
    and came back: the broker's first probe, a second later, meets a RST. Without keepalive
    the broker would never send to a device with keep-alive 0 and keep its connection."""
    with serving(broker_env(cli_env, "1"), tmp_path) as (_process, stdout, _log):
        port = int(stdout[-1].rsplit(":", 1)[1])
        with connected(port, tmp_path, device, client_id="watcher", keepalive=60) as watcher:
            assert [code.value for code in watcher.subscribe("v1/devices/me/status")] == [1]
            with connected(
                port, tmp_path, device, client_id="lost", will=("v1/devices/me/status", b"gone")
            ) as lost:
                stop_loop(lost.paho)
                connection = lost.paho.socket()
                assert isinstance(connection, socket.socket)
                try:
                    connection.setsockopt(socket.IPPROTO_TCP, _TCP_REPAIR, 1)
                except PermissionError:
                    pytest.skip("TCP_REPAIR needs CAP_NET_ADMIN")
                lost.paho._sock_close()  # no FIN, no RST: the broker is not told
                will = watcher.next_message()
                assert (will.topic, will.payload) == ("v1/devices/me/status", b"gone")


@pytest.mark.slow
def test_every_worker_keeps_its_connections_alive(
    cli_env: dict[str, str], device: Path, tmp_path: Path
) -> None:
    with shared_cluster() as cluster:
        env = broker_env(cli_env, "517") | {
            "NANOIOT_NATS_URL": NATS_URL,
            "NANOIOT_CLUSTER_NAME": cluster,
            # Which worker took a connection is read from its "connected" line, which a
            # device writes a few times a minute by default.
            "NANOIOT_AUTH_LOG_REPEATS": "1000",
        }
        with serving(env, tmp_path, "--workers", "2") as (_process, stdout, log):
            port = int(stdout[-1].rsplit(":", 1)[1])
            workers = connect_on_each_worker(port, tmp_path, device, log)
            try:
                for line in broker_ends(port, len(workers)):
                    left = keepalive_left(line)
                    assert left is not None, line
                    assert 517 - WAIT <= left <= 517, line
            finally:
                for client in workers:
                    client.close()


def connect_on_each_worker(port: int, workdir: Path, device: Path, log: Output) -> list[Client]:
    """Silent devices connected until each of the 2 workers has one (the kernel spreads
    connections over the workers by a hash of their addresses)."""
    clients: list[Client] = []
    seen: set[str] = set()
    while seen != {"w1", "w2"} and len(clients) < 30:
        mark = len(log.lines)
        client = mqtt_client(
            port, workdir / "data/certs/mqttserver.pub.pem", device,
            client_id=f"c{len(clients)}", keepalive=0,
        )  # fmt: skip
        clients.append(client)
        assert client.wait_connack() == 0
        seen.add(log.wait_for(r" (w\d) nanoiot\.auth: connected device 'thermo'", after=mark)[1])
    assert seen == {"w1", "w2"}
    return clients


@pytest.mark.parametrize(
    ("value", "says"),
    [("-1", "greater than or equal to 0"), ("32768", "less than or equal to 32767")],
)
def test_idle_out_of_bounds_is_refused_in_one_line(tmp_path: Path, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={"NANOIOT_TCP_KEEPALIVE_IDLE": value}, cwd=tmp_path)
    assert str(refused.value).startswith(
        "setting 'tcp_keepalive_idle' (from $NANOIOT_TCP_KEEPALIVE_IDLE): "
    )
    assert says in str(refused.value)
    for edge in ("0", "32767"):  # off, and Linux's longest (MAX_TCP_KEEPIDLE)
        settings = load_settings(environ={"NANOIOT_TCP_KEEPALIVE_IDLE": edge}, cwd=tmp_path)
        assert settings.tcp_keepalive_idle == int(edge)
