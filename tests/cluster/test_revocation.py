"""Revocation across a cluster: a device's X.509 credential revoked through the admin API of
node B closes the device's connection on node A within a second (the change feed in the
shared PostgreSQL, with the change announced on NATS so A applies it at once)."""

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster.nodes import ADMIN_TOKEN, cluster
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow


def test_revoke_through_node_b_kicks_the_device_on_node_a_within_a_second(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        device_id = json.loads(nodes.cli("device", "show", "sensor", "--json"))["id"]
        nodes.start("a")
        b = nodes.start("b")
        device = nodes.connect("a", sensor, client_id="sensor")
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=b.http_url + "/api/v1", headers=headers, timeout=WAIT) as api:
            listed = api.get(f"/devices/{device_id}/credentials")
            listed.raise_for_status()
            (credential,) = listed.json()
            started = time.monotonic()
            api.post(f"/credentials/{credential['id']}/revoke").raise_for_status()
            assert device.disconnected.wait(WAIT)
            elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"the device on node A was closed after {elapsed:.2f} s"
        nodes.nodes["a"].log.wait_for(r"disconnecting .*sensor.*revoked")
