"""One device's page: Device Credentials (X.509, token, MQTT basic), auth events, enable /
disable, delete with its confirmation step."""

import datetime as dt
from uuid import UUID

import httpx
import pytest

from auth.certificate import parse_credential
from auth.kinds import CredentialStatus, CredentialType
from storage.records import AuthOutcome, Device
from storage.sql import SqlCredentialStore
from tests.admin.conftest import FakeBroker
from tests.admin.web.conftest import post_form
from tests.certgen import issue


@pytest.fixture
async def device(store: SqlCredentialStore) -> Device:
    return await store.create_device("thermostat", label="Hall")


def _page(device_id: UUID) -> str:
    return f"/ui/devices/{device_id}"


async def save(ui: httpx.AsyncClient, device: Device, **fields: str) -> httpx.Response:
    return await post_form(ui, _page(device.id), f"{_page(device.id)}/credentials", fields)


async def test_saving_x509_shows_what_identifies_the_device(
    ui: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker, device: Device
) -> None:
    certificate = issue("thermostat")
    parsed = parse_credential(certificate.cert_pem)
    response = await save(ui, device, credentials_type="X509_CERTIFICATE", pem=certificate.cert_pem)
    assert response.status_code == 303
    assert response.headers["location"] == f"{_page(device.id)}?done=saved"
    assert fake_broker.changes == 1
    page = (await ui.get(response.headers["location"])).text
    assert "Device credentials saved." in page
    # One searchable form, as the CLI and the log print it: sha256: and the unbroken digits.
    assert f'data-copy="sha256:{parsed.spki_sha256}"' in page
    assert f'id="fingerprint">sha256:{parsed.spki_sha256}</code>' in page
    assert "Enabled" in page
    assert "CN=thermostat" in page  # subject and issuer (self-signed)
    assert parsed.credentials_id in page  # the reference system's credentialsId
    assert f"{parsed.not_before:%Y-%m-%d %H:%M:%S} UTC" in page
    assert f"{parsed.not_after:%Y-%m-%d %H:%M:%S} UTC" in page
    assert "EC P-256 (256 bits)" in page


async def test_saving_the_same_certificate_again_changes_nothing(
    ui: httpx.AsyncClient, store: SqlCredentialStore, device: Device
) -> None:
    pem = issue("thermostat").cert_pem
    await save(ui, device, credentials_type="X509_CERTIFICATE", pem=pem)
    again = await save(ui, device, credentials_type="X509_CERTIFICATE", pem=pem)
    assert again.headers["location"].endswith("?done=unchanged")
    assert len(await store.list_credentials(device.id)) == 1


async def test_switching_to_a_token_revokes_the_certificate(
    ui: httpx.AsyncClient, store: SqlCredentialStore, device: Device
) -> None:
    await save(ui, device, credentials_type="X509_CERTIFICATE", pem=issue("t").cert_pem)
    response = await save(ui, device, credentials_type="ACCESS_TOKEN", token="hall-token-12345")
    # The page itself, showing the new token this once (the store keeps only its hash).
    assert response.status_code == 200
    assert "hall-token-12345" in response.text
    statuses = {c.type: c.status for c in await store.list_credentials(device.id)}
    assert statuses == {
        CredentialType.X509_CERTIFICATE: CredentialStatus.REVOKED,
        CredentialType.ACCESS_TOKEN: CredentialStatus.ACTIVE,
    }
    page = (await ui.get(_page(device.id))).text
    assert "hall-token-12345" not in page
    assert "stored as a keyed hash" in page
    assert "Previous credentials" in page
    assert "Revoked" in page


async def test_switching_to_mqtt_basic_never_shows_the_password(
    ui: httpx.AsyncClient, store: SqlCredentialStore, device: Device
) -> None:
    response = await save(
        ui,
        device,
        credentials_type="MQTT_BASIC",
        client_id="hall-1",
        username="hall",
        password="s3cret-pass",
    )
    assert response.status_code == 303
    match = await store.check_basic("hall", "s3cret-pass", "hall-1")
    assert match is not None
    assert match.device.id == device.id
    page = (await ui.get(_page(device.id))).text
    assert "s3cret-pass" not in page
    assert "stored as an Argon2 hash" in page


async def test_a_pasted_private_key_is_refused_and_not_sent_back(
    ui: httpx.AsyncClient, store: SqlCredentialStore, device: Device
) -> None:
    key_pem = issue("thermostat").key_pem
    response = await save(ui, device, credentials_type="X509_CERTIFICATE", pem=key_pem)
    assert response.status_code == 400
    assert "private key" in response.text
    assert key_pem.splitlines()[1] not in response.text  # the key is not echoed
    assert await store.list_credentials(device.id) == []


async def test_an_expired_certificate_is_refused_with_the_input_kept(
    ui: httpx.AsyncClient, store: SqlCredentialStore, device: Device
) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    pem = issue("thermostat", not_before=past, not_after=past + dt.timedelta(days=1)).cert_pem
    response = await save(ui, device, credentials_type="X509_CERTIFICATE", pem=pem)
    assert response.status_code == 400
    assert "expired on" in response.text
    assert pem.splitlines()[1] in response.text  # kept in the textarea
    assert 'X509_CERTIFICATE" selected' in response.text
    assert await store.list_credentials(device.id) == []


async def test_a_key_of_another_device_is_a_conflict(
    ui: httpx.AsyncClient, store: SqlCredentialStore, device: Device
) -> None:
    certificate = issue("shared")
    await store.create_device_with_credential("owner", x509=parse_credential(certificate.cert_pem))
    response = await save(ui, device, credentials_type="X509_CERTIFICATE", pem=certificate.cert_pem)
    assert response.status_code == 409
    assert "Device credentials are already assigned to another device!" in response.text
    assert certificate.cert_pem.splitlines()[1] in response.text
    assert await store.list_credentials(device.id) == []


async def test_an_empty_certificate_field_says_what_to_paste(
    ui: httpx.AsyncClient, device: Device
) -> None:
    response = await save(ui, device, credentials_type="X509_CERTIFICATE", pem="")
    assert response.status_code == 400
    assert "contents of its .pub.pem file" in response.text


async def test_auth_events_are_listed_with_their_reasons(
    ui: httpx.AsyncClient, store: SqlCredentialStore, device: Device
) -> None:
    await store.record_auth_event(
        outcome=AuthOutcome.DENIED,
        reason="certificate expired",
        device_id=device.id,
        fingerprint="ab" * 32,
        remote_address="192.0.2.7",
    )
    await store.record_auth_event(outcome=AuthOutcome.ALLOWED, reason="ok", device_id=device.id)
    page = (await ui.get(_page(device.id))).text
    events = page.split("Recent auth events", 1)[1]
    assert events.index("Allowed") < events.index("Denied")  # newest first
    assert "certificate expired" in events
    assert "192.0.2.7" in events
    assert f"sha256:{'ab' * 32}</code>" in events  # whole, as in the log


async def test_disable_and_enable(
    ui: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker, device: Device
) -> None:
    action = f"{_page(device.id)}/enabled"
    off = await post_form(ui, _page(device.id), action, {"enabled": "no"})
    assert off.headers["location"].endswith("?done=disabled")
    assert not (await store.get_device(device.id)).enabled
    assert "Enable</button>" in (await ui.get(_page(device.id))).text
    on = await post_form(ui, _page(device.id), action, {"enabled": "yes"})
    assert on.headers["location"].endswith("?done=enabled")
    assert (await store.get_device(device.id)).enabled
    assert fake_broker.changes == 2


async def test_delete_asks_first_then_deletes(
    ui: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker, device: Device
) -> None:
    confirm = await ui.get(f"{_page(device.id)}/delete")
    assert confirm.status_code == 200
    assert "Delete device “thermostat”?" in confirm.text
    assert (await store.list_devices()).total == 1  # asking changes nothing
    response = await post_form(ui, f"{_page(device.id)}/delete", f"{_page(device.id)}/delete", {})
    assert response.headers["location"] == "/ui/devices?done=deleted"
    assert (await store.list_devices()).total == 0
    assert fake_broker.changes == 1
    gone = await ui.get(_page(device.id))
    assert gone.status_code == 404
    assert gone.headers["content-type"].startswith("text/html")


async def test_an_unknown_device_is_a_404_page(ui: httpx.AsyncClient) -> None:
    response = await ui.get("/ui/devices/01a21be1-6f5b-73de-bd92-1a81090e67a3")
    assert response.status_code == 404
    assert "Back to Devices" in response.text
    missing = await ui.get("/ui/no-such-page")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
