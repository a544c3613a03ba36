"""The product text's provisioning step, done in a real browser against a running node.

"Go to Web UI -> Devices -> Your Device -> Device Credentials. Select X.509 Certificate device
credentials, insert the contents of pub.pem and click save." Headless Chromium (Debian's, driven
by Playwright) signs in with the admin token, adds a device, pastes the ``.pub.pem`` that the
shipped ``client.keygen.sh`` wrote, and saves; then a real paho client connects with that
certificate over mutual TLS and gets CONNACK 0. A screenshot of every page is kept in
``tests/artifacts/web-ui/`` (git-ignored) for a person to look at.
"""

from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from playwright.sync_api import (
    Page,
    Route,
    expect,
)

from auth.certificate import parse_credential
from tests.certgen import issue, revocation_list
from tests.e2e.browser import (  # noqa: F401 - fixtures, found by their names
    DEVICE,
    browser_fixture,
    device_keys_fixture,
    keys_fixture,
    node_fixture,
    page_fixture,
    playwright_fixture,
    require_chromium,
    shot,
    sign_in,
)
from tests.e2e.harness import BrokerThread, mqtt_client
from tests.e2e.interop import DeviceKeys, provision_pem


@pytest.mark.parametrize(
    ("ci", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)]
)
def test_missing_chromium_skips_locally_and_fails_under_ci(
    tmp_path: Path, ci: str, outcome: type[BaseException]
) -> None:
    with pytest.raises(outcome, match="apt-get install chromium"):
        require_chromium(tmp_path / "no-chromium", {"CI": ci})
    require_chromium(Path(__file__), {"CI": ci})  # present: nothing happens


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


def test_an_address_naming_the_add_device_card_opens_it(page: Page, node: BrokerThread) -> None:
    """A click on "Add device" before the page's script ran only moves to "#add-device" (a
    CI run under load then found the card closed and its Name field hidden); the address
    alone, as from a bookmark, opens the card."""
    page.goto(node.http_url)
    sign_in(page, node, node.admin_token)
    page.goto(f"{node.http_url}/ui/devices#add-device")
    expect(page.get_by_label("Name", exact=True)).to_be_visible()
    page.goto(f"{node.http_url}/ui/devices")
    expect(page.get_by_label("Name", exact=True)).to_be_hidden()
    page.evaluate("window.location.hash = 'add-device'")
    expect(page.get_by_label("Name", exact=True)).to_be_visible()


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
