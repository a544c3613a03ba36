"""A real HAProxy in TCP mode, passing TLS through with ``send-proxy-v2``, in front of a real
``nanoiot serve``: the broker logs and records the device's own address, not HAProxy's.

Three loopback addresses keep the roles apart: the device connects from 127.0.0.3, HAProxy
reaches the broker from 127.0.0.2 (the only address in ``proxy_protocol_trusted``), and a
client on 127.0.0.1 that sends a PROXY header itself is refused.
"""

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Queue

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.broker.proxy_headers import v2_header
from tests.output import Output
from tests.paho_loop import stop_loop
from tests.serve_process import WAIT, provision_device, serving

TOKEN = "haproxy-test-admin-token-0123456789"
DEVICE, BALANCER, OTHER = "127.0.0.3", "127.0.0.2", "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def haproxy_config(front: int, broker: int) -> str:
    return f"""
global
    log stdout format raw local0 info
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend mqtt
    bind 127.0.0.1:{front}
    default_backend nanoiot
backend nanoiot
    default-server send-proxy-v2 check check-send-proxy inter 300ms
    server node1 127.0.0.1:{broker} source {BALANCER}
"""


@contextmanager
def haproxy(config: Path) -> Iterator["subprocess.Popen[str]"]:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        if os.environ.get("CI"):
            pytest.fail("haproxy is not installed (CI is set)", pytrace=False)
        pytest.skip("haproxy is not installed (apt-get install haproxy; .ci/run does)")
    checked = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, check=False)
    assert checked.returncode == 0, checked.stderr
    # Master-worker mode (-W): the master binds the listeners, then logs "Loading success."
    # once its worker runs; in the foreground (-db) that line is on stderr.
    process = subprocess.Popen(
        [binary, "-W", "-db", "-f", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    log = Output(process)
    try:
        log.wait_for(r"Loading success\.")
        yield process
    finally:
        process.terminate()  # the master stops its worker, then exits
        process.wait(WAIT)
        log.join()
        assert process.stderr is not None
        process.stderr.close()


def paho_from(source: str, port: int, ca: Path, certfile: Path) -> mqtt.Client:
    """A paho device connected from ``source`` (CONNACK 0)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.tls_set(
        ca_certs=str(ca), certfile=str(certfile), keyfile=None, tls_version=ssl.PROTOCOL_TLS_CLIENT
    )
    acks: Queue[ReasonCode] = Queue()
    client.on_connect = lambda _c, _u, _f, code, _p: acks.put(code)
    client.connect("localhost", port, bind_address=source)
    client.loop_start()
    assert acks.get(timeout=WAIT).value == 0
    return client


async def proxy_header_then_tls(port: int, ca: Path) -> None:
    """From 127.0.0.1 (not trusted): a PROXY header claiming another address, then TLS."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_sendall(sock, v2_header(source=("198.51.100.9", 1)))
    context = ssl.create_default_context(cafile=str(ca))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.wait_for(
            asyncio.open_connection(sock=sock, ssl=context, server_hostname="localhost"), WAIT
        )


def allowed_events(http: str) -> list[dict[str, str]]:
    """The auth events of allowed connects, once the broker's writer has stored one (it
    batches them for up to a fraction of a second)."""
    deadline = time.monotonic() + WAIT
    while True:
        events: list[dict[str, str]] = httpx.get(
            f"{http}/api/v1/auth-events",
            params={"outcome": "allowed"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.05)  # the writer signals no commit: ask again


def test_device_address_through_haproxy_and_untrusted_headers_refused(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    certfile = provision_device(cli_env, tmp_path, "thermo")
    env = cli_env | {
        "MQTT_SSL_BIND_ADDRESS": "127.0.0.1",
        "MQTT_SSL_BIND_PORT": "0",
        "NANOIOT_HTTP_PORT": "0",
        "NANOIOT_ADMIN_TOKEN": TOKEN,
        "NANOIOT_PROXY_PROTOCOL_TRUSTED": f'["{BALANCER}"]',
    }
    with serving(env, tmp_path) as (_process, stdout, stderr):
        broker_port = int(stdout[-1].rsplit(":", 1)[1])
        http = next(line for line in stdout if "admin API" in line).split()[5].removesuffix("/ui")
        ca = tmp_path / "data" / "certs" / "mqttserver.pub.pem"
        front = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(haproxy_config(front, broker_port))
        with haproxy(config):
            client = paho_from(DEVICE, front, ca, certfile)
            client.disconnect()
            stop_loop(client)
        stderr.wait_for(rf"connected device 'thermo' \(certificate\) from {DEVICE}, client id")
        events = allowed_events(http)
        assert [event["remoteAddress"] for event in events] == [DEVICE]
        # Health checks (a PROXY header, then close) are no handshake failure worth a line.
        assert "proxy_header" not in "".join(stderr.lines)
        assert "from a trusted load balancer" not in "".join(stderr.lines)
        # HAProxy's own address appears only where the trust setting is echoed at start.
        mentions = [line for line in stderr.lines if BALANCER in line]
        assert [line.split(": ", 1)[1] for line in mentions] == [
            f"PROXY protocol v2 required from ['{BALANCER}']\n"
        ]

        mark = len(stderr.lines)
        asyncio.run(proxy_header_then_tls(broker_port, ca))
        stderr.wait_for(
            rf"TLS handshake with {OTHER}:\d+ failed: PROXY protocol header from an address "
            "not in proxy_protocol_trusted",
            after=mark,
        )
