"""The Devices page: listing, search, paging, live status, last seen; and Add device."""

import re

import httpx

from auth.certificate import parse_credential
from auth.kinds import CredentialType
from storage.records import AuthOutcome
from storage.sql import SqlCredentialStore
from tests.admin.conftest import FakeBroker
from tests.admin.web.conftest import post_form
from tests.certgen import issue


def _row(html: str, name: str) -> str:
    for row in re.findall(r"<tr>.*?</tr>", html, re.S):
        if f">{name}</a>" in row:
            return str(row)
    raise AssertionError(f"no row for {name}")


async def test_devices_show_status_connection_and_last_seen(
    ui: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker
) -> None:
    online, _ = await store.create_device_with_credential(
        "online-sensor", x509=parse_credential(issue("online-sensor").cert_pem), label="roof"
    )
    await store.create_device("quiet-sensor")
    off = await store.create_device("switched-off")
    await store.set_device_enabled(off.id, False)
    fake_broker.connected = {str(online.id)}
    await store.record_auth_event(outcome=AuthOutcome.DENIED, reason="expired", device_id=online.id)
    await store.record_auth_event(
        outcome=AuthOutcome.ALLOWED, reason="allowed", device_id=online.id
    )
    page = (await ui.get("/ui/devices")).text
    assert "3 devices" in page
    online_row = _row(page, "online-sensor")
    assert "Connected" in online_row
    assert "Enabled" in online_row
    assert "roof" in online_row
    assert "just now" in online_row or " s ago" in online_row
    quiet_row = _row(page, "quiet-sensor")
    assert "Offline" in quiet_row
    assert "never" in quiet_row
    assert "Disabled" in _row(page, "switched-off")


async def test_search_by_name(ui: httpx.AsyncClient, store: SqlCredentialStore) -> None:
    for name in ("boiler-1", "boiler-2", "pump-1"):
        await store.create_device(name)
    page = (await ui.get("/ui/devices", params={"q": "BOIL"})).text
    assert "2 devices matching" in page
    assert ">boiler-1</a>" in page
    assert ">pump-1</a>" not in page
    none = (await ui.get("/ui/devices", params={"q": "zzz"})).text
    assert "No device name contains" in none


async def test_paging(ui: httpx.AsyncClient, store: SqlCredentialStore) -> None:
    for number in range(25):
        await store.create_device(f"dev-{number:02d}")
    first = (await ui.get("/ui/devices")).text
    assert "1–20 of 25" in first
    assert 'rel="next" href="/ui/devices?q=&amp;page=1"' in first
    assert 'rel="prev"' not in first
    second = (await ui.get("/ui/devices", params={"page": 1})).text
    assert "21–25 of 25" in second
    assert ">dev-24</a>" in second
    assert ">dev-00</a>" not in second
    assert 'rel="prev"' in second
    assert 'rel="next"' not in second


async def test_a_page_number_past_any_fleet_is_a_400_page(ui: httpx.AsyncClient) -> None:
    # Before: page * 20 overflowed the 64-bit SQL OFFSET, and the answer was a bare 500.
    for page in (10**26, 1_000_001):
        response = await ui.get("/ui/devices", params={"page": page})
        assert response.status_code == 400
        assert "page must be 0 to 1,000,000" in response.text
        assert response.headers["content-type"].startswith("text/html")
    assert (await ui.get("/ui/devices", params={"page": 1_000_000})).status_code == 200


async def test_add_device(
    ui: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker
) -> None:
    response = await post_form(
        ui, "/ui/devices", "/ui/devices", {"name": "kiln-3", "label": "Pottery"}
    )
    assert response.status_code == 303
    device = await store.get_device_by_name("kiln-3")
    assert device.label == "Pottery"
    assert response.headers["location"] == f"/ui/devices/{device.id}?done=created"
    assert fake_broker.changes == 1
    page = (await ui.get(response.headers["location"])).text
    assert "Device created." in page
    assert "No active credentials" in page


async def test_add_device_with_x509_credentials(
    ui: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    certificate = issue("kiln-4")
    response = await post_form(
        ui,
        "/ui/devices",
        "/ui/devices",
        {
            "name": "kiln-4",
            "with_credentials": "yes",
            "credentials_type": "X509_CERTIFICATE",
            "pem": certificate.cert_pem,
        },
    )
    assert response.status_code == 303
    device = await store.get_device_by_name("kiln-4")
    [credential] = await store.list_credentials(device.id)
    assert credential.spki_sha256 == parse_credential(certificate.cert_pem).spki_sha256


async def test_add_device_with_a_token(ui: httpx.AsyncClient, store: SqlCredentialStore) -> None:
    response = await post_form(
        ui,
        "/ui/devices",
        "/ui/devices",
        {
            "name": "meter",
            "with_credentials": "yes",
            "credentials_type": "ACCESS_TOKEN",
            "token": "meter-token-0123456789",
        },
    )
    # The page itself, not a redirect: the token is shown this once (the store keeps a hash).
    assert response.status_code == 200
    assert "meter-token-0123456789" in response.text
    assert "shown this once" in response.text
    [credential] = await store.list_credentials((await store.get_device_by_name("meter")).id)
    assert (credential.type, credential.token) == (CredentialType.ACCESS_TOKEN, None)
    match = await store.find_token("meter-token-0123456789")
    assert match is not None
    assert match.credential.id == credential.id
    page = await ui.get(f"/ui/devices/{match.device.id}")
    assert "meter-token-0123456789" not in page.text


async def test_a_taken_name_is_refused_inline_with_the_input_kept(
    ui: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    await store.create_device("kiln-5")
    response = await post_form(
        ui, "/ui/devices", "/ui/devices", {"name": "kiln-5", "label": "Second kiln"}
    )
    assert response.status_code == 409
    assert 'role="alert"' in response.text
    assert 'value="kiln-5"' in response.text
    assert 'value="Second kiln"' in response.text
    assert '<details class="card disclosure" id="add-device" open>' in response.text
    assert (await store.list_devices()).total == 1


async def test_a_bad_certificate_creates_no_device(
    ui: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    response = await post_form(
        ui,
        "/ui/devices",
        "/ui/devices",
        {
            "name": "kiln-6",
            "with_credentials": "yes",
            "credentials_type": "X509_CERTIFICATE",
            "pem": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        },
    )
    assert response.status_code == 400
    assert "Not saved." in response.text
    assert (await store.list_devices()).total == 0


async def test_an_empty_name_is_refused(ui: httpx.AsyncClient) -> None:
    response = await post_form(ui, "/ui/devices", "/ui/devices", {"name": "  "})
    assert response.status_code == 400
    assert "Enter a device name." in response.text


async def test_user_text_is_escaped(ui: httpx.AsyncClient, store: SqlCredentialStore) -> None:
    await store.create_device("plain", label="<script>alert(1)</script>")
    page = (await ui.get("/ui/devices")).text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_a_device_without_an_active_credential_is_not_shown_as_plain_enabled(
    ui: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    bare = await store.create_device("bare")
    certificate = issue("revoked-one")
    revoked, _ = await store.create_device_with_credential(
        "revoked-one", x509=parse_credential(certificate.cert_pem)
    )
    await store.revoke_x509(revoked.id, None)
    await store.create_device_with_credential("ready", x509=parse_credential(issue("r").cert_pem))
    page = (await ui.get("/ui/devices")).text
    for name in ("bare", "revoked-one"):
        row = _row(page, name)
        assert "No active credential" in row
        assert "Enabled" not in row
    assert "Enabled" in _row(page, "ready")
    assert "No active credential" not in _row(page, "ready")
    device_page = (await ui.get(f"/ui/devices/{bare.id}")).text
    assert "No active credential" in device_page.split("</h1>", 1)[1].split("</p>", 1)[0]
