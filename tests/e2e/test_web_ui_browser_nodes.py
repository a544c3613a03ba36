"""The Nodes page in a real browser: the members of a cluster (or the one node), each Live or
Fenced, and on a device's page the member it is connected to. Two nodes share the machine's
NATS and a PostgreSQL database; the device is a real paho client over mutual TLS.
"""

import asyncio
import re
import socket
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import (
    Locator,
    Page,
    expect,
)

from storage.migrate import upgrade
from tests.cluster.proxy import nats_proxy
from tests.e2e.browser import (  # noqa: F401 - fixtures, found by their names
    DEVICE,
    browser_fixture,
    device_keys_fixture,
    keys_fixture,
    node_fixture,
    page_fixture,
    playwright_fixture,
    shot,
    sign_in,
)
from tests.e2e.harness import WAIT, BrokerThread, mqtt_client
from tests.e2e.interop import DeviceKeys, Keys, provision_pem, running_broker
from tests.natsserver import NATS_URL, shared_cluster
from tests.storage.pg import fresh_database

T = TypeVar("T")


def test_nodes_page_and_where_a_device_is_connected_on_a_single_node(
    page: Page, node: BrokerThread, device_keys: DeviceKeys
) -> None:
    provision_pem(node, device_keys)
    client = mqtt_client(node.port, node.server_cert, device_keys.nopass, client_id=DEVICE)
    try:
        assert client.wait_connack() == 0
        page.goto(f"{node.http_url}/ui/nodes")
        sign_in(page, node, node.admin_token)
        expect(page.get_by_role("heading", name="Nodes")).to_be_visible()
        expect(page.locator("#mode")).to_contain_text("Single node")
        name = socket.gethostname().split(".")[0]  # node_name's default
        rows = page.locator("#nodes tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(f"{name} (this node)")
        shot(page, "20-nodes-single")

        page.get_by_role("link", name="Devices", exact=True).first.click()
        expect(page.get_by_role("row", name=DEVICE)).to_contain_text(f"Connected on {name}")
        page.get_by_role("link", name=DEVICE).click()
        expect(page.locator("#connected-on")).to_have_text(f"{name} (client id {DEVICE})")
    finally:
        client.close()


@contextmanager
def apart(manager: AbstractContextManager[T]) -> Iterator[T]:
    """``manager`` entered and left in a thread of its own: they run ``asyncio.run``, which
    Playwright's event loop in this thread forbids."""
    with ThreadPoolExecutor(1) as pool:
        value = pool.submit(manager.__enter__).result()
        try:
            yield value
        finally:
            pool.submit(manager.__exit__, None, None, None).result()


def apart_run(coroutine: Coroutine[Any, Any, T]) -> T:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def text_of(row: Locator) -> str:
    """A table row's text, one space between cells."""
    return " ".join((row.text_content() or "").split())


def test_nodes_page_and_where_a_device_is_connected_in_a_cluster(
    page: Page, keys: Keys, device_keys: DeviceKeys, tmp_path: Path
) -> None:
    """Two nodes on the machine's NATS and one PostgreSQL database; the device connects to
    node b, and node a's web UI shows both nodes and the device on b."""
    with apart(shared_cluster()) as cluster_name, apart(fresh_database()) as database:
        apart_run(upgrade(database))
        common = {
            "nats_url": NATS_URL, "cluster_name": cluster_name, "database_url": database,
            # Not shorter: a member whose heartbeat write waits two intervals fences itself
            # off, and both nodes share this process with the browser's driver.
            "cluster_heartbeat_interval": 1.0,
        }  # fmt: skip
        with (
            running_broker(keys, tmp_path / "data", node_name="a", **common) as a,
            running_broker(keys, tmp_path / "data", node_name="b", **common) as b,
        ):
            provision_pem(a, device_keys)
            client = mqtt_client(b.port, b.server_cert, device_keys.nopass, client_id=DEVICE)
            try:
                assert client.wait_connack() == 0
                page.goto(f"{a.http_url}/ui/nodes")
                sign_in(page, a, a.admin_token)
                expect(page.locator("#mode")).to_contain_text(f"Cluster {cluster_name}: 2 live")
                rows = page.locator("#nodes tbody tr")
                expect(rows.nth(0)).to_contain_text("a (this node)")
                # b's figures come with its heartbeats (every second): reload until one has.
                deadline = time.monotonic() + WAIT
                while not re.fullmatch(r"b Live \S+ pid \d+ 1 .*", text_of(rows.nth(1))):
                    assert time.monotonic() < deadline, text_of(rows.nth(1))
                    page.reload()
                shot(page, "21-nodes-cluster")

                page.get_by_role("link", name="Devices", exact=True).first.click()
                expect(page.get_by_role("row", name=DEVICE)).to_contain_text("Connected on b")
                page.get_by_role("link", name=DEVICE).click()
                expect(page.locator("#connected-on")).to_have_text(f"b (client id {DEVICE})")
                shot(page, "22-device-on-node-b")
            finally:
                client.close()


def reload_until(page: Page, row: Locator, pattern: str, within: float) -> None:
    """Reload ``page`` until ``row``'s text matches ``pattern``: the members' entries change
    with their heartbeats, and a page shows them as of its load."""
    deadline = time.monotonic() + within
    while not re.fullmatch(pattern, text_of(row)):
        assert time.monotonic() < deadline, text_of(row)
        page.reload()


# While cut, the proxy closes each of b's reconnection attempts at once, and nats-py drops
# that attempt's stream without closing it (ResourceWarning as it is collected).
@pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning")
def test_a_node_fenced_off_shows_as_fenced_on_its_nodes_page(
    page: Page, keys: Keys, tmp_path: Path
) -> None:
    """Node b reaches NATS through a proxy the test cuts: b fences itself off (no heartbeat
    written for two intervals) and its own Nodes page shows it fenced, though cut off it no
    longer sees its own entry in the members bucket; NATS back, b comes back into the cluster
    and shows as live again."""
    with (
        apart(shared_cluster()) as cluster_name,
        apart(fresh_database()) as database,
        nats_proxy() as proxy,
    ):
        apart_run(upgrade(database))
        common = {
            "cluster_name": cluster_name, "database_url": database,
            "cluster_heartbeat_interval": 1.0,  # as in the test above
        }  # fmt: skip
        with (
            running_broker(keys, tmp_path / "data", node_name="a", nats_url=NATS_URL, **common),
            running_broker(
                keys, tmp_path / "data", node_name="b", nats_url=proxy.url, **common
            ) as b,
        ):
            page.goto(f"{b.http_url}/ui/nodes")
            sign_in(page, b, b.admin_token)
            expect(page.locator("#mode")).to_contain_text(f"Cluster {cluster_name}: 2 live")
            rows = page.locator("#nodes tbody tr")
            expect(rows.nth(1)).to_contain_text("b (this node) Live")
            expect(page.locator("#fenced-note")).to_have_count(0)

            proxy.cut()
            # Fenced two intervals after its last heartbeat written; its own entry, unseen
            # since, leaves what it reads of the bucket one interval later.
            reload_until(page, rows.nth(1), r"b \(this node\) Fenced .*", 3 * WAIT)
            expect(page.locator("#fenced-note")).to_be_visible()
            shot(page, "23-node-fenced")

            proxy.restore()
            # Back once a survivor (a) settled its ended run: seconds on an idle machine.
            reload_until(page, rows.nth(1), r"b \(this node\) Live .*", 6 * WAIT)
            expect(page.locator("#fenced-note")).to_have_count(0)
