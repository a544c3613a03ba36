"""``nanoiot serve`` on the IPv6 wildcard (``::``) for MQTT and the admin server: one socket
each takes IPv6 and IPv4 clients, and the addresses it prints are written as URLs write IPv6
(RFC 3986 §3.2.2), so they can be copied."""

import re
import socket
import ssl
from pathlib import Path

import httpx
import pytest

from tests.serve_process import WAIT, provision_device, serving

# An MQTT 3.1.1 CONNECT (§3.1): clean session, keep alive 60 s, client id "v6"; and the
# CONNACK accepting it (§3.2).
CONNECT = bytes.fromhex("100e00044d5154540402003c00027636")
CONNACK_ACCEPTED = bytes.fromhex("20020000")


def _mqtt_connack(host: str, port: int, server_cert: Path, device: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(server_cert))
    context.load_cert_chain(str(device))
    raw = socket.create_connection((host, port), timeout=WAIT)
    # The development certificate names localhost and 127.0.0.1, not ::1.
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(CONNECT)
        answer = b""
        while len(answer) < len(CONNACK_ACCEPTED):
            chunk = tls.recv(len(CONNACK_ACCEPTED) - len(answer))
            if not chunk:
                break
            answer += chunk
        return answer


def test_the_ipv6_wildcard_takes_ipv6_and_ipv4_clients(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    if not socket.has_dualstack_ipv6():
        pytest.skip("this system cannot take IPv4 and IPv6 on one socket")
    device = provision_device(cli_env, tmp_path, "dual")
    env = cli_env | {
        "MQTT_SSL_BIND_ADDRESS": "::",
        "MQTT_SSL_BIND_PORT": "0",
        "NANOIOT_HTTP_BIND_ADDRESS": "::",
        "NANOIOT_HTTP_PORT": "0",
    }
    with serving(env, tmp_path) as (_process, stdout, _log):
        mqtt = re.fullmatch(r"ready: mqtts://\[::\]:(\d+)\n", stdout[-1])
        admin = next(filter(None, (re.search(r"http://\[::\]:(\d+)/ui", s) for s in stdout)))
        assert mqtt is not None, stdout
        server_cert = tmp_path / "data/certs/mqttserver.pub.pem"
        for host in ("::1", "127.0.0.1"):
            assert _mqtt_connack(host, int(mqtt[1]), server_cert, device) == CONNACK_ACCEPTED
            health = httpx.get(f"http://{'[::1]' if host == '::1' else host}:{admin[1]}/healthz")
            assert health.status_code == 200, (host, health.text)
