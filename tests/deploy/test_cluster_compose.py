"""docker-compose.cluster.yml and deploy/haproxy.cfg, as the real Compose v2 binary and the
real HAProxy read them: valid, and agreeing with each other and with the settings model
(three nodes on a three-server NATS JetStream cluster, with three copies of the cluster's
state, and PostgreSQL; HAProxy the only public door and the only address the nodes take
PROXY headers from). The three NATS servers' commands run with the real nats-server binary,
on free ports instead of the compose network's."""

import asyncio
import ipaddress
import os
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from broker.cluster.link import ClusterLink
from nanoiot.settings import Settings, load_settings
from tests.broker.cluster.stream_copies import copies
from tests.deploy.files import (
    ENV_EXAMPLE,
    FILLED_ENV,
    REPO,
    dockerfile_env,
    dockerfile_instructions,
    final_stage,
    read_env_file,
    run_compose,
    write_env_file,
)
from tests.natsserver import WAIT, free_port, nats_servers

CLUSTER_FILE = REPO / "docker-compose.cluster.yml"
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
NODES = ("nanoiot-1", "nanoiot-2", "nanoiot-3")
NATS = ("nats-1", "nats-2", "nats-3")
ROUTE_PORT = 6222  # NATS's cluster port, on the compose network


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cluster")
    return write_env_file(folder / ".env", read_env_file(ENV_EXAMPLE) | FILLED_ENV)


def cluster_model(env_file: Path, *profiles: str) -> dict[str, Any]:
    import json

    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = run_compose(env_file, *flags, "config", "--format", "json", compose_file=CLUSTER_FILE)
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


@pytest.fixture(scope="module")
def model(env_file: Path) -> dict[str, Any]:
    return cluster_model(env_file)


def test_config_is_valid_with_the_tools_profile(env_file: Path) -> None:
    result = run_compose(env_file, "--profile", "tools", "config", "-q", compose_file=CLUSTER_FILE)
    assert (result.returncode, result.stderr) == (0, "")


def test_config_refuses_missing_secrets(tmp_path: Path) -> None:
    result = run_compose(ENV_EXAMPLE, "config", "-q", compose_file=CLUSTER_FILE)
    assert result.returncode != 0
    assert "in .env" in result.stderr


def test_three_nodes_three_nats_postgres_and_haproxy(model: dict[str, Any], env_file: Path) -> None:
    assert set(model["services"]) == {*NODES, *NATS, "postgres", "haproxy"}
    assert "keygen" in cluster_model(env_file, "tools")["services"]
    for node in NODES:  # three copies need all three JetStream servers
        waits = model["services"][node]["depends_on"]
        assert {name: waits[name]["condition"] for name in NATS} == dict.fromkeys(
            NATS, "service_healthy"
        )
    # Nodes 2 and 3 wait for node 1, which migrated the database.
    for node in NODES[1:]:
        assert model["services"][node]["depends_on"]["nanoiot-1"]["condition"] == "service_healthy"


def test_the_nats_servers_are_routed_to_each_other_with_jetstream_and_a_store_each(
    model: dict[str, Any],
) -> None:
    stores, clusters = set(), set()
    for name in NATS:
        server = model["services"][name]
        assert server["image"].startswith("nats:")
        options = dict(argument.partition("=")[::2] for argument in server["command"])
        assert options["--name"] == name
        assert "--jetstream" in options
        assert options["--cluster"] == f"nats://0.0.0.0:{ROUTE_PORT}"
        routes = [urlsplit(url) for url in options["--routes"].split(",")]
        assert sorted(route.hostname or "" for route in routes) == list(NATS)
        assert {route.port for route in routes} == {ROUTE_PORT}
        (volume,) = server["volumes"]
        assert volume["type"] == "volume"
        assert volume["target"] == options["--store_dir"]
        stores.add(volume["source"])
        check = server["healthcheck"]["test"]
        assert check[-1] == f"http://127.0.0.1:{options['--http_port']}/healthz"
        clusters.add(options["--cluster_name"])
    assert len(stores) == len(NATS)  # each its own
    assert len(clusters) == 1


def node_settings(model: dict[str, Any], node: str, tmp_path: Path) -> Settings:
    """What a node's server loads: the image's ENV under the compose file's."""
    image = dockerfile_env(final_stage(dockerfile_instructions()))
    empty = tmp_path / "nanoiot.yaml"
    empty.write_text("")
    return load_settings(empty, image | model["services"][node]["environment"])


def test_every_node_validates_and_joins_the_same_cluster(
    model: dict[str, Any], tmp_path: Path
) -> None:
    names = set()
    for node in NODES:
        settings = node_settings(model, node, tmp_path)
        assert settings.nats_url == ",".join(f"nats://{name}:4222" for name in NATS)
        assert settings.cluster_replicas == len(NATS)
        assert settings.effective_database_url.startswith("postgresql+asyncpg://nanoiot:")
        assert "@postgres:5432/" in settings.effective_database_url
        assert settings.cluster_name == "nanoiot"
        names.add(settings.node_name)
        build = model["services"][node]["build"]
        assert "cluster" in build["args"]["NANOIOT_EXTRAS"].split(",")
    assert names == set(NODES)


def test_the_nats_servers_as_configured_form_one_cluster_keeping_three_copies(
    model: dict[str, Any], tmp_path: Path
) -> None:
    """Their commands, run by the real nats-server with the compose network's hosts and
    ports swapped for 127.0.0.1 and free ones: each answers its health check, and a node
    with the compose file's settings keeps each bucket on all three."""
    routes = {name: free_port() for name in NATS}
    monitors = {name: free_port() for name in NATS}
    options = {
        name: tuple(
            _local(argument, name, routes, monitors[name], tmp_path / "nats" / name / "store")
            for argument in model["services"][name]["command"]
        )
        for name in NATS
    }
    with nats_servers(tmp_path / "nats", options) as servers:
        for port in monitors.values():
            assert _healthz(port) == 200
        node = node_settings(model, "nanoiot-1", tmp_path)
        settings = node.model_copy(update={"nats_url": servers.url})
        asyncio.run(_joined(settings))
        assert asyncio.run(copies(servers.url, "KV_nanoiot_clients")) == (3, set(NATS))


def _local(argument: str, server: str, routes: dict[str, int], monitor: int, store: Path) -> str:
    """One option of a NATS server's command, off the compose network."""
    option, _, value = argument.partition("=")
    if option == "--store_dir":
        return f"{option}={store}"
    if option == "--http_port":
        return f"{option}={monitor}"
    if option == "--cluster":
        return f"{option}=nats://127.0.0.1:{routes[server]}"
    if option == "--routes":
        hosts = [urlsplit(url).hostname or "" for url in value.split(",")]
        return f"{option}=" + ",".join(f"nats://127.0.0.1:{routes[host]}" for host in hosts)
    return argument


def _healthz(port: int) -> int:
    """What the health check gets (asked again while JetStream catches up, within WAIT)."""
    url, status = f"http://127.0.0.1:{port}/healthz", 0
    for _ in range(int(WAIT / 0.1)):
        try:
            with urllib.request.urlopen(url, timeout=WAIT) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            status = error.code
        threading.Event().wait(0.1)  # polled: the server has no event to wait on
    return status


async def _joined(settings: Settings) -> None:
    link = await ClusterLink.connect(settings)
    try:
        await link.key_value("clients")
    finally:
        await link.close()


def test_only_haproxy_is_trusted_and_only_it_publishes_mqtt(
    model: dict[str, Any], tmp_path: Path
) -> None:
    services = model["services"]
    haproxy = services["haproxy"]
    address = haproxy["networks"]["cluster"]["ipv4_address"]
    subnet = ipaddress.ip_network(model["networks"]["cluster"]["ipam"]["config"][0]["subnet"])
    assert ipaddress.ip_address(address) in subnet
    for node in NODES:
        assert node_settings(model, node, tmp_path).proxy_protocol_trusted == [address]
        published = [port["target"] for port in services[node].get("ports", [])]
        assert 8883 not in published, node
    assert [port["published"] for port in haproxy["ports"]] == ["8883"]
    (mount,) = haproxy["volumes"]
    assert Path(mount["source"]) == HAPROXY_CFG
    assert mount["read_only"] is True


def test_haproxy_config_sends_proxy_v2_to_each_node_port(
    model: dict[str, Any], tmp_path: Path
) -> None:
    text = HAPROXY_CFG.read_text()
    servers = re.findall(r"^\s+server (\S+) (\S+):(\d+)", text, re.MULTILINE)
    assert [name for name, _, _ in servers] == list(NODES)
    for name, host, port in servers:
        assert host == name  # the compose service name, resolved on the network
        assert int(port) == node_settings(model, name, tmp_path).mqtt_ssl_bind_port
    assert re.search(r"^\s+mode tcp$", text, re.MULTILINE)
    assert re.search(r"^\s+default-server send-proxy-v2 ", text, re.MULTILINE)


def haproxy_check(config: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        if os.environ.get("CI"):
            pytest.fail("haproxy is not installed (CI is set)", pytrace=False)
        pytest.skip("haproxy is not installed (apt-get install haproxy; .ci/run does)")
    return subprocess.run(
        [binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30, check=False
    )


def test_haproxy_accepts_its_config() -> None:
    result = haproxy_check(HAPROXY_CFG)
    assert result.returncode == 0, result.stderr
    assert "ALERT" not in result.stderr


@pytest.mark.parametrize(
    ("good", "bad"),
    [("send-proxy-v2 check", "send-proxy-v3 check"), ("balance leastconn", "balance fewest")],
)
def test_haproxy_check_can_fail(tmp_path: Path, good: str, bad: str) -> None:
    broken = tmp_path / "haproxy.cfg"
    text = HAPROXY_CFG.read_text()
    assert text.count(good) == 1
    broken.write_text(text.replace(good, bad))
    assert haproxy_check(broken).returncode != 0
