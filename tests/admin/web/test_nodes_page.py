"""The Nodes page and where devices are connected, over the admin's ``ClusterView``: no
broker here (``nanoiot api``), a single node, a cluster's members. The views with a real
broker and real NATS are driven in a browser in tests/e2e/test_web_ui_browser.py."""

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import httpx

from admin.context import AdminContext
from nanoiot.members import Figures, Member
from storage.sql import SqlCredentialStore


@dataclass
class View:
    cluster: str
    member: str
    live: list[Member]
    where: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def members(self) -> list[Member]:
        return self.live

    async def connections(self, device_ids: Collection[str]) -> Mapping[str, list[tuple[str, str]]]:
        return {d: pairs for d, pairs in self.where.items() if d in device_ids}


def member(name: str, clients: int, received: int, *, fenced: bool = False) -> Member:
    figures = Figures(clients, 1, received, 0, 0, 0)
    return Member(name, f"host-{name}", 100, 1.7e9, 2.0, figures, fenced=fenced)


def rows(html: str) -> list[str]:
    """Each table row's text, one space between cells."""
    found = re.findall(r"<tr>.*?</tr>", html, re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in found]


async def test_without_a_broker_the_page_says_where_nodes_are(ui: httpx.AsyncClient) -> None:
    page = await ui.get("/ui/nodes")
    assert page.status_code == 200
    assert "No broker runs in this process" in page.text
    assert 'aria-current="page">Nodes' in page.text


async def test_a_single_node_is_shown_as_such(ui: httpx.AsyncClient, context: AdminContext) -> None:
    context.cluster = View("", "solo", [member("solo", 3, 40)])
    page = (await ui.get("/ui/nodes")).text
    assert "Single node" in page
    assert "solo (this node) Live host-solo pid 100 3 1 40 0" in rows(page)[1]


async def test_a_cluster_lists_its_members_with_totals_and_where_devices_are(
    ui: httpx.AsyncClient, context: AdminContext, store: SqlCredentialStore
) -> None:
    here, there = await store.create_device("here"), await store.create_device("there")
    await store.create_device("nowhere")
    context.cluster = View(
        "plant", "a", [member("a", 1, 10), member("b", 2, 5)],
        {str(here.id): [("a", "c1")], str(there.id): [("a", "c2"), ("b", "c3")]},
    )  # fmt: skip
    page = (await ui.get("/ui/nodes")).text
    assert "Cluster <code>plant</code>: 2 live members" in page
    listed = rows(page)
    assert listed[1].startswith("a (this node) Live host-a")
    assert listed[2].startswith("b Live host-b")
    assert listed[3] == "All 3 2 15 0"

    devices = {r.split()[0]: r for r in rows((await ui.get("/ui/devices")).text)[1:]}
    assert "Connected on a" in devices["here"]
    assert "Connected on a, b" in devices["there"]
    assert "Offline" in devices["nowhere"]
    device = (await ui.get(f"/ui/devices/{there.id}")).text
    on = re.search(r'<dd id="connected-on">(.*?)</dd>', device, re.S)
    assert on is not None
    assert re.sub(r"<[^>]+>", "", on.group(1)) == "a (client id c2), b (client id c3)"
    alone = (await ui.get(f"/ui/devices/{(await store.create_device('x')).id}")).text
    assert "not connected" in alone


async def test_a_member_fenced_off_shows_as_fenced(
    ui: httpx.AsyncClient, context: AdminContext
) -> None:
    """A member cut off from NATS that fenced itself off says so in its entry
    (``Member.fenced``) until it is back: the page shows it, with what that means."""
    context.cluster = View("plant", "a", [member("a", 1, 10), member("b", 0, 5, fenced=True)])
    page = (await ui.get("/ui/nodes")).text
    listed = rows(page)
    assert listed[1].startswith("a (this node) Live host-a")
    assert listed[2].startswith("b Fenced host-b")
    assert 'id="fenced-note"' in page
    context.cluster = View("plant", "a", [member("a", 1, 10), member("b", 0, 5)])
    assert 'id="fenced-note"' not in (await ui.get("/ui/nodes")).text
