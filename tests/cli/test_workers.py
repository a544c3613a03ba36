"""``nanoiot serve --workers N`` as a real process: N brokers on one port, each on NATS, a
killed worker restarted, devices reconnecting to a live worker, SIGHUP forwarded, SIGTERM
stopping everything. Real paho clients over mutual TLS; waits are on log lines and events,
each with a bound."""

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker.cluster.link import ClusterLink
from nanoiot.settings import Settings
from tests.admin.web.conftest import csrf_of
from tests.cli.conftest import NANOIOT, Cli
from tests.e2e.harness import Client, mqtt_client
from tests.natsserver import NATS_URL, shared_cluster
from tests.output import Output
from tests.serve_process import WAIT, provision_device, serving

pytestmark = pytest.mark.slow
ADMIN_TOKEN = "workers-test-admin-token-0123456789"


@pytest.fixture
def cluster_env(cli_env: dict[str, str]) -> Iterator[dict[str, str]]:
    with shared_cluster() as cluster:
        yield cli_env | {
            "MQTT_SSL_BIND_ADDRESS": "127.0.0.1",
            "MQTT_SSL_BIND_PORT": "0",
            "NANOIOT_HTTP_PORT": "0",
            "NANOIOT_NATS_URL": NATS_URL,
            "NANOIOT_CLUSTER_NAME": cluster,
            "NANOIOT_NODE_NAME": "host-a",
            "NANOIOT_ADMIN_TOKEN": ADMIN_TOKEN,
            # Which worker took a connection is read from its "connected" line, which a
            # device writes a few times a minute by default.
            "NANOIOT_AUTH_LOG_REPEATS": "1000",
        }


def signed_in_page(stdout: list[str], path: str) -> str:
    """A web UI page of the supervisor's admin server, signed in with the admin token."""
    http = re.search(r"admin API and web UI: (http://\S+)/ui", "".join(stdout))
    assert http is not None, stdout
    with httpx.Client(base_url=http.group(1), timeout=WAIT) as browser:
        signed = browser.post(
            "/ui/login",
            data={"csrf_token": csrf_of(browser.get("/ui/login").text), "token": ADMIN_TOKEN},
        )
        assert signed.status_code == 303, signed.text
        page = browser.get(path)
        assert page.status_code == 200, page.text
        return page.text


def supervisor_metrics(stdout: list[str], holds: str) -> str:
    """The supervisor's /metrics once ``holds`` is in them (its view of the members bucket
    follows the workers' entries by a few milliseconds)."""
    http = re.search(r"admin API and web UI: (http://\S+)/ui", "".join(stdout))
    assert http is not None, stdout
    deadline = time.monotonic() + WAIT
    while True:
        text = httpx.get(
            http.group(1) + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=WAIT,
        ).text  # fmt: skip
        if holds in text or time.monotonic() > deadline:
            return text


def test_more_than_one_worker_without_nats_is_refused_in_one_line(nanoiot: Cli) -> None:
    result = nanoiot("serve", "--workers", "3", ok=False)
    assert result.returncode == 1
    assert result.stderr == (
        "error: workers 3 needs nats_url: a message published on one worker must reach "
        "subscribers on the others, which goes through NATS (or run 1 worker)\n"
    )
    bad = nanoiot("serve", "--workers", "lots", ok=False)
    assert bad.returncode == 2
    assert "'lots' is not a number from 1 to 256 or auto" in bad.stderr


async def members(env: dict[str, str], expect: int) -> list[dict[str, object]]:
    """The cluster's members as they answer a NATS ping."""
    settings = Settings(
        nats_url=NATS_URL, cluster_name=env["NANOIOT_CLUSTER_NAME"], node_name="test"
    )
    link = await ClusterLink.connect(settings)
    try:
        return await link.ping_members(expect=expect, within=WAIT)
    finally:
        await link.close()


def connect_device(port: int, workdir: Path, certfile: Path, output: Output) -> tuple[Client, str]:
    """A device connected over mutual TLS, and the worker ("w1", "w2") that took it."""
    mark = len(output.lines)
    device = mqtt_client(port, workdir / "data/certs/mqttserver.pub.pem", certfile)
    assert device.wait_connack() == 0
    accepted = output.wait_for(r" (w\d) nanoiot\.auth: connected device 'thermo'", after=mark)
    return device, accepted.group(1)


def test_workers_share_the_port_restart_and_stop(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    certfile = provision_device(cluster_env, tmp_path, "thermo")

    with serving(cluster_env, tmp_path, "--workers", "2") as (process, stdout, stderr):
        port = int(stdout[-1].rsplit(":", 1)[1])
        pids = re.search(r"workers: 2 \(pids (\d+), (\d+)\)", "".join(stdout))
        assert pids is not None
        workers = {"w1": int(pids.group(1)), "w2": int(pids.group(2))}

        # Each worker joined NATS and listens on the one port.
        found = asyncio.run(members(cluster_env, 3))
        by_member = {str(answer["member"]): answer for answer in found}
        assert set(by_member) == {"host-a", "host-a-w1", "host-a-w2"}
        assert {by_member[f"host-a-{w}"]["pid"] for w in workers} == set(workers.values())
        assert {by_member[f"host-a-{w}"]["mqtt_port"] for w in workers} == {port}
        # The supervisor's /metrics: both workers, from the members bucket.
        metrics = supervisor_metrics(stdout, "nanoiot_cluster_members 2.0")
        assert "nanoiot_cluster_members 2.0" in metrics
        for w in workers:
            assert f'nanoiot_cluster_member_connected_clients{{member="host-a-{w}"}}' in metrics
        nodes_page = signed_in_page(stdout, "/ui/nodes")
        assert "2 live members" in nodes_page
        for w in workers:
            assert f'host-a-{w} <span class="muted">(this node)</span>' in nodes_page

        # The kernel spreads connections over both workers.
        seen: set[str] = set()
        for _ in range(30):
            client, worker = connect_device(port, tmp_path, certfile, stderr)
            client.close()
            seen.add(worker)
            if seen == {"w1", "w2"}:
                break
        assert seen == {"w1", "w2"}

        # SIGKILL the worker a device is on: the device reconnects to a live worker, and
        # the dead one is restarted under a new pid.
        device, worker = connect_device(port, tmp_path, certfile, stderr)
        mark = len(stderr.lines)
        os.kill(workers[worker], signal.SIGKILL)
        assert device.disconnected.wait(WAIT)
        assert device.wait_connack() == 0  # paho's own reconnect, to a worker still there
        index = worker[1:]
        stderr.wait_for(
            rf"worker {index} \(pid \d+\) exited \(signal SIGKILL\); restarting", after=mark
        )
        restarted = stderr.wait_for(rf"worker {index} \(pid (\d+)\) is listening", after=mark)
        new_pid = int(restarted.group(1))
        assert new_pid != workers[worker]
        workers[worker] = new_pid
        device.close()
        found = asyncio.run(members(cluster_env, 3))
        assert {answer["pid"] for answer in found} >= set(workers.values())

        # SIGHUP reaches every worker (server certificate reload).
        mark = len(stderr.lines)
        process.send_signal(signal.SIGHUP)
        for name in workers:
            stderr.wait_for(
                rf" {name} broker\.tls_reload: server certificate reloaded \(SIGHUP\)", after=mark
            )

        # SIGTERM stops the workers and the supervisor, which exits 0.
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
    for pid in workers.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "Traceback" not in "".join(stderr.lines)


def test_a_worker_that_cannot_start_stops_the_node_with_its_reason(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    """A topic rule only the brokers read is wrong: the workers report it, the node stops
    them all and exits 1 with that one line."""
    env = cluster_env | {
        "NANOIOT_ACL_RULES": '[{"who": "robot", "action": "publish", "topic": "x"}]'
    }
    result = subprocess.run(
        [NANOIOT, "serve", "--workers", "2"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"error: worker [12]: acl_rules\[0\].*robot.*", last), result.stderr
    assert "Traceback" not in result.stderr


def test_one_worker_with_nats_is_a_single_process_member(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    with serving(cluster_env, tmp_path) as (_process, stdout, _stderr):
        port = int(stdout[-1].rsplit(":", 1)[1])
        (answer,) = asyncio.run(members(cluster_env, 1))
        assert (answer["member"], answer["mqtt_port"]) == ("host-a", port)
        assert "workers:" not in "".join(stdout)
