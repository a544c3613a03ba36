"""The product text's provisioning step, done in a real browser against a running node.

"Go to Web UI -> Devices -> Your Device -> Device Credentials. Select X.509 Certificate device
credentials, insert the contents of pub.pem and click save." Headless Chromium (Debian's, driven
by Playwright) signs in with the admin token, adds a device, pastes the ``.pub.pem`` that the
shipped ``client.keygen.sh`` wrote, and saves; then a real paho client connects with that
certificate over mutual TLS and gets CONNACK 0. A screenshot of every page is kept in
``tests/artifacts/web-ui/`` (git-ignored) for a person to look at.
"""

import asyncio
import os
import re
import socket
import time
from collections.abc import Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Playwright,
    Response,
    Route,
    expect,
    sync_playwright,
)

from auth.certificate import parse_credential
from storage.migrate import upgrade
from tests.certgen import issue, revocation_list
from tests.cluster.proxy import nats_proxy
from tests.e2e.harness import WAIT, BrokerThread, mqtt_client
from tests.e2e.interop import DeviceKeys, Keys, make_keys, provision_pem, running_broker
from tests.natsserver import NATS_URL, shared_cluster
from tests.storage.pg import fresh_database

DEVICE = "greenhouse-7"
T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "web-ui"
TIMEOUT_MS = WAIT * 1000


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("web-ui-keys"))


@pytest.fixture(scope="module")
def device_keys(keys: Keys) -> DeviceKeys:
    return keys.device(DEVICE)


@pytest.fixture
def node(keys: Keys, tmp_path: Path) -> Iterator[BrokerThread]:
    with running_broker(keys, tmp_path / "data") as broker:
        yield broker


def require_chromium(chromium: Path, environ: Mapping[str, str]) -> None:
    """Chromium missing: a skip on a developer's machine, as for the other real peers, but a
    failure under CI (``CI`` set; ``.ci/run`` sets it and installs Chromium), where this flow
    must be tested."""
    if chromium.exists():
        return
    message = f"{chromium} is missing: apt-get install chromium (.ci/run does)"
    if environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so the browser tests must run", pytrace=False)
    pytest.skip(f"{message} (set CI=1 to make this a failure)")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    require_chromium(CHROMIUM, os.environ)
    with sync_playwright() as started:
        yield started


@pytest.mark.parametrize(
    ("ci", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)]
)
def test_missing_chromium_skips_locally_and_fails_under_ci(
    tmp_path: Path, ci: str, outcome: type[BaseException]
) -> None:
    with pytest.raises(outcome, match="apt-get install chromium"):
        require_chromium(tmp_path / "no-chromium", {"CI": ci})
    require_chromium(Path(__file__), {"CI": ci})  # present: nothing happens


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        # CSP violations and script errors; a page answered 4xx on purpose (a refused form)
        # is logged as "Failed to load resource" too, so failed loads are judged below.
        if message.type in ("error", "warning") and "Failed to load resource" not in message.text:
            problems.append(message.text)

    def loaded(response: Response) -> None:
        if response.request.resource_type != "document" and response.status >= 400:
            problems.append(f"{response.status} for {response.url}")

    opened.on("console", console)
    opened.on("response", loaded)
    opened.on("pageerror", lambda error: problems.append(str(error)))
    try:
        yield opened
        assert problems == [], f"the browser reported problems: {problems}"
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, node: BrokerThread, token: str) -> None:
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_wrong_token_on_the_sign_in_page_shows_an_error(page: Page, node: BrokerThread) -> None:
    page.goto(f"{node.http_url}/ui/devices")
    expect(page).to_have_url(f"{node.http_url}/ui/login?next=/ui/devices")
    shot(page, "01-sign-in")
    sign_in(page, node, "not-the-admin-token")
    expect(page.get_by_role("alert")).to_have_text("The admin token is not valid.")
    expect(page).to_have_url(f"{node.http_url}/ui/login")
    shot(page, "02-sign-in-wrong-token")
    page.goto(f"{node.http_url}/ui/devices")
    expect(page.get_by_label("Admin token")).to_be_visible()  # still signed out


def test_x509_credentials_saved_in_the_browser_let_the_device_connect(
    page: Page, node: BrokerThread, device_keys: DeviceKeys
) -> None:
    page.goto(node.http_url)
    sign_in(page, node, node.admin_token)
    expect(page.get_by_role("heading", name="Devices", exact=True)).to_be_visible()
    shot(page, "03-devices-empty")

    page.get_by_role("link", name="Add device").click()
    page.get_by_label("Name", exact=True).fill(DEVICE)
    page.get_by_label("Label").fill("North greenhouse, bench 7")
    shot(page, "04-add-device")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.get_by_role("heading", name=DEVICE)).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Device created.")

    # Devices -> Your Device -> Device Credentials -> X.509 Certificate -> paste -> Save.
    page.get_by_role("link", name="Device Credentials").click()
    credentials = page.locator("#credentials")
    credentials.get_by_label("Credentials type").select_option(label="X.509 Certificate")
    credentials.get_by_label("Certificate (PEM)").fill(device_keys.pub.read_text())
    shot(page, "05-device-credentials-form")
    credentials.get_by_role("button", name="Save").click()

    expect(page.get_by_role("status")).to_have_text("Device credentials saved.")
    expected = parse_credential(device_keys.pub.read_bytes())
    fingerprint = page.locator("#fingerprint")
    expect(fingerprint).to_have_attribute("data-copy", f"sha256:{expected.spki_sha256}")
    expect(fingerprint).to_have_text(f"sha256:{expected.spki_sha256}")
    expect(page.locator("#current-credential")).to_contain_text(f"CN={DEVICE}")
    shot(page, "06-device-credentials-saved")

    client = mqtt_client(node.port, node.server_cert, device_keys.nopass)
    try:
        assert client.wait_connack() == 0
        auth_events_written(node)
        page.reload()
        expect(page.locator(".pills").first).to_contain_text("Connected")
        events = page.get_by_role("region", name="Recent auth events")
        expect(events.get_by_role("row")).to_have_count(2)  # header + the allowed connect
        expect(events).to_contain_text("Allowed")
        shot(page, "07-device-connected")

        page.get_by_role("link", name="Devices", exact=True).first.click()
        row = page.get_by_role("row", name=DEVICE)
        expect(row).to_contain_text("Connected")
        expect(row).to_contain_text("Enabled")
        shot(page, "08-devices-list")
        page.set_viewport_size({"width": 390, "height": 844})
        shot(page, "09-devices-list-narrow")
        page.set_viewport_size({"width": 1280, "height": 860})
    finally:
        client.close()


def test_a_name_that_would_list_as_another_is_refused_in_the_browser(
    page: Page, node: BrokerThread
) -> None:
    """A right-to-left override makes 'invoice<U+202E>gpj.exe' show as 'invoiceexe.jpg':
    refused inline, as a control character is, and no device stored."""
    page.goto(node.http_url)
    sign_in(page, node, node.admin_token)
    page.get_by_role("link", name="Add device").click()
    page.get_by_label("Name", exact=True).fill("invoice\u202egpj.exe")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text(
        "must not contain invisible formatting characters (U+202E"
    )
    assert node.call(node.running.store.list_devices()).total == 0


def test_refused_credentials_trusted_cas_and_delete(
    page: Page, node: BrokerThread, device_keys: DeviceKeys, tmp_path: Path
) -> None:
    provision_pem(node, replace(device_keys, name="holder"))  # the key belongs to "holder"
    page.goto(f"{node.http_url}/ui/login")
    sign_in(page, node, node.admin_token)
    page.get_by_role("link", name="Add device").click()
    page.get_by_label("Name", exact=True).fill("second")
    page.get_by_role("button", name="Add", exact=True).click()
    credentials = page.locator("#credentials")
    credentials.get_by_label("Credentials type").select_option(label="X.509 Certificate")
    pem = device_keys.pub.read_text()
    credentials.get_by_label("Certificate (PEM)").fill(pem)
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        credentials.get_by_role("button", name="Save").click()
    assert answer.value.status == 409
    expect(credentials.get_by_role("alert")).to_contain_text(
        "Device credentials are already assigned to another device!"
    )
    expect(credentials.get_by_label("Certificate (PEM)")).to_have_value(pem.strip())
    shot(page, "10-device-credentials-duplicate")

    authority = issue("Greenhouse Device CA", ca=True)
    node.call(
        node.running.store.add_trusted_ca(
            "greenhouses", parse_credential(authority.cert_pem), cn_regex=r"^gh-(.*)$"
        )
    )
    page.get_by_role("link", name="Trusted CAs").click()
    expect(page.get_by_role("heading", name="Trusted CAs", exact=True)).to_be_visible()
    crl = tmp_path / "greenhouses.crl"
    crl.write_bytes(revocation_list(authority, 4321).public_bytes(Encoding.DER))
    page.get_by_label("CRL file").set_input_files(crl)
    page.get_by_role("button", name="Upload CRL").click()
    expect(page.get_by_role("status")).to_have_text("Certificate revocation list saved.")
    expect(page.get_by_role("region", name="greenhouses")).to_contain_text("1 revoked")
    page.get_by_role("link", name="Add trusted CA").click()
    shot(page, "11-trusted-cas")

    page.get_by_role("link", name="Devices", exact=True).first.click()
    page.get_by_role("link", name="second").click()
    page.get_by_role("link", name="Delete").click()
    shot(page, "12-delete-device-confirm")
    page.get_by_role("button", name="Delete device").click()
    expect(page.get_by_role("status")).to_have_text("Device deleted.")
    expect(page.get_by_role("row", name="second")).to_have_count(0)


def auth_events_written(node: BrokerThread) -> None:
    """The broker stores auth events in the background, after CONNACK: wait until what it has
    queued is written (the queue's join), so the reloaded page can show it."""
    node.call(node.running.auth_log.flushed())


def test_api_docs_render_offline_under_their_policy(page: Page, node: BrokerThread) -> None:
    """Swagger UI comes from the node itself: with every other host unreachable the page
    renders, and the ``page`` fixture fails the test on any CSP violation or script error."""
    outside: list[str] = []

    def offline(route: Route) -> None:
        if route.request.url.startswith(node.http_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    page.goto(f"{node.http_url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("NanoIoT admin API")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    shot(page, "api-docs")
    assert outside == []


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
